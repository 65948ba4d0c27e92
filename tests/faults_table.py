"""Rows of the fault tables (docs/faults/): each fault-injection test records what it tried and what happened.

Rows go to a table by name: `faults` (kills, full disk, NaN, outages) unless a test says `security`.
The tables are written at the end of the test session when EMBEDRL_FAULTS_DIR names a directory
(`EMBEDRL_FAULTS_DIR=docs/faults make test`), so a plain test run leaves the repo clean.
"""

from __future__ import annotations

from collections import defaultdict

TITLES = {"faults": "Faults injected by the tests and what happened",
          "security": "Security checks run by the tests and what happened"}
ROWS: dict[str, list[tuple[str, str, str]]] = defaultdict(list)


def record_fault(fault: str, tried: str, outcome: str, *, table: str = "faults") -> None:
    if table not in TITLES:
        raise ValueError(f"unknown fault table {table!r}; known: {', '.join(TITLES)}")
    ROWS[table].append((fault, tried, outcome))


def markdown(table: str, command: str) -> str:
    lines = [f"# {TITLES[table]}", "", f"Written by the tests: `{command}`.", "",
             "| fault | what was tried | what happened |", "|---|---|---|"]
    lines += [f"| {f} | {t} | {o} |".replace("\n", " ") for f, t, o in sorted(ROWS[table])]
    return "\n".join(lines) + "\n"
