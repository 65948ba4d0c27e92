"""T-CoT teachers for MiniMMEB: an oracle teacher with input-dependent blind spots, and the gold trace.

The oracle teacher is built like a real teacher model that cannot see some details:

- **dots**: it sees the dark dot on a large object unless the object is dark (crimson, blue), and on a
  small object only when the object is bright (orange, cyan, amber, lime, yellow): a dark dot on a
  dark body has too little contrast. That is 15 of the 24 colour/size kinds, about 60% of scenes.
  When it misses the dot it names the most salient other object (largest, then brightest): evidence
  that is truly there, never an invented object.
- **boxes**: tight, except on irregular silhouettes (star, cross, triangle), where it draws them loose.
- **flashes** (video): a white flash shows on a large object unless the object is already bright
  (amber, lime, yellow), and on a small object only when it is dark. When it misses the flash it
  names the most salient object's motion and points at the first and last frames.
- **pages**: it reads the numbers of the first three table rows only.

Its errors are a fixed function of the input, so a model fine-tuned on its traces inherits them
(SFT cannot average them away) and a reward that depends on the evidence can train them away.
The gold trace always names the disambiguating evidence; it is used only as an upper bound.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from embedrl.data.minimmeb.vocab import COLOURS, DOC_ITEMS, DOC_TOPICS, POSITIONS, SHAPES, SIZES
from embedrl.tcot.format import TCoT

if TYPE_CHECKING:
    from embedrl.data.sides import SideRef

_LOOSE_SHAPES = frozenset({"star", "cross", "triangle"})
_LOOSE_PAD = 0.35  # share of the box size added on every side of a loose box
_PAGE_ROWS_READ = 3


def luminance(colour: str) -> float:
    r, g, b = COLOURS[colour]
    return 0.299 * r + 0.587 * g + 0.114 * b


def sees_dot(obj: dict) -> bool:
    y = luminance(obj["colour"])
    return y > 95 if obj["size"] == "large" else y > 145


def sees_flash(obj: dict) -> bool:
    y = luminance(obj["colour"])
    return y < 160 if obj["size"] == "large" else y < 120


def _salience(obj: dict) -> tuple:
    return (obj["size"] == "large", luminance(obj["colour"]), -obj["id"])


def _label(obj: dict) -> str:
    return f"{obj['size']} {obj['colour']} {obj['shape']}"


def _loose(box: list[int]) -> list[int]:
    x1, y1, x2, y2 = box
    pad_x, pad_y = round((x2 - x1) * _LOOSE_PAD), round((y2 - y1) * _LOOSE_PAD)
    return [max(0, x1 - pad_x), max(0, y1 - pad_y), min(1000, x2 + pad_x), min(1000, y2 + pad_y)]


def _relative(box: list[int], width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (max(0, round(x1 * 1000 / width)), max(0, round(y1 * 1000 / height)),
            min(1000, round(x2 * 1000 / width)), min(1000, round(y2 * 1000 / height)))


_VOCAB = set(COLOURS) | set(SHAPES) | set(SIZES) | set(POSITIONS) | set(DOC_ITEMS) | set(DOC_TOPICS) | {"dot", "flashes"}


def text_keywords(text: str) -> list[str]:
    """The closed-vocabulary words and numbers of a text, in order, without repeats."""
    words = re.findall(r"[a-z]+(?:-[a-z]+)?|\d+(?:\.\d+)?", text.lower())
    out: list[str] = []
    for w in words:
        if (w in _VOCAB or w[0].isdigit()) and w not in out:
            out.append(w)
    return out or words[:3] or ["none"]


class _Writer:
    """Shared shape of both teachers; `gold` switches every blind spot off."""

    def __init__(self, gold: bool):
        self.gold = gold

    def write(self, scene: dict, *, text: str = "") -> TCoT:
        kind = scene.get("type", "text")
        if kind == "text":
            return self._text(text)
        if kind == "image":
            return self._image(scene)
        if kind == "crop":
            return self._crop(scene)
        if kind == "video":
            return self._video(scene)
        if kind == "page":
            return self._page(scene)
        raise ValueError(f"no teacher for a scene of type {kind!r}")

    # -- text
    def _text(self, text: str) -> TCoT:
        keywords = text_keywords(text)
        return TCoT(
            thinking="The text names what to look for.",
            rethink="The keywords carry the request.",
            answer=" ".join(keywords),
            text_keywords=keywords,
        )

    # -- images
    def _pick_object(self, scene: dict) -> dict:
        objects = scene["objects"]
        marked = next((o for o in objects if o["detail"] == "dot"), None)
        if marked is not None and (self.gold or sees_dot(marked)):
            return marked
        candidates = [o for o in objects if o is not marked] or objects
        return max(candidates, key=_salience)

    def _box(self, obj: dict) -> tuple[int, int, int, int]:
        box = list(obj["bbox_2d"])
        if not self.gold and obj["shape"] in _LOOSE_SHAPES:
            box = _loose(box)
        return tuple(box)

    def _image(self, scene: dict) -> TCoT:
        obj = self._pick_object(scene)
        boxes = [self._box(obj)]
        dotted = obj["detail"] == "dot"
        note = "carries the dot" if dotted else "stands out"
        answer = f"{_label(obj)} at the {obj['position']}" + (" with a dot" if dotted else "")
        move_to = scene.get("move_to")
        if move_to is not None:  # composed retrieval: the edit names a second object
            target = scene["objects"][move_to]
            boxes.append(self._box(target))
            answer += f"; dot to the {_label(target)}"
        return TCoT(
            thinking=f"The image shows {len(scene['objects'])} objects. The {_label(obj)} at the {obj['position']} {note}.",
            rethink=f"The box covers the {_label(obj)}.",
            answer=answer,
            bbox_2d=boxes,
        )

    def _crop(self, scene: dict) -> TCoT:
        source = scene["source"]
        obj = source["objects"][scene["object"]]
        x0, y0, x1, y1 = scene["box"]
        ox1, oy1, ox2, oy2 = obj["bbox"]
        box = _relative([ox1 - x0, oy1 - y0, ox2 - x0, oy2 - y0], x1 - x0, y1 - y0)
        dotted = obj["detail"] == "dot"  # a crop is large enough for any reader to see the dot
        return TCoT(
            thinking=f"The picture shows one {_label(obj)}" + (" with a dot." if dotted else "."),
            rethink="The box covers the object.",
            answer=_label(obj) + (" with a dot" if dotted else ""),
            bbox_2d=[box],
        )

    # -- video
    def _video(self, scene: dict) -> TCoT:
        objects = scene["objects"]
        first, last = side_frames(scene)
        flashing = objects[scene["event"]["object"]]
        frame = flash_frame(scene)
        if frame is not None and (self.gold or sees_flash(flashing)):
            label = f"{flashing['colour']} {flashing['shape']}"
            return TCoT(
                thinking=f"The {label} flashes white in frame {frame}.",
                rethink=f"Frame {frame} holds the flash.",
                answer=f"the {label} flashes",
                key_frames=[frame],
            )
        obj = max(objects, key=_salience)
        label = f"{obj['colour']} {obj['shape']}"
        return TCoT(
            thinking=f"The {label} moves {obj['motion']}.",
            rethink="The first and last frames show the motion.",
            answer=f"the {label} moves {obj['motion']}",
            key_frames=sorted({1, last - first + 1}),
        )

    # -- pages
    def _page(self, scene: dict) -> TCoT:
        rows = scene["rows"]
        read = rows if self.gold else rows[:_PAGE_ROWS_READ]
        keywords = [scene["topic"]] + [w for r in read for w in (r["item"], str(r["quantity"]), f"{r['price']}.00")]
        x1 = min(r["bbox_2d"][0] for r in read)
        y1 = min(r["bbox_2d"][1] for r in read)
        x2 = max(r["bbox_2d"][2] for r in read)
        y2 = max(r["bbox_2d"][3] for r in read)
        return TCoT(
            thinking=f"The page is the {scene['title']}; I read {len(read)} of {len(rows)} table rows.",
            rethink="The keywords hold the items and numbers I read.",
            answer=scene["title"],
            text_keywords=keywords,
            bbox_2d=[(x1, y1, x2, y2)],
        )


class OracleTeacher(_Writer):
    """The imperfect teacher whose T-CoTs train the Embedder and the SFT Reasoner."""

    def __init__(self) -> None:
        super().__init__(gold=False)


class GoldWriter(_Writer):
    """The gold T-CoT: always the disambiguating evidence. Only for the evaluation upper bound."""

    def __init__(self) -> None:
        super().__init__(gold=True)


def hide_fine_evidence(scene: dict) -> dict:
    """The scene as a reader blind to its fine evidence sees it: no dot, no flash, no table numbers."""
    kind = scene.get("type")
    if kind == "image":
        return {**scene, "marked": None, "objects": [{**o, "detail": None} for o in scene["objects"]]}
    if kind == "video":
        return {**scene, "event": {**scene["event"], "frame": 0}}
    if kind == "page":
        return {**scene, "rows": scene["rows"][:1]}
    if kind == "crop":
        return {**scene, "source": hide_fine_evidence(scene["source"])}
    return scene


def blind_tcot(scene: dict, *, text: str = "") -> TCoT:
    """The teacher's trace on the scene with its fine evidence hidden: evidence that is present but wrong.

    Used to train the Embedder on the kind of mistaken evidence a Reasoner produces, so that it learns
    to weigh evidence against the pixels instead of trusting it blindly.
    """
    return OracleTeacher().write(hide_fine_evidence(scene), text=text)


def oracle_tcot(scene: dict, *, text: str = "") -> TCoT:
    return OracleTeacher().write(scene, text=text)


def gold_tcot(scene: dict, *, text: str = "") -> TCoT:
    return GoldWriter().write(scene, text=text)


def side_teacher_tcot(side: SideRef) -> TCoT:
    """The oracle teacher's T-CoT of one data side (its blind spots included)."""
    return oracle_tcot(side.scene or {"type": "text"}, text=side.clean_text)


