"""Evidence from T-CoT cues: box crops of the original image and 1-based key frames."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image, ImageDraw

from embedrl.tcot import (
    Evidence,
    TCoT,
    box_to_pixels,
    crops_from_boxes,
    extract_evidence,
    frames_from_key_frames,
    parse,
)

RED = (220, 30, 40)
WHITE = (255, 255, 255)


def scene(width: int = 400, height: int = 200) -> Image.Image:
    """A white image with a red rectangle covering pixels x 100..219, y 50..129 (120 x 80 px)."""
    image = Image.new("RGB", (width, height), WHITE)
    ImageDraw.Draw(image).rectangle([100, 50, 219, 129], fill=RED)  # PIL includes both corners
    return image


def is_all(image: Image.Image, colour: tuple[int, int, int]) -> bool:
    return bool((np.asarray(image) == np.array(colour, dtype=np.uint8)).all())


# ---------------------------------------------------------------- box_to_pixels


def test_box_to_pixels_rescales_from_0_1000() -> None:
    assert box_to_pixels((250, 250, 550, 650), 400, 200) == (100, 50, 220, 130)
    assert box_to_pixels((0, 0, 1000, 1000), 640, 480) == (0, 0, 640, 480)


def test_box_to_pixels_rounds_half_up_and_clamps() -> None:
    # 500 -> 166.5 -> 167 (round-half-even would give 166), 501 -> 166.833 -> 167, 503 -> 167.499 -> 167
    assert box_to_pixels((500, 500, 501, 503), 333, 333) == (167, 167, 167, 167)
    assert box_to_pixels((-50, -1, 1200, 1001), 400, 200) == (0, 0, 400, 200)


def test_box_to_pixels_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0x10"):
        box_to_pixels((0, 0, 1, 1), 0, 10)
    with pytest.raises(ValueError, match="x1, y1, x2, y2"):
        box_to_pixels((0, 0, 1), 10, 10)


# ---------------------------------------------------------------- crops


def test_crop_of_a_drawn_rectangle_has_its_size_and_colour() -> None:
    image = scene()
    (crop,) = crops_from_boxes(image, [(250, 250, 550, 650)])
    assert crop.size == (120, 80)
    assert is_all(crop, RED)
    # one pixel wider on each side takes in white: the crop sits exactly on the rectangle
    (wider,) = crops_from_boxes(image, [(248, 245, 552, 655)])
    assert wider.size == (122, 82) and not is_all(wider, RED)


def test_crops_come_from_the_original_resolution() -> None:
    big = scene(4000, 2000)  # same rectangle in pixels, so 10x smaller in 0-1000 terms
    (crop,) = crops_from_boxes(big, [25, 25, 55, 65])  # a single box works too
    assert crop.size == (120, 80)
    assert is_all(crop, RED)


def test_several_boxes_keep_their_order() -> None:
    crops = crops_from_boxes(scene(), [[250, 250, 550, 650], [0, 0, 100, 100]])
    assert [c.size for c in crops] == [(120, 80), (40, 20)]
    assert is_all(crops[0], RED) and is_all(crops[1], WHITE)


def test_tiny_crops_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    image = Image.new("RGB", (1000, 1000), WHITE)
    with caplog.at_level(logging.DEBUG, logger="embedrl.tcot.evidence"):
        crops = crops_from_boxes(image, [[0, 0, 9, 100], [0, 0, 100, 9], [0, 0, 10, 10], [50, 50, 40, 60]])
    assert [c.size for c in crops] == [(10, 10)]  # exactly min_size is kept; inverted box dropped
    dropped = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(dropped) == 3 and all("min_size=10" in m for m in dropped)
    assert "9x100 px" in dropped[0]


def test_extreme_aspect_crops_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    image = Image.new("RGB", (2000, 1000), WHITE)
    with caplog.at_level(logging.DEBUG, logger="embedrl.tcot.evidence"):
        # 2000 x 20 px: aspect 100; 2000 x 40 px: aspect exactly 50 (kept)
        crops = crops_from_boxes(image, [[0, 0, 1000, 20], [0, 0, 1000, 40]])
    assert [c.size for c in crops] == [(2000, 40)]
    assert any("aspect ratio 100.0" in r.getMessage() for r in caplog.records)
    assert crops_from_boxes(image, [[0, 0, 1000, 20]], max_aspect=200.0)[0].size == (2000, 20)
    assert crops_from_boxes(image, [[0, 0, 5, 5]], min_size=5)[0].size == (10, 5)


# ---------------------------------------------------------------- key frames

FRAMES = [f"frame{i}" for i in range(1, 9)]  # FRAMES[0] is frame 1


def test_key_frames_are_one_based() -> None:
    # The paper's public eval code indexes 0-based: key frame 1 must be the FIRST frame, not the second.
    assert frames_from_key_frames(FRAMES, [1]) == ["frame1"]
    assert frames_from_key_frames(FRAMES, [8]) == ["frame8"]
    assert frames_from_key_frames(FRAMES, [3, 1, 6]) == ["frame3", "frame1", "frame6"]


def test_duplicate_key_frames_are_skipped_in_order() -> None:
    assert frames_from_key_frames(FRAMES, [4, 2, 4, 2, 5]) == ["frame4", "frame2", "frame5"]


@pytest.mark.parametrize("index", [0, 9, -1])
def test_out_of_range_key_frame_names_index_and_count(index: int) -> None:
    with pytest.raises(ValueError) as info:
        frames_from_key_frames(FRAMES, [1, index])
    message = str(info.value)
    assert f"key frame {index} " in message and "1..8" in message and "8 sampled frames" in message


@pytest.mark.parametrize("index", [True, 1.0, "1"])
def test_non_integer_key_frame_is_a_type_error(index: object) -> None:
    with pytest.raises(TypeError, match="not an integer"):
        frames_from_key_frames(FRAMES, [index])  # type: ignore[list-item]


def test_numpy_integer_key_frames_work() -> None:
    assert frames_from_key_frames(FRAMES, np.array([2, 7])) == ["frame2", "frame7"]


# ---------------------------------------------------------------- extract_evidence


def test_extract_evidence_from_a_parsed_image_tcot() -> None:
    text = (
        '<thinking>The red block is left of centre. {"bbox_2d": [250, 250, 550, 650]}</thinking>'
        "<rethink>The box covers it.</rethink><answer>red block</answer>"
    )
    evidence = extract_evidence(parse(text, modality="image"), image=scene())
    assert isinstance(evidence, Evidence)
    (crop,) = evidence.images
    assert crop.size == (120, 80) and is_all(crop, RED)
    assert evidence.keywords == []


def test_extract_evidence_combines_crops_frames_and_keywords() -> None:
    tcot = TCoT("t", "r", "a", ["red", "block"], bbox_2d=[(250, 250, 550, 650)], key_frames=[2, 1])
    evidence = extract_evidence(tcot, image=scene(), frames=FRAMES)
    assert evidence.images[0].size == (120, 80)
    assert evidence.images[1:] == ["frame2", "frame1"]
    assert evidence.keywords == ["red", "block"]
    evidence.keywords.append("x")
    assert tcot.text_keywords == ["red", "block"]  # a copy, not the T-CoT's own list


def test_extract_evidence_without_media_keeps_only_keywords() -> None:
    tcot = TCoT("t", "r", "a", text_keywords=["cat"], bbox_2d=[(0, 0, 500, 500)], key_frames=[1])
    assert extract_evidence(tcot) == Evidence(images=[], keywords=["cat"])


def test_extract_evidence_rejects_key_frames_past_the_frames() -> None:
    with pytest.raises(ValueError, match="key frame 5"):
        extract_evidence(TCoT("t", "r", "a", key_frames=[5]), frames=FRAMES[:4])
