"""Prompts for the teacher: T-CoT writing (query side and target side, per modality) and the judge.

The T-CoT written here is what `embedrl.tcot.format.parse` checks: three tags in order, and one JSON
evidence cue at the very end of `<thinking>` whose key depends on the modality. The target side never
sees the query: candidates get their T-CoT offline at evaluation time, so training must match that.
"""

from __future__ import annotations

from typing import Literal

Side = Literal["query", "target"]
Modality = Literal["text", "image", "video", "visdoc"]

SIDES: tuple[str, ...] = ("query", "target")
MODALITIES: tuple[str, ...] = ("text", "image", "video", "visdoc")

_FRAMES_UNKNOWN = "the number of frames shown"

_FORMAT = """\
Write your reply in exactly this shape, with nothing before <thinking> and nothing after </answer>:
<thinking>your step-by-step reasoning, ending with the evidence cue</thinking>
<rethink>your check of that evidence</rethink>
<answer>one line</answer>

Rules:
1. <thinking>: reason in short steps, one or two sentences each. Its last element is exactly one JSON
   object, the evidence cue, written on its own after the last sentence; nothing follows the JSON
   before </thinking>. The cue for this input is:
   {cue}
2. <rethink>: check the evidence you pointed at against the task. Does it really support your
   conclusion? If it does not, say what is wrong and correct it here. No JSON in this part.
3. <answer>: a single line with no line break. {answer}
4. Use each of the three tags exactly once and in this order; use no other tags and no code fences."""

_CUE = {
    "text": (
        '{{"text_keywords": ["...", "..."]}}: 1 to 8 short keywords or phrases, taken from the input '
        "text, that carry the meaning a match depends on."
    ),
    "image": (
        '{{"bbox_2d": [[x1, y1, x2, y2], ...]}}: one box per image region that holds the evidence '
        "(at most 4 boxes), as integers in relative coordinates from 0 to 1000, where (0, 0) is the "
        "top-left corner and (1000, 1000) the bottom-right corner of the image, with x1 < x2 and "
        "y1 < y2. Draw the box tight around the region, not around the whole image."
    ),
    "visdoc": (
        '{{"bbox_2d": [[x1, y1, x2, y2], ...]}}: one box per page region that holds the evidence '
        "(a heading, table, chart, figure or paragraph; at most 4 boxes), as integers in relative "
        "coordinates from 0 to 1000, where (0, 0) is the top-left corner and (1000, 1000) the "
        "bottom-right corner of the page, with x1 < x2 and y1 < y2."
    ),
    "video": (
        '{{"key_frames": [i, ...]}}: the numbers of the frames that show the evidence (1 to 4 of '
        "them, in increasing order). Frames are numbered from 1 as in their labels, so every number "
        "is between 1 and {num_frames}; never use 0."
    ),
}

_INPUT = {
    "text": "a piece of text",
    "image": "an image together with some text",
    "visdoc": "a document page image (a scan, slide, screenshot or report page) together with some text",
    "video": (
        "a video given as {num_frames} frames sampled evenly in time, each preceded by its label "
        '"Frame 1:", "Frame 2:" and so on, together with some text'
    ),
}

_QUERY_TASK = """\
You prepare inputs for a multimodal retrieval model. You are given a QUERY: {input}, and the
instruction of its retrieval task. Work out what the query asks for and what a correct target must
contain (for a question: the answer; for a classification: the class; for a search: the described
item). Ground every step in what the query itself shows or says, and point at that evidence with
the cue."""

_TARGET_TASK = """\
You prepare inputs for a multimodal retrieval model. You are given a CANDIDATE that the model may
return for some query you do not see: {input}. Describe what the candidate contains that a query
could be looking for: its main subject, attributes (counts, colours, names, numbers, text), actions
and relations. Do not guess what the query was. Ground every step in what the candidate shows or
says, and point at that evidence with the cue."""

_QUERY_ANSWER = (
    "State what the query is looking for: the answer, the class, or a one-line description of the "
    "matching target."
)
_TARGET_ANSWER = "Summarise the candidate in one line, naming the details that set it apart."