def side_gold_tcot(side: SideRef) -> TCoT:
    """The gold T-CoT of one data side; a side without a scene graph is plain text."""
    return gold_tcot(side.scene or {"type": "text"}, text=side.clean_text)


def side_frames(scene: dict) -> tuple[int, int]:
    """The clip frames a video side shows (first, last; 1-based): its segment, or the whole clip."""
    segment = scene.get("segment")
    return (segment[0], segment[1]) if segment else (1, scene["num_frames"])


def flash_frame(scene: dict) -> int | None:
    """The flash's frame among a video side's frames (1-based), or None when the side does not show it."""
    first, last = side_frames(scene)
    frame = scene["event"]["frame"]
    return frame - first + 1 if first <= frame <= last else None


def names_disambiguating_evidence(tcot: TCoT, scene: dict) -> bool:
    """Does the trace point at the fine evidence of the scene (the dot, the flash, every read cell)?"""
    kind = scene.get("type")
    if kind == "image":
        marked = next((o for o in scene["objects"] if o["detail"] == "dot"), None)
        return marked is not None and _label(marked) in tcot.answer
    if kind == "video":
        frame = flash_frame(scene)
        return frame is None or frame in tcot.key_frames
    if kind == "page":
        return all(str(r["quantity"]) in tcot.text_keywords for r in scene["rows"])
    return True


