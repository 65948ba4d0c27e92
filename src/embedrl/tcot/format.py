"""The T-CoT text format: parse, validate and render.

```
<thinking>prose ... {"bbox_2d": [[x1, y1, x2, y2]]}</thinking>
<rethink>prose</rethink>
<answer>one line</answer>
```
The JSON cue ends the `<thinking>` block. Its keys are `text_keywords` (list of str), `bbox_2d`
(one box or a list of boxes, Qwen-VL 0-1000 relative coordinates) and `key_frames` (1-based ints).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image", "video")
MODALITY_ALIASES = {"visdoc": "image"}  # a document page is an image
CUE_KEYS = ("text_keywords", "bbox_2d", "key_frames")
TAGS = ("thinking", "rethink", "answer")
COORD_MAX = 1000

Box = tuple[int, int, int, int]

_TAG_RE = re.compile(r"<(/?)(thinking|rethink|answer)>")
# Only a '{' followed by a key or '}' can start a JSON object; skipping the rest keeps brace-heavy
# prose from costing one decode attempt per brace.
_OBJECT_START_RE = re.compile(r'\{\s*["}]')
_EXCERPT_CHARS = 60
_DECODE_WINDOW = 256  # a typical cue fits; longer ones grow the window
_CUT_MARGIN = 64  # a literal or escape cut by the window end fails within a few characters of it
_CUE_EXAMPLE = '{"bbox_2d": [[x1, y1, x2, y2]]}'


class TCoTFormatError(ValueError):
    """A T-CoT text or object breaks the format; the message says what is wrong and where."""


class _JSONObject(dict):
    """A decoded JSON object that remembers keys the JSON text repeated (json keeps the last)."""

    duplicate_keys: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _JSONObject:
    obj = _JSONObject(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.duplicate_keys = tuple(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs)


@dataclass(frozen=True)
class TCoT:
    """One T-CoT. Fields are compared by value; the object is not hashable (its cue fields are lists).

    Tuples and a single box are normalised on construction, so a T-CoT built in code equals the parsed one.
    """

    thinking: str
    rethink: str
    answer: str
    text_keywords: list[str] = field(default_factory=list)
    bbox_2d: list[Box] = field(default_factory=list)
    key_frames: list[int] = field(default_factory=list)

    __hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_keywords", _as_list(self.text_keywords))
        object.__setattr__(self, "bbox_2d", _normalise_boxes(self.bbox_2d))
        object.__setattr__(self, "key_frames", _as_list(self.key_frames))

    @property
    def cue(self) -> dict[str, Any]:
        """The JSON cue as `render` writes it: non-empty keys only, in CUE_KEYS order, boxes as lists."""
        cue: dict[str, Any] = {}
        if self.text_keywords:
            cue["text_keywords"] = list(self.text_keywords)
        if self.bbox_2d:
            cue["bbox_2d"] = [list(box) for box in self.bbox_2d]
        if self.key_frames:
            cue["key_frames"] = list(self.key_frames)
        return cue


def _as_list(value: Any) -> Any:
    # Anything that is not a list or tuple is left as it is, for validate to name.
    return list(value) if isinstance(value, list | tuple) else value


def _normalise_boxes(value: Any) -> Any:
    if not isinstance(value, list | tuple):
        return value
    if len(value) == 4 and not any(isinstance(v, list | tuple) for v in value):
        return [tuple(value)]
    return [tuple(box) if isinstance(box, list | tuple) else box for box in value]


# ---------------------------------------------------------------- parse


def parse(text: str, *, modality: str | None = None, num_frames: int | None = None) -> TCoT:
    """Parse a T-CoT text; raise TCoTFormatError saying what is wrong.

    With `modality` the cue must also fit it (see `validate`); without, only structure and types are checked.
    """
    if not isinstance(text, str):
        raise TypeError(f"a T-CoT text must be a str, got {type(text).__name__}")
    _resolve_modality(modality, num_frames)
    blocks = _split_blocks(text)
    prose, cue = _split_thinking(blocks["thinking"])
    tcot = TCoT(
        thinking=prose,
        rethink=blocks["rethink"].strip(),
        answer=blocks["answer"].strip(),
        **_cue_fields(cue),
    )
    validate(tcot, modality=modality, num_frames=num_frames)
    return tcot


def _split_blocks(text: str) -> dict[str, str]:
    """The raw content of each block, after checking that the three blocks follow one another."""
    _check_tag_counts(text)
    spans: dict[str, tuple[int, int, int, int]] = {}  # name -> (open start, open end, close start, close end)
    for name in TAGS:
        open_at, close_at = text.index(f"<{name}>"), text.index(f"</{name}>")
        if close_at < open_at:
            raise TCoTFormatError(f"</{name}> comes before <{name}>; a block opens before it closes")
        spans[name] = (open_at, open_at + len(name) + 2, close_at, close_at + len(name) + 3)
    for name, (_, inner_start, inner_end, _) in spans.items():
        inner = _TAG_RE.search(text, inner_start, inner_end)
        if inner is not None:
            raise TCoTFormatError(
                f"{inner.group(0)} appears inside <{name}>...</{name}>; blocks may not nest or overlap"
            )
    order = sorted(TAGS, key=lambda name: spans[name][0])
    if tuple(order) != TAGS:
        found = ", ".join(order)
        raise TCoTFormatError(f"blocks out of order: found {found}; expected thinking, rethink, answer")
    _check_outside_whitespace(text, spans)
    return {name: text[spans[name][1] : spans[name][2]] for name in TAGS}


def _check_tag_counts(text: str) -> None:
    for name in TAGS:
        opens, closes = text.count(f"<{name}>"), text.count(f"</{name}>")
        if opens == 0 and closes == 0:
            raise TCoTFormatError(f"missing the <{name}>...</{name}> block")
        if opens == 0:
            raise TCoTFormatError(f"</{name}> has no opening <{name}> tag")
        if closes == 0:
            raise TCoTFormatError(f"<{name}> is not closed: no </{name}> tag")
        if opens > 1 or closes > 1:
            tag = f"<{name}>" if opens > 1 else f"</{name}>"
            count = max(opens, closes)
            raise TCoTFormatError(f"{tag} appears {count} times; each tag must appear exactly once")


def _check_outside_whitespace(text: str, spans: dict[str, tuple[int, int, int, int]]) -> None:
    gaps = [
        ("before <thinking>", 0, spans["thinking"][0]),
        ("between </thinking> and <rethink>", spans["thinking"][3], spans["rethink"][0]),
        ("between </rethink> and <answer>", spans["rethink"][3], spans["answer"][0]),
        ("after </answer>", spans["answer"][3], len(text)),
    ]
    for where, start, end in gaps:
        stray = text[start:end].strip()
        if stray:
            raise TCoTFormatError(
                f"only whitespace may appear outside the blocks; found {_excerpt(stray)} {where}"
            )


def _split_thinking(block: str) -> tuple[str, dict[str, Any]]:
    """Split `<thinking>` content into its prose (stripped) and the JSON cue object that ends it."""
    body = block.rstrip()
    prose_objects: list[tuple[int, int]] = []
    pos = 0
    while (match := _OBJECT_START_RE.search(body, pos)) is not None:
        start = match.start()
        try:
            obj, end = _decode_object_at(body, start)
        except RecursionError:
            raise TCoTFormatError("JSON in <thinking> is nested too deeply to be a cue") from None
        except ValueError:
            pos = start + 1
            continue
        if end == len(body):
            if prose_objects:
                first_start, first_end = prose_objects[0]
                raise TCoTFormatError(
                    f"<thinking> holds more than one JSON object ({_excerpt(body[first_start:first_end])} "
                    "before the cue); exactly one JSON cue, at the end, is allowed"
                )
            return body[:start].strip(), obj
        prose_objects.append((start, end))
        pos = end
    raise TCoTFormatError(_missing_cue_message(body, prose_objects))


def _decode_object_at(body: str, start: int) -> tuple[Any, int]:
    """`raw_decode` at `start`, on a window that grows only while the failure may come from its cut.

    A JSONDecodeError counts lines up to its position, so decoding in place made a failed attempt cost
    O(start) and brace-heavy prose quadratic. A success inside a window is the same as on the whole body.
    Errors carry positions relative to `start`.
    """
    width = _DECODE_WINDOW
    while True:
        window = body[start : start + width]
        try:
            obj, end = _DECODER.raw_decode(window)
        except json.JSONDecodeError as exc:
            cut = start + width < len(body)
            if cut and (exc.pos >= len(window) - _CUT_MARGIN or exc.msg.startswith("Unterminated")):
                width *= 4
                continue
            raise
        return obj, start + end


def _missing_cue_message(body: str, prose_objects: list[tuple[int, int]]) -> str:
    if prose_objects:
        last_end = prose_objects[-1][1]
        return f"the JSON cue must end <thinking>; found {_excerpt(body[last_end:].strip())} after it"
    match = _OBJECT_START_RE.search(body)
    start = match.start() if match is not None else body.find("{")
    if start < 0:
        return f"missing the JSON cue: <thinking> must end with a JSON object such as {_CUE_EXAMPLE}"
    try:
        _decode_object_at(body, start)
    except json.JSONDecodeError as exc:
        reason = f" ({exc.msg} at character {exc.pos})"
    else:  # a complete object here would have been found by the scan; kept for safety
        reason = ""
    return f"the JSON cue in <thinking> does not parse{reason}: {_excerpt(body[start:])}"


def _cue_fields(cue: dict[str, Any]) -> dict[str, Any]:
    duplicates = getattr(cue, "duplicate_keys", ())
    if duplicates:
        raise TCoTFormatError(f"the JSON cue repeats the key {duplicates[0]!r}; each key may appear once")
    unknown = [key for key in cue if key not in CUE_KEYS]
    if unknown:
        raise TCoTFormatError(
            f"the JSON cue has unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(CUE_KEYS)}"
        )
    return {key: cue[key] for key in CUE_KEYS if key in cue}


# ---------------------------------------------------------------- validate


def validate(tcot: TCoT, *, modality: str | None, num_frames: int | None = None) -> None:
    """Check a TCoT; raise TCoTFormatError if `render` could not write it or its cue does not fit `modality`.

    `modality` is one of MODALITIES (or "visdoc", an alias of "image"), or None for structure and types only.
    Unknown modalities and a video check without `num_frames` are caller errors: plain ValueError.
    """
    resolved = _resolve_modality(modality, num_frames)
    if not isinstance(tcot, TCoT):
        raise TypeError(f"expected a TCoT, got {type(tcot).__name__}")
    _check_prose(tcot)
    _check_keywords(tcot.text_keywords)
    _check_boxes(tcot.bbox_2d)
    _check_frames(tcot.key_frames)
    _check_thinking_round_trip(tcot)
    if resolved == "text":
        _check_text_cue(tcot, modality)
    elif resolved == "image":
        _check_image_cue(tcot, modality)
    elif resolved == "video":
        _check_video_cue(tcot, num_frames)


def _resolve_modality(modality: str | None, num_frames: int | None) -> str | None:
    if modality is None:
        return None
    resolved = MODALITY_ALIASES.get(modality, modality) if isinstance(modality, str) else None
    if resolved not in MODALITIES:
        allowed = ", ".join([*MODALITIES, *MODALITY_ALIASES])
        raise ValueError(f"unknown modality {modality!r}; allowed: {allowed} (visdoc is checked as image)")
    if resolved == "video":
        if num_frames is None:
            raise ValueError(
                "modality 'video' needs num_frames (the number of sampled frames) to check key_frames"
            )
        if not _is_int(num_frames) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    return resolved


def _check_prose(tcot: TCoT) -> None:
    for name in TAGS:
        value = getattr(tcot, name)
        if not isinstance(value, str):
            raise TCoTFormatError(f"{name} must be a str, got {type(value).__name__}")
        tag = _TAG_RE.search(value)
        if tag is not None:
            raise TCoTFormatError(
                f"{name} contains the tag {tag.group(0)}; tags may not appear inside a block"
            )
        if value != value.strip():
            raise TCoTFormatError(f"{name} must not start or end with whitespace: {_excerpt(value)}")
    if not tcot.answer:
        raise TCoTFormatError("<answer> is empty; it must hold a one-line summary")
    if len(tcot.answer.splitlines()) > 1:
        raise TCoTFormatError(
            f"<answer> must be a single line; found a line break in {_excerpt(tcot.answer)}"
        )


def _check_keywords(keywords: Any) -> None:
    if not isinstance(keywords, list):
        raise TCoTFormatError(f"text_keywords must be a list of strings, got {_json_type(keywords)}")
    for i, keyword in enumerate(keywords, 1):
        if not isinstance(keyword, str):
            raise TCoTFormatError(
                f"text_keywords item {i} must be a string, got {_json_type(keyword)} {_excerpt(keyword)}"
            )
        if not keyword.strip():
            raise TCoTFormatError(f"text_keywords item {i} is empty; keywords must be non-empty strings")
        tag = _TAG_RE.search(keyword)
        if tag is not None:
            raise TCoTFormatError(f"text_keywords item {i} contains the tag {tag.group(0)}")


def _check_boxes(boxes: Any) -> None:
    expected = "one box [x1, y1, x2, y2] or a list of boxes"
    if not isinstance(boxes, list):
        raise TCoTFormatError(f"bbox_2d must be {expected}, got {_json_type(boxes)}")
    if boxes and not any(isinstance(box, tuple) for box in boxes):
        raise TCoTFormatError(f"bbox_2d must be {expected} of 4 integers, got {_excerpt(boxes)}")
    for i, box in enumerate(boxes, 1):
        if not isinstance(box, tuple) or len(box) != 4 or not all(_is_int(v) for v in box):
            shown = list(box) if isinstance(box, tuple) else box
            raise TCoTFormatError(
                f"bbox_2d box {i} must be 4 integers [x1, y1, x2, y2], got {_excerpt(shown)}"
            )


def _check_frames(frames: Any) -> None:
    if not isinstance(frames, list):
        raise TCoTFormatError(f"key_frames must be a list of integers, got {_json_type(frames)}")
    for i, frame in enumerate(frames, 1):
        if not _is_int(frame):
            raise TCoTFormatError(
                f"key_frames item {i} must be an integer, got {_json_type(frame)} {_excerpt(frame)}"
            )


def _check_thinking_round_trip(tcot: TCoT) -> None:
    # Prose that a reader would take for (part of) a JSON object would not survive render -> parse.
    prose, cue = _split_thinking(_render_thinking(tcot))
    if prose != tcot.thinking or cue != tcot.cue:
        raise TCoTFormatError(f"thinking {_excerpt(tcot.thinking)} would be read as part of the JSON cue")


def _check_text_cue(tcot: TCoT, modality: str | None) -> None:
    if not tcot.text_keywords:
        raise TCoTFormatError(f"modality {modality!r} needs a non-empty text_keywords list in the JSON cue")


def _check_image_cue(tcot: TCoT, modality: str | None) -> None:
    if not tcot.bbox_2d:
        raise TCoTFormatError(f"modality {modality!r} needs a non-empty bbox_2d in the JSON cue")
    for i, box in enumerate(tcot.bbox_2d, 1):
        x1, y1, x2, y2 = box
        if not all(0 <= v <= COORD_MAX for v in box):
            raise TCoTFormatError(
                f"bbox_2d box {i} {list(box)} is outside 0..{COORD_MAX} (Qwen-VL relative coordinates)"
            )
        if x1 >= x2:
            raise TCoTFormatError(f"bbox_2d box {i} {list(box)}: x1 must be < x2")
        if y1 >= y2:
            raise TCoTFormatError(f"bbox_2d box {i} {list(box)}: y1 must be < y2")


def _check_video_cue(tcot: TCoT, num_frames: int | None) -> None:
    if not tcot.key_frames:
        raise TCoTFormatError("modality 'video' needs a non-empty key_frames list in the JSON cue")
    seen: set[int] = set()
    for frame in tcot.key_frames:
        if not 1 <= frame <= num_frames:  # type: ignore[operator]
            raise TCoTFormatError(
                f"key_frames value {frame} is outside 1..{num_frames} "
                f"(1-based indices into {num_frames} sampled frames)"
            )
        if frame in seen:
            raise TCoTFormatError(f"key_frames repeats frame {frame}; each key frame may appear once")
        seen.add(frame)


# ---------------------------------------------------------------- render and reward


def render(tcot: TCoT) -> str:
    """The canonical text of a valid TCoT; `parse(render(t)) == t`. Raises TCoTFormatError if invalid."""
    validate(tcot, modality=None)
    return (
        f"<thinking>{_render_thinking(tcot)}</thinking>\n"
        f"<rethink>{tcot.rethink}</rethink>\n"
        f"<answer>{tcot.answer}</answer>"
    )


def _render_thinking(tcot: TCoT) -> str:
    cue = json.dumps(tcot.cue, ensure_ascii=False)
    return f"{tcot.thinking} {cue}" if tcot.thinking else cue


def format_reward(text: Any, *, modality: str, num_frames: int | None = None) -> float:
    """1.0 if `text` parses as a T-CoT that fits `modality`, else 0.0. Never raises."""
    try:
        _resolve_modality(modality, num_frames)
    except ValueError as exc:
        logger.warning("format_reward gives 0.0 for a caller error: %s", exc)
        return 0.0
    try:
        parse(text, modality=modality, num_frames=num_frames)
    except Exception:  # by contract any failure, even an unforeseen one, is a format failure
        return 0.0
    return 1.0


# ---------------------------------------------------------------- helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string"}
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return names.get(type(value), type(value).__name__)


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "..."
    return repr(text)