_REMINDER = """\
Your reply did not follow the required format: {error}
Write the whole reply again, fixing that. Keep exactly this shape and nothing else:
<thinking>steps ... {cue_example}</thinking>
<rethink>check of the evidence</rethink>
<answer>one line</answer>
{cue_rule}"""

_CUE_EXAMPLE = {
    "text": '{"text_keywords": ["keyword", "phrase"]}',
    "image": '{"bbox_2d": [[x1, y1, x2, y2]]}',
    "visdoc": '{"bbox_2d": [[x1, y1, x2, y2]]}',
    "video": '{"key_frames": [i, j]}',
}

JUDGE_SYSTEM_PROMPT = """\
You check training pairs for a multimodal retrieval data set. Each pair is a QUERY and the target
labelled as its POSITIVE. A model wrote a reasoning trace (T-CoT) for each side separately: the query
T-CoT says what the query asks for, the positive T-CoT describes the positive target. Decide:

- "relevant": true if the positive, as its T-CoT describes it, satisfies the query; false if it is
  about a different object, scene, event or document, or answers a different question.
- "consistent": true if the two traces agree; false if they contradict each other, or the query, on
  a fact the query depends on (a count, colour, name, number, position, action, or the answer
  itself).

Different wording or a different level of detail is not a contradiction. A detail that one trace
leaves out is not a contradiction unless the query depends on it.

Reply with one JSON object and nothing else, no code fences:
{"relevant": true or false, "consistent": true or false, "reason": "one short sentence"}"""

_JUDGE_USER = """\
=== QUERY ===
{query_text}

=== QUERY T-CoT ===
{query_tcot}

=== POSITIVE T-CoT ===
{target_tcot}

Give your verdict as the JSON object."""


def canonical_modality(modality: str) -> str:
    """Check `modality` and return it; "visdoc" stays distinct here because its prompt differs."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}: use one of {', '.join(MODALITIES)}")
    return modality


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}: use 'query' or 'target'")


def _unwrap(paragraph: str) -> str:
    # The templates are wrapped for the source file; the model gets one line per paragraph.
    return " ".join(paragraph.split())


def _frames_text(num_frames: int | None) -> str:
    return str(num_frames) if num_frames else _FRAMES_UNKNOWN


def cue_rule(modality: str, num_frames: int | None = None) -> str:
    """The sentence that defines the JSON evidence cue for `modality`."""
    return _CUE[canonical_modality(modality)].format(num_frames=_frames_text(num_frames))


def tcot_system_prompt(side: str, modality: str, *, num_frames: int | None = None) -> str:
    """System prompt asking the teacher for a T-CoT of one side (query or target) of one modality."""
    _check_side(side)
    modality = canonical_modality(modality)
    input_text = _INPUT[modality].format(num_frames=_frames_text(num_frames))
    task = _unwrap(_QUERY_TASK if side == "query" else _TARGET_TASK).format(input=input_text)
    answer = _QUERY_ANSWER if side == "query" else _TARGET_ANSWER
    return task + "\n\n" + _FORMAT.format(cue=cue_rule(modality, num_frames), answer=answer)


def tcot_user_text(side: str, text: str, instruction: str = "") -> str:
    """The text part of the user turn: the task instruction (if any) and the side's own text."""
    _check_side(side)
    label = "QUERY" if side == "query" else "CANDIDATE"
    parts = []
    if instruction.strip():
        parts.append(f"Task instruction: {instruction.strip()}")
    parts.append(f"{label} text: {text.strip() if text.strip() else '(none: use the media only)'}")
    parts.append("Write the T-CoT now.")
    return "\n".join(parts)


def format_reminder(error: str, modality: str, num_frames: int | None = None) -> str:
    """Follow-up user turn after a reply that did not parse: names the error and restates the shape."""
    modality = canonical_modality(modality)
    return _REMINDER.format(
        error=error, cue_example=_CUE_EXAMPLE[modality], cue_rule="Cue: " + cue_rule(modality, num_frames)
    )


def judge_user_text(query_text: str, query_tcot: str, target_tcot: str) -> str:
    """User turn for the consistency judge."""
    return _JUDGE_USER.format(
        query_text=query_text.strip() or "(no text: the query is its media only)",
        query_tcot=query_tcot.strip(),
        target_tcot=target_tcot.strip(),
    )