_COLOUR_SHAPE = re.compile(r"\b(" + "|".join(COLOURS) + r")\s+(" + "|".join(SHAPES) + r")\b")


def names_absent_object(tcot: TCoT, scene: dict) -> bool:
    """Does the trace name a (colour, shape) object that is not in the scene (an invented object)?"""
    objects = scene.get("objects") or scene.get("source", {}).get("objects") or []
    present = {(o["colour"], o["shape"]) for o in objects}
    named = set(_COLOUR_SHAPE.findall(f"{tcot.thinking} {tcot.answer}".lower()))
    return bool(named - present)


_FLASHES = re.compile(_COLOUR_SHAPE.pattern + r"\s+flashes\b")


def names_absent_event(tcot: TCoT, scene: dict) -> bool:
    """Does the trace of a clip side say that an object flashes when that object does not flash in what the side
    shows (no flash in its frames, or another object's)? An invented event, as an absent object is."""
    event = scene.get("event") if scene.get("type") == "video" else None
    named = set(_FLASHES.findall(f"{tcot.thinking} {tcot.answer}".lower())) if event else set()
    if not named:
        return False
    if flash_frame(scene) is None:
        return True
    flashing = scene["objects"][event["object"]]
    return bool(named - {(flashing["colour"], flashing["shape"])})
