"""The consistency filter of T-CoT synthesis: a judge drops pairs that are irrelevant or conflicting.

Every dropped pair is counted by reason and written to a quarantine JSONL file, one line per pair:
`{"id", "reason", "verdict", "record", "detail"}` (verdict is null when there is none).

A pair record is a mapping with these keys (the whole record is kept as is):
- `id` (required): unique id of the pair
- `query_text`: the query's text as shown to the judge (instruction and text)
- `query_tcot`, `pos_tcot`: the T-CoTs, as text or as parsed `TCoT`
- optional `query_modality`, `pos_modality` ("text" / "image" / "video" / "visdoc") and
  `query_num_frames`, `pos_num_frames`: let the T-CoT check fit each side's modality
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, is_dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any, Protocol

from embedrl.tcot.chat_teacher import TeacherError, TeacherHTTPError, Verdict
from embedrl.tcot.format import TCoT, TCoTFormatError, parse

log = logging.getLogger(__name__)

KEPT = "kept"
IRRELEVANT = "irrelevant"
CONFLICTING = "conflicting"
UNPARSEABLE = "unparseable_tcot"
JUDGE_ERROR = "judge_error"
DROP_REASONS: tuple[str, ...] = (IRRELEVANT, CONFLICTING, UNPARSEABLE, JUDGE_ERROR)

Record = Mapping[str, Any]


class Judge(Protocol):
    """Anything that judges a pair, e.g. `ChatTeacher`."""

    def judge(self, query_text: str, query_tcot: TCoT | str, target_tcot: TCoT | str) -> Verdict: ...


@dataclass(frozen=True)
class Dropped:
    """One quarantined pair."""

    id: Any
    reason: str
    verdict: dict[str, Any] | None
    record: Record
    detail: str = ""

    def to_json(self) -> str:
        line = {
            "id": self.id, "reason": self.reason, "verdict": self.verdict, "record": self.record,
            "detail": self.detail,
        }
        return json.dumps(line, ensure_ascii=False, default=_json_default)


@dataclass
class FilterResult:
    """Kept records, dropped pairs, and counts: total, kept and one entry per drop reason."""

    kept: list[Record] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def kept_share(self) -> float:
        total = self.counts.get("total", 0)
        return self.counts.get(KEPT, 0) / total if total else 0.0


class JudgeFailingError(RuntimeError):
    """The judge failed on too many pairs in a row: the endpoint, not the data, is at fault."""


def _json_default(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _side_tcot(record: Record, side: str) -> TCoT:
    """The parsed T-CoT of one side (`query` or `pos`); raises TCoTFormatError with the side named."""
    value = record.get(f"{side}_tcot")
    if isinstance(value, TCoT):
        return value
    if not isinstance(value, str) or not value.strip():
        raise TCoTFormatError(f"{side}_tcot is missing or empty")
    try:
        modality, num_frames = record.get(f"{side}_modality"), record.get(f"{side}_num_frames")
        return parse(value, modality=modality, num_frames=num_frames)
    except TCoTFormatError as exc:
        raise TCoTFormatError(f"{side}_tcot: {exc}") from None
    except ValueError as exc:  # the record's modality or frame count is wrong, not the T-CoT
        raise TCoTFormatError(f"{side}_tcot cannot be checked: {exc}") from None


def judge_pair(record: Record, judge: Judge) -> tuple[str, Verdict | None, str]:
    """Decide one pair: (reason, verdict, detail) where reason is `kept` or one of DROP_REASONS.

    Config errors of the endpoint (HTTP 401/403/404) propagate: they would fail every pair alike.
    """
    try:
        query_tcot, pos_tcot = _side_tcot(record, "query"), _side_tcot(record, "pos")
    except TCoTFormatError as exc:
        return UNPARSEABLE, None, str(exc)
    try:
        verdict = judge.judge(str(record.get("query_text", "")), query_tcot, pos_tcot)
    except TeacherHTTPError as exc:
        if exc.is_config_error:
            raise
        return JUDGE_ERROR, None, str(exc)
    except (TeacherError, ValueError) as exc:
        return JUDGE_ERROR, None, f"{type(exc).__name__}: {exc}"
    if not isinstance(verdict, Verdict):
        return JUDGE_ERROR, None, f"judge returned {type(verdict).__name__}, not a Verdict"
    if not verdict.relevant:
        return IRRELEVANT, verdict, verdict.reason
    if not verdict.consistent:
        return CONFLICTING, verdict, verdict.reason
    return KEPT, verdict, verdict.reason


def _chunks(items: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _decisions(
    pairs: Iterable[Record], judge: Judge, workers: int
) -> Iterator[tuple[Record, tuple[str, Verdict | None, str]]]:
    """Judge pairs in input order; with workers > 1 a bounded window of pairs is judged at once."""
    if workers <= 1:
        for record in pairs:
            yield record, judge_pair(record, judge)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
        for chunk in _chunks(pairs, workers * 4):
            yield from zip(chunk, pool.map(lambda r: judge_pair(r, judge), chunk), strict=True)


def _open_quarantine(path: str | os.PathLike[str] | None) -> IO[str] | None:
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8")


def filter_pairs(
    pairs: Iterable[Record],
    judge: Judge,
    *,
    quarantine_path: str | os.PathLike[str] | None = None,
    workers: int = 1,
    max_consecutive_errors: int = 50,
    log_every: int = 10_000,
) -> FilterResult:
    """Keep the pairs the judge finds relevant and consistent; count and quarantine the others.

    The quarantine file is written line by line (and flushed), so a run that stops half-way still
    accounts for every pair it dropped. `max_consecutive_errors` judge errors in a row abort the run
    with JudgeFailingError: at that point the judge, not the data, is broken.
    """
    result = FilterResult(counts={"total": 0, KEPT: 0, **dict.fromkeys(DROP_REASONS, 0)})
    counts: Counter[str] = Counter(result.counts)
    seen_ids: set[Any] = set()
    consecutive_errors = 0
    quarantine = _open_quarantine(quarantine_path)
    try:
        for record, (reason, verdict, detail) in _decisions(_checked(pairs, seen_ids), judge, workers):
            counts["total"] += 1
            counts[reason] += 1
            if reason == KEPT:
                result.kept.append(record)
            else:
                dropped = Dropped(
                    id=record["id"],
                    reason=reason,
                    verdict=verdict.to_dict() if verdict else None,
                    record=record,
                    detail=detail,
                )
                result.dropped.append(dropped)
                if quarantine is not None:
                    quarantine.write(dropped.to_json() + "\n")
                    quarantine.flush()
            consecutive_errors = consecutive_errors + 1 if reason == JUDGE_ERROR else 0
            if max_consecutive_errors and consecutive_errors >= max_consecutive_errors:
                raise JudgeFailingError(
                    f"the judge failed on {consecutive_errors} pairs in a row (last: {detail}); "
                    "check the judge endpoint and model before rerunning"
                )
            if log_every and counts["total"] % log_every == 0:
                log.info("consistency filter: %d pairs judged, %d kept", counts["total"], counts[KEPT])
    finally:
        if quarantine is not None:
            quarantine.close()
    result.counts = dict(counts)
    _log_summary(result, quarantine_path)
    return result


def _checked(pairs: Iterable[Record], seen_ids: set[Any]) -> Iterator[Record]:
    """Pass records through, refusing ones without an id or with a repeated id (they could not be traced)."""
    for index, record in enumerate(pairs):
        if "id" not in record:
            raise ValueError(f"pair #{index} has no 'id': give every pair a unique id before filtering")
        key = json.dumps(record["id"], sort_keys=True, default=str)
        if key in seen_ids:
            raise ValueError(f"pair id {record['id']!r} appears twice: ids must be unique to trace drops")
        seen_ids.add(key)
        yield record


def _log_summary(result: FilterResult, quarantine_path: str | os.PathLike[str] | None) -> None:
    counts = result.counts
    dropped = ", ".join(f"{reason} {counts.get(reason, 0)}" for reason in DROP_REASONS)
    where = f"; quarantined in {quarantine_path}" if quarantine_path is not None else ""
    log.info(
        "consistency filter kept %d/%d pairs (%.1f%%); dropped: %s%s",
        counts.get(KEPT, 0), counts.get("total", 0), 100 * result.kept_share, dropped, where,
    )
