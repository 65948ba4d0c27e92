"""Rows of the fault table (docs/faults/): each fault-injection test records what it tried and what happened.

The table is written at the end of the test session when EMBEDRL_FAULTS_TABLE names a Markdown file
(`EMBEDRL_FAULTS_TABLE=docs/faults/resilience.md make test`), so a plain test run leaves the repo clean.
"""

from __future__ import annotations

ROWS: list[tuple[str, str, str]] = []


def record_fault(fault: str, tried: str, outcome: str) -> None:
    ROWS.append((fault, tried, outcome))


def markdown() -> str:
    lines = ["| fault | what was tried | what happened |", "|---|---|---|"]
    lines += [f"| {f} | {t} | {o} |" for f, t, o in sorted(ROWS)]
    return "\n".join(lines) + "\n"
