"""Evidence for the Embedder: crops of the T-CoT's boxes and the key frames it names.

Boxes are Qwen-VL 0-1000 relative coordinates, rescaled to the original image and cropped from it;
key frames are 1-based indices into the sampled frames; keywords stay text.
"""

from __future__ import annotations

import logging
import math
import numbers
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PIL import Image

from embedrl.tcot.format import COORD_MAX, TCoT

logger = logging.getLogger(__name__)

T = TypeVar("T")

MIN_CROP_SIZE = 10
MAX_CROP_ASPECT = 50.0


def box_to_pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Rescale a 0-1000 box to pixel coordinates of a `width` x `height` image, rounded and clamped to it."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if len(box) != 4:
        raise ValueError(f"a box is [x1, y1, x2, y2], got {list(box)!r}")
    x1, y1, x2, y2 = box
    return (_scale(x1, width), _scale(y1, height), _scale(x2, width), _scale(y2, height))


def _scale(coordinate: float, size: int) -> int:
    # Half up rather than Python's round-half-even, so the rounding does not depend on parity.
    pixel = math.floor(coordinate * size / COORD_MAX + 0.5)
    return min(max(pixel, 0), size)


def crops_from_boxes(
    image: Image.Image,
    boxes: Iterable[Sequence[float]] | Sequence[float],
    *,
    min_size: int = MIN_CROP_SIZE,
    max_aspect: float = MAX_CROP_ASPECT,
) -> list[Image.Image]:
    """Crops of the original `image` for each 0-1000 box (or a single box).

    A crop narrower or lower than `min_size` px, or with max(w, h) / min(w, h) over `max_aspect`, is dropped.
    """
    width, height = image.size
    crops = []
    for i, box in enumerate(_as_boxes(boxes), 1):
        x1, y1, x2, y2 = box_to_pixels(box, width, height)
        crop_w, crop_h = x2 - x1, y2 - y1
        where = f"box {i} {list(box)} -> {crop_w}x{crop_h} px of a {width}x{height} image"
        if crop_w < max(min_size, 1) or crop_h < max(min_size, 1):
            logger.debug("dropping %s: under min_size=%d px", where, min_size)
            continue
        aspect = max(crop_w, crop_h) / min(crop_w, crop_h)
        if aspect > max_aspect:
            logger.debug("dropping %s: aspect ratio %.1f over max_aspect=%.1f", where, aspect, max_aspect)
            continue
        crops.append(image.crop((x1, y1, x2, y2)))
    return crops


def _as_boxes(boxes: Iterable[Any]) -> list[Sequence[float]]:
    boxes = list(boxes)
    if len(boxes) == 4 and all(isinstance(v, numbers.Real) for v in boxes):
        return [boxes]
    return boxes


def frames_from_key_frames(frames: Sequence[T], key_frames: Iterable[int]) -> list[T]:
    """The frames named by 1-based `key_frames` (1 is frames[0]), in order, each once.

    Raises ValueError for an index outside 1..len(frames), TypeError for one that is not an integer.
    """
    picked: list[T] = []
    seen: set[int] = set()
    for key_frame in key_frames:
        try:
            if isinstance(key_frame, bool):
                raise TypeError
            index = operator.index(key_frame)
        except TypeError:
            raise TypeError(f"key frame {key_frame!r} is not an integer") from None
        if not 1 <= index <= len(frames):
            raise ValueError(
                f"key frame {index} is outside 1..{len(frames)}: key frames are 1-based indices "
                f"into the {len(frames)} sampled frames"
            )
        if index in seen:
            continue
        seen.add(index)
        picked.append(frames[index - 1])
    return picked


@dataclass
class Evidence:
    """What the Embedder gets after the original media: crops or key frames, and the cue's keywords."""

    images: list[Any] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)


def extract_evidence(
    tcot: TCoT,
    *,
    image: Image.Image | None = None,
    frames: Sequence[Any] | None = None,
    min_size: int = MIN_CROP_SIZE,
    max_aspect: float = MAX_CROP_ASPECT,
) -> Evidence:
    """Crops of `image` for the boxes, then the key frames picked from `frames`; keywords stay text."""
    images: list[Any] = []
    if image is not None and tcot.bbox_2d:
        images.extend(crops_from_boxes(image, tcot.bbox_2d, min_size=min_size, max_aspect=max_aspect))
    if frames is not None and tcot.key_frames:
        images.extend(frames_from_key_frames(frames, tcot.key_frames))
    return Evidence(images=images, keywords=list(tcot.text_keywords))
