"""T-CoT text format: parse, validate, render, format_reward."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embedrl.tcot as tcot_pkg
from embedrl.tcot import MODALITIES, TCoT, TCoTFormatError, format_reward, parse, render, validate

DEFAULT_CUE = {"bbox_2d": [[100, 200, 300, 400]]}


def make(thinking: str = "I look at the scene.", cue: object = None, answer: str = "a red square") -> str:
    """A T-CoT text; `cue` is a dict (dumped), a raw string (used as is) or None (an image box)."""
    cue_text = cue if isinstance(cue, str) else json.dumps(DEFAULT_CUE if cue is None else cue)
    blocks = f"<thinking>{thinking} {cue_text}</thinking>\n<rethink>It fits.</rethink>"
    return blocks + f"\n<answer>{answer}</answer>"


def error_of(text: str, **kwargs: object) -> str:
    with pytest.raises(TCoTFormatError) as info:
        parse(text, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- parsing good input


def test_parse_splits_prose_cue_and_blocks() -> None:
    text = (
        "  <thinking>\nStep 1: the square is red.\nStep 2: it is top left. "
        '{"bbox_2d": [[100, 200, 300, 400], [0, 0, 1000, 1000]]}\n</thinking>\n\n'
        "<rethink> The box covers it. </rethink>\n<answer> red square, top left </answer>\n"
    )
    tcot = parse(text, modality="image")
    assert tcot.thinking == "Step 1: the square is red.\nStep 2: it is top left."
    assert tcot.rethink == "The box covers it."
    assert tcot.answer == "red square, top left"
    assert tcot.bbox_2d == [(100, 200, 300, 400), (0, 0, 1000, 1000)]
    assert tcot.text_keywords == [] and tcot.key_frames == []


def test_single_box_is_normalised_to_a_list_of_one() -> None:
    single = parse(make(cue={"bbox_2d": [10, 20, 30, 40]}), modality="image")
    listed = parse(make(cue={"bbox_2d": [[10, 20, 30, 40]]}), modality="image")
    assert single.bbox_2d == [(10, 20, 30, 40)]
    assert single == listed
    assert isinstance(single.bbox_2d[0], tuple)


def test_constructor_normalises_tuples_and_a_single_box() -> None:
    built = TCoT("t", "r", "a", text_keywords=("k",), bbox_2d=[10, 20, 30, 40], key_frames=(2, 3))
    assert built == TCoT("t", "r", "a", text_keywords=["k"], bbox_2d=[(10, 20, 30, 40)], key_frames=[2, 3])
    assert built.bbox_2d == [(10, 20, 30, 40)]


def test_tcot_is_frozen_and_not_hashable() -> None:
    tcot = parse(make())
    with pytest.raises(AttributeError):
        tcot.answer = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(tcot)


def test_braces_inside_json_strings_do_not_confuse_the_cue() -> None:
    cue = {"text_keywords": ["a}b", "{c", '"}{"', "</x>"]}
    tcot = parse(make(thinking="prose with a { brace and } another", cue=cue), modality="text")
    assert tcot.text_keywords == cue["text_keywords"]
    assert tcot.thinking == "prose with a { brace and } another"


def test_cue_may_be_all_of_thinking_and_nested_whitespace() -> None:
    text = '<thinking>{ "key_frames" : [ 2 , 5 ] }</thinking><rethink></rethink><answer>x</answer>'
    tcot = parse(text, modality="video", num_frames=8)
    assert tcot.thinking == "" and tcot.rethink == "" and tcot.key_frames == [2, 5]


def test_visdoc_is_checked_like_image() -> None:
    assert parse(make(), modality="visdoc") == parse(make(), modality="image")
    assert "bbox_2d" in error_of(make(cue={"text_keywords": ["a"]}), modality="visdoc")


def test_without_modality_only_structure_and_types_are_checked() -> None:
    assert parse(make(cue={})).bbox_2d == []
    out_of_range = parse(make(cue={"bbox_2d": [[-5, 2000, 10, 3]], "key_frames": [0, 0, 99]}))
    assert out_of_range.bbox_2d == [(-5, 2000, 10, 3)] and out_of_range.key_frames == [0, 0, 99]


def test_modalities_constant_and_reexports() -> None:
    assert MODALITIES == ("text", "image", "video")
    for name in ["TCoT", "parse", "render", "validate", "format_reward", "TCoTFormatError", "MODALITIES"]:
        assert hasattr(tcot_pkg, name)
    assert issubclass(TCoTFormatError, ValueError)


# ---------------------------------------------------------------- render


def test_render_is_canonical() -> None:
    tcot = TCoT("Two steps.", "Checked.", "a cat", ["cat", "sofa"], [(1, 2, 3, 4)], [2])
    assert render(tcot) == (
        '<thinking>Two steps. {"text_keywords": ["cat", "sofa"], '
        '"bbox_2d": [[1, 2, 3, 4]], "key_frames": [2]}</thinking>'
        "\n<rethink>Checked.</rethink>\n<answer>a cat</answer>"
    )
    assert render(TCoT("", "", "x")) == "<thinking>{}</thinking>\n<rethink></rethink>\n<answer>x</answer>"


def test_render_keeps_non_ascii() -> None:
    assert '"日本語"' in render(TCoT("思考", "", "答え", ["日本語"]))


def test_render_rejects_what_would_not_round_trip() -> None:
    with pytest.raises(TCoTFormatError, match="single line"):
        render(TCoT("t", "r", "two\nlines"))
    with pytest.raises(TCoTFormatError, match="whitespace"):
        render(TCoT(" t", "r", "a"))
    with pytest.raises(TCoTFormatError, match="</rethink>"):
        render(TCoT("t", "a </rethink> b", "a"))
    with pytest.raises(TCoTFormatError, match="more than one JSON object"):
        render(TCoT('prose {"bbox_2d": [1, 2, 3, 4]} more', "r", "a"))


# Prose without tags or braces; keywords may hold braces and quotes, which the JSON must escape.
_PROSE_CHARS = st.characters(blacklist_characters="{}<>", blacklist_categories=("Cs",))
_PROSE = st.text(_PROSE_CHARS, max_size=80).map(str.strip)
_ANSWER = (
    st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), min_size=1, max_size=40)
    .map(str.strip)
    .filter(lambda a: a != "" and len(a.splitlines()) == 1)
)
_KEYWORD = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda k: k.strip() != "" and "<" not in k
)
_INT = st.integers(min_value=-(10**6), max_value=10**6)


@st.composite
def _valid_box(draw: st.DrawFn) -> tuple[int, int, int, int]:
    x1, x2 = sorted(draw(st.lists(st.integers(0, 1000), min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(st.integers(0, 1000), min_size=2, max_size=2, unique=True)))
    return (x1, y1, x2, y2)


@settings(max_examples=150, deadline=None)
@given(
    thinking=_PROSE,
    rethink=_PROSE,
    answer=_ANSWER,
    keywords=st.lists(_KEYWORD, max_size=4),
    boxes=st.lists(st.tuples(_INT, _INT, _INT, _INT), max_size=3),
    frames=st.lists(_INT, max_size=4),
)
def test_round_trip_structural(thinking, rethink, answer, keywords, boxes, frames) -> None:
    tcot = TCoT(thinking, rethink, answer, keywords, boxes, frames)
    assert parse(render(tcot)) == tcot


@settings(max_examples=60, deadline=None)
@given(
    thinking=_PROSE,
    answer=_ANSWER,
    keywords=st.lists(_KEYWORD, min_size=1, max_size=3),
    boxes=st.lists(_valid_box(), min_size=1, max_size=3),
    frames=st.lists(st.integers(1, 8), min_size=1, max_size=8, unique=True),
)
def test_round_trip_per_modality(thinking, answer, keywords, boxes, frames) -> None:
    tcot = TCoT(thinking, "ok", answer, keywords, boxes, frames)
    text = render(tcot)
    for modality in ["text", "image", "visdoc", "video"]:
        assert parse(text, modality=modality, num_frames=8) == tcot
        assert format_reward(text, modality=modality, num_frames=8) == 1.0


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200) | st.builds(lambda a, b: make(a, b), st.text(max_size=30), st.text(max_size=40)))
def test_parse_raises_only_format_errors(text: str) -> None:
    try:
        parse(text)
    except TCoTFormatError:
        pass
    assert format_reward(text, modality="image") in (0.0, 1.0)


# ---------------------------------------------------------------- structural errors

_R, _A = "<rethink>r</rethink>", "<answer>a</answer>"
_T = "<thinking>t {}</thinking>"

STRUCTURE_ERRORS = [
    (f"{_R}{_A}", ["missing", "<thinking>"]),
    (f"{_T}{_A}", ["missing", "<rethink>"]),
    (f"{_T}{_R}", ["missing", "<answer>"]),
    (f"{_T}{_R}<answer>a", ["<answer>", "not closed"]),
    (f"t {{}}</thinking>{_R}{_A}", ["</thinking>", "no opening"]),
    (f"{_T}{_T}{_R}{_A}", ["<thinking>", "2 times"]),
    (f"{_T}{_R}{_A}</answer>", ["</answer>", "2 times"]),
    (f"</thinking>t {{}}<thinking>{_R}{_A}", ["</thinking>", "before <thinking>"]),
    (f"<thinking>t <rethink>r</rethink> {{}}</thinking>{_A}", ["<rethink>", "inside <thinking>"]),
    (f"<thinking>t {{}}<rethink>r</thinking></rethink>{_A}", ["<rethink>", "inside <thinking>"]),
    (f"{_R}{_T}{_A}", ["out of order", "rethink, thinking, answer"]),
    (f"{_T}{_A}{_R}", ["out of order", "thinking, answer, rethink"]),
    (f"Sure! {_T}{_R}{_A}", ["outside", "'Sure!'", "before <thinking>"]),
    (f"{_T} x {_R}{_A}", ["outside", "'x'", "between </thinking> and <rethink>"]),
    (f"{_T}{_R} y {_A}", ["outside", "'y'", "between </rethink> and <answer>"]),
    (f"{_T}{_R}{_A} bye", ["outside", "'bye'", "after </answer>"]),
    (f"{_T}{_R}<answer>  </answer>", ["<answer>", "empty"]),
    (f"{_T}{_R}<answer>line one\nline two</answer>", ["<answer>", "single line"]),
]


@pytest.mark.parametrize(("text", "expected"), STRUCTURE_ERRORS)
def test_structure_errors_name_the_problem(text: str, expected: list[str]) -> None:
    message = error_of(text)
    for part in expected:
        assert part in message, message


# ---------------------------------------------------------------- cue errors

CUE_ERRORS = [
    (make(cue=""), ["missing the JSON cue"]),
    (make(cue='{"bbox_2d": [[1, 2, 3, 4]}'), ["does not parse", '{"bbox_2d": [[1, 2, 3, 4]}']),
    (make(cue="{'bbox_2d': [1, 2, 3, 4]}"), ["does not parse", "'bbox_2d'"]),
    (make(cue='{"bbox_2d": [1, 2, 3, 4]} and more prose'), ["must end <thinking>", "and more prose"]),
    (make(thinking='see {"a": 1} here'), ["more than one JSON object", '{"a": 1}']),
    (make(cue={"bbox": [1, 2, 3, 4]}), ["unknown key", "'bbox'", "text_keywords, bbox_2d, key_frames"]),
    (make(cue='{"key_frames": [1], "key_frames": [2]}'), ["repeats the key", "'key_frames'"]),
    (make(cue={"text_keywords": "cat"}), ["text_keywords", "list of strings", "string"]),
    (make(cue={"text_keywords": ["cat", 3]}), ["text_keywords item 2", "string", "integer"]),
    (make(cue={"text_keywords": ["cat", " "]}), ["text_keywords item 2", "empty"]),
    (make(cue={"bbox_2d": [1, 2, 3]}), ["bbox_2d", "4 integers", "[1, 2, 3]"]),
    (make(cue={"bbox_2d": [[1, 2, 3, 4], [1, 2, 3]]}), ["bbox_2d box 2", "4 integers", "[1, 2, 3]"]),
    (make(cue={"bbox_2d": [[1, 2, 3.5, 4]]}), ["bbox_2d box 1", "4 integers", "3.5"]),
    (make(cue={"bbox_2d": [[1, 2, True, 4]]}), ["bbox_2d box 1", "4 integers", "True"]),
    (make(cue={"bbox_2d": [[1, 2, 3, 4], 5]}), ["bbox_2d box 2", "5"]),
    (make(cue={"bbox_2d": None}), ["bbox_2d", "got null"]),
    (make(cue={"key_frames": 3}), ["key_frames", "list of integers", "integer"]),
    (make(cue={"key_frames": [1, "2"]}), ["key_frames item 2", "integer", "string"]),
    (make(cue={"key_frames": [False]}), ["key_frames item 1", "integer", "boolean"]),
]


@pytest.mark.parametrize(("text", "expected"), CUE_ERRORS)
def test_cue_errors_name_the_problem(text: str, expected: list[str]) -> None:
    message = error_of(text)
    for part in expected:
        assert part in message, message


# ---------------------------------------------------------------- modality checks

MODALITY_ERRORS = [
    ({"bbox_2d": [1, 2, 3, 4]}, "text", ["'text'", "non-empty text_keywords"]),
    ({"text_keywords": []}, "text", ["non-empty text_keywords"]),
    ({"text_keywords": ["cat"]}, "image", ["'image'", "non-empty bbox_2d"]),
    ({"bbox_2d": [[0, 0, 1001, 10]]}, "image", ["box 1", "[0, 0, 1001, 10]", "outside 0..1000"]),
    ({"bbox_2d": [[5, 5, 10, 10], [-1, 0, 10, 10]]}, "image", ["box 2", "outside 0..1000"]),
    ({"bbox_2d": [[10, 0, 10, 10]]}, "image", ["box 1", "x1 must be < x2"]),
    ({"bbox_2d": [[0, 20, 10, 5]]}, "image", ["box 1", "y1 must be < y2"]),
    ({"bbox_2d": [[0, 0, 10, 10]]}, "video", ["'video'", "non-empty key_frames"]),
    ({"key_frames": [0, 2]}, "video", ["value 0", "outside 1..8"]),
    ({"key_frames": [8, 9]}, "video", ["value 9", "outside 1..8"]),
    ({"key_frames": [2, 5, 2]}, "video", ["repeats frame 2"]),
]


@pytest.mark.parametrize(("cue", "modality", "expected"), MODALITY_ERRORS)
def test_modality_errors_name_the_problem(cue: dict, modality: str, expected: list[str]) -> None:
    text = make(cue=cue)
    parse(text)  # structurally fine
    message = error_of(text, modality=modality, num_frames=8)
    for part in expected:
        assert part in message, message
    assert format_reward(text, modality=modality, num_frames=8) == 0.0


def test_modality_range_edges_are_inclusive() -> None:
    assert parse(make(cue={"bbox_2d": [0, 0, 1000, 1000]}), modality="image").bbox_2d == [(0, 0, 1000, 1000)]
    assert parse(make(cue={"key_frames": [1, 8]}), modality="video", num_frames=8).key_frames == [1, 8]


def test_unknown_modality_is_a_plain_value_error_listing_the_allowed() -> None:
    with pytest.raises(ValueError) as info:
        parse(make(), modality="audio")
    assert not isinstance(info.value, TCoTFormatError)
    for name in ["'audio'", "text", "image", "video", "visdoc"]:
        assert name in str(info.value)


def test_video_needs_num_frames() -> None:
    text = make(cue={"key_frames": [1]})
    with pytest.raises(ValueError, match="num_frames"):
        parse(text, modality="video")
    with pytest.raises(ValueError, match="positive integer"):
        parse(text, modality="video", num_frames=0)


def test_validate_checks_a_tcot_built_in_code() -> None:
    good = TCoT("t", "r", "a", bbox_2d=[(1, 2, 3, 4)])
    validate(good, modality="image")
    validate(good, modality=None)
    with pytest.raises(TCoTFormatError, match="x1 must be < x2"):
        validate(TCoT("t", "r", "a", bbox_2d=[(5, 2, 3, 4)]), modality="image")
    with pytest.raises(TCoTFormatError, match="text_keywords must be a list"):
        validate(TCoT("t", "r", "a", text_keywords="cat"), modality=None)  # type: ignore[arg-type]
    with pytest.raises(TCoTFormatError, match="outside 1..4"):
        validate(TCoT("t", "r", "a", key_frames=[5]), modality="video", num_frames=4)


# ---------------------------------------------------------------- format_reward


def test_format_reward_good_and_bad() -> None:
    assert format_reward(make(), modality="image") == 1.0
    assert format_reward(make(), modality="visdoc") == 1.0
    assert format_reward(make(), modality="text") == 0.0  # image cue for a text input
    assert format_reward(make(cue={"key_frames": [3]}), modality="video", num_frames=8) == 1.0
    assert format_reward(make(cue={"key_frames": [9]}), modality="video", num_frames=8) == 0.0
    # the public code checks only the tag order: a broken cue must still score 0
    assert format_reward(make(cue='{"bbox_2d": [1, 2, 3, 4'), modality="image") == 0.0


@pytest.mark.parametrize(
    "value",
    [None, 123, b"<thinking>", ["<thinking>"], "", "garbage", "<thinking>" * 1000, "<answer></answer>"],
)
def test_format_reward_never_raises_on_junk(value: object) -> None:
    assert format_reward(value, modality="image") == 0.0


def test_format_reward_never_raises_on_caller_errors() -> None:
    assert format_reward(make(), modality="audio") == 0.0
    assert format_reward(make(cue={"key_frames": [1]}), modality="video") == 0.0


def test_format_reward_is_fast_on_huge_input() -> None:
    n = 20_000
    huge = [
        "x" * 5_000_000,
        "<thinking>" + '{"a":' * n + "</thinking><rethink></rethink><answer>a</answer>",  # deep nesting
        "<thinking>" + '{"' * n + "{}</thinking><rethink></rethink><answer>a</answer>",  # brace bomb
        "<thinking>" + "[" * n + "{}</thinking><rethink></rethink><answer>a</answer>",
    ]
    start = time.perf_counter()
    for text in huge:
        assert format_reward(text, modality="image") == 0.0
    assert time.perf_counter() - start < 5.0
