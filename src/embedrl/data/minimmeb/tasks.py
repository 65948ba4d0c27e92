"""MiniMMEB task families: how each builds a query, its positive and its near-miss distractors.

Every family hinges on one fine piece of evidence: which object carries the dot (images), which
object flashes in which frame (video), which table cell holds a number (pages). A viewer blind to
that detail still sees everything else, so each pool is built with `k` candidates it cannot tell
apart (the positive and k-1 *confusables*) and others that a careful look at coarse attributes
rules out. `n_confusable` is stored with every pool; mean(1 / n_confusable) is the Hit@1 of a
perfect detail-blind viewer, the ceiling of a raw-input Embedder that cannot resolve the detail.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from embedrl.data.minimmeb.scenes import (
    IMAGE_SIZE,
    NUM_FRAMES,
    Clip,
    Page,
    Scene,
    SceneObject,
    clip_to_dict,
    near_colour,
    object_box,
    page_to_dict,
    render_clip,
    render_page,
    render_scene,
    sample_clip,
    sample_page,
    sample_scene,
    scene_to_dict,
)
from embedrl.data.minimmeb.vocab import COLOUR_NAMES, DOC_ITEMS, DOC_TOPICS, POSITIONS, SHAPES

IMAGE_TOKEN = "<|image_1|>"
VIDEO_TOKEN = "<|video_1|>"


@dataclass
class Side:
    """One side of a pair or one candidate: text and/or media, with its scene graph."""

    text: str
    kind: str  # "text" | "image" | "video" | "page"
    media: Image.Image | list[Image.Image] | None = None
    scene: dict = field(default_factory=dict)


@dataclass
class Pool:
    query: Side
    positive: Side
    distractors: list[Side]  # the k-1 confusables first
    n_confusable: int


def _text(text: str, **scene) -> Side:
    return Side(text, "text", None, {"type": "text", **scene})


def _image(scene: Scene, text: str = "") -> Side:
    return Side(text, "image", render_scene(scene), scene_to_dict(scene))


def _crop(scene: Scene, obj: SceneObject) -> Side:
    x1, y1, x2, y2 = object_box(obj)
    pad = (x2 - x1) // 5
    box = (max(0, x1 - pad), max(0, y1 - pad), min(IMAGE_SIZE, x2 + pad), min(IMAGE_SIZE, y2 + pad))
    crop = render_scene(scene).crop(box)
    return Side("", "image", crop, {"type": "crop", "source": scene_to_dict(scene), "object": obj.id, "box": list(box)})


def _clip(clip: Clip, text: str = "") -> Side:
    return Side(text, "video", render_clip(clip), clip_to_dict(clip))


def _segment(clip: Clip, start: int) -> Side:
    frames = range(start, start + 2)
    scene = {**clip_to_dict(clip), "segment": [start, start + 1]}
    return Side("", "video", render_clip(clip, frames=frames), scene)


def _choose(rng: np.random.Generator, items: list, n: int) -> list:
    if n <= 0 or not items:
        return []
    idx = rng.permutation(len(items))[: min(n, len(items))]
    return [items[i] for i in idx]


def _variants(o: SceneObject) -> list[SceneObject]:
    other_size = "large" if o.size == "small" else "small"
    return [
        dataclasses.replace(o, colour=near_colour(o.colour)),
        dataclasses.replace(o, size=other_size),
        dataclasses.replace(o, colour=near_colour(o.colour), size=other_size),
    ]


def _absent_label_objects(scene: Scene, rng: np.random.Generator, n: int) -> list[SceneObject]:
    """Objects NOT in the scene that are near misses (colour, size) of ones that are, the marked first."""
    present = {(o.shape, o.colour, o.size) for o in scene.objects}
    order = [scene.marked_id] if scene.marked_id is not None else []
    order += [int(i) for i in rng.permutation(len(scene.objects)) if int(i) not in order]
    out: list[SceneObject] = []
    for i in order:
        for variant in _variants(scene.objects[i]):
            key = (variant.shape, variant.colour, variant.size)
            if key not in present and key not in {(x.shape, x.colour, x.size) for x in out}:
                out.append(variant)
    return out[:n]


def _scene_without(rng: np.random.Generator, must_have: SceneObject, absent: SceneObject) -> Scene:
    """A fresh scene holding `must_have` (dotted) and not holding `absent`."""
    for _ in range(100):
        scene = sample_scene(rng, must_have=must_have)
        if scene.find(absent.shape, absent.colour, absent.size) is None:
            return scene.with_dot_on(0)
    raise RuntimeError("could not sample a scene without the absent object")  # pragma: no cover


# ------------------------------------------------------------------------------------ image families
class ImageFamily:
    """Base of the image families: the world is a scene, the target is the marked object."""

    name = ""
    modality = "image"
    meta_task = ""
    instruction = ""

    def base(self, rng: np.random.Generator):
        return sample_scene(rng)

    def targets(self, base: Scene) -> list[int]:
        return [o.id for o in base.objects]

    def retarget(self, base: Scene, target: int) -> Scene:
        return base.with_dot_on(target)

    def pair(self, base: Scene) -> tuple[Side, Side]:
        raise NotImplementedError

    def distractors(self, rng: np.random.Generator, base: Scene, k: int, n: int) -> list[Side]:
        raise NotImplementedError

    def pool(self, rng: np.random.Generator, k: int, n_candidates: int) -> Pool:
        base = self.base(rng)
        query, positive = self.pair(base)
        return Pool(query, positive, self.distractors(rng, base, k, n_candidates - 1), k)


class LabelFamily(ImageFamily):
    """Image query, text candidates naming objects (classification, image-to-text retrieval)."""

    def candidate_text(self, obj: SceneObject) -> str:
        raise NotImplementedError

    def pair(self, base: Scene) -> tuple[Side, Side]:
        marked = base.marked
        return _image(base, f"{IMAGE_TOKEN} {self.instruction}"), _text(self.candidate_text(marked), object=marked.label)

    def distractors(self, rng, base, k, n):
        others = [o for o in base.objects if not o.dotted]
        confusable = _choose(rng, others, k - 1)
        absent = _absent_label_objects(base, rng, n - len(confusable))
        return [_text(self.candidate_text(o), object=o.label) for o in confusable + absent]


class ImageClassification(LabelFamily):
    name, meta_task = "ImgCLS-Marked", "classification"
    instruction = "Represent the given image for classification: which object carries the dot?"

    def candidate_text(self, obj: SceneObject) -> str:
        return obj.label


class ImageToText(LabelFamily):
    name, meta_task = "I2T-Marked", "retrieval"
    instruction = "Find a caption that says which object in this image carries the dot."

    def candidate_text(self, obj: SceneObject) -> str:
        return f"the dot is on the {obj.label} at the {obj.position}"


class VisualQA(ImageFamily):
    name, meta_task = "VQA-Marked", "vqa"
    questions = {
        "colour": "What colour is the object that carries the dot?",
        "shape": "What shape is the object that carries the dot?",
        "position": "Where in the image is the object that carries the dot?",
    }
    values = {"colour": COLOUR_NAMES, "shape": SHAPES, "position": POSITIONS}

    def _attribute(self, base: Scene) -> str:
        return ("colour", "shape", "position")[base.marked.id % 3]

    def pair(self, base):
        attribute = self._attribute(base)
        marked = base.marked
        answer = getattr(marked, attribute)
        query = _image(base, f"{IMAGE_TOKEN} {self.questions[attribute]}")
        query.scene["question"] = attribute
        return query, _text(answer, answer=answer)

    def distractors(self, rng, base, k, n):
        attribute = self._attribute(base)
        answer = getattr(base.marked, attribute)
        present = []
        for o in base.objects:
            value = getattr(o, attribute)
            if value != answer and value not in present:
                present.append(value)
        confusable = _choose(rng, present, k - 1)
        absent = [str(v) for v in rng.permutation(self.values[attribute]) if v != answer and v not in present]
        chosen = confusable + absent[: n - len(confusable)]
        # A crowded scene may leave few absent values (8 objects, 9 places): the list is then shorter than
        # n, topped up to 2 distractors with present values, which are confusables (pool() recounts them).
        chosen += [v for v in present if v not in chosen][: max(0, 2 - len(chosen))]
        return [_text(v, answer=v) for v in chosen]

    def pool(self, rng, k, n_candidates):
        pool = super().pool(rng, k, n_candidates)
        present = {getattr(o, self._attribute_of(pool)) for o in self._scene_of(pool).objects}
        pool.n_confusable = 1 + sum(d.text in present for d in pool.distractors)
        return pool

    def _attribute_of(self, pool: Pool) -> str:
        return pool.query.scene["question"]

    def _scene_of(self, pool: Pool) -> Scene:
        from embedrl.data.minimmeb.scenes import scene_from_dict

        return scene_from_dict(pool.query.scene)


class TextToImage(ImageFamily):
    name, meta_task = "T2I-Marked", "retrieval"
    instruction = "Find the image that matches the description."

    def pair(self, base):
        marked = base.marked
        query = _text(f"{self.instruction} The {marked.label} carries a dot.", object=marked.label)
        return query, _image(base)

    def distractors(self, rng, base, k, n):
        marked = base.marked
        # Confusables: the same scene with the dot elsewhere; they hold the same object, undotted.
        others = [o.id for o in base.objects if not o.dotted]
        sides = [_image(base.with_dot_on(t)) for t in _choose(rng, others, k - 1)]
        # Others: a near miss of the described object (colour, size, then shape) carries the dot, and
        # the described object itself is absent.
        nears = _variants(marked) + [dataclasses.replace(marked, shape=str(s)) for s in rng.permutation(SHAPES)
                                     if s != marked.shape]
        for near in nears[: n - len(sides)]:
            sides.append(_image(_scene_without(rng, near, marked)))
        return sides


class ComposedRetrieval(ImageFamily):
    name, meta_task = "CIR-Marked", "retrieval"

    def _new_target(self, base: Scene) -> SceneObject:
        others = [o for o in base.objects if not o.dotted]
        return others[base.marked.id % len(others)]

    def pair(self, base):
        new = self._new_target(base)
        query = _image(base, f"{IMAGE_TOKEN} Find this scene with the dot moved to the {new.label}.")
        query.scene["move_to"] = new.id
        return query, _image(base.with_dot_on(new.id))

    def distractors(self, rng, base, k, n):
        new = self._new_target(base)
        # Confusables: the same layout with the dot on another object (the query image itself included).
        others = [o.id for o in base.objects if o.id != new.id]
        sides = [_image(base.with_dot_on(t)) for t in _choose(rng, others, k - 1)]
        # Others: another layout where the named object carries the dot.
        while len(sides) < n:
            sides.append(_image(sample_scene(rng, must_have=new).with_dot_on(0)))
        return sides


class Grounding(ImageFamily):
    name, meta_task = "Grounding-Marked", "grounding"
    instruction = "Select the part of the image that shows the object carrying the dot."

    def pair(self, base):
        return _image(base, f"{IMAGE_TOKEN} {self.instruction}"), _crop(base, base.marked)

    def distractors(self, rng, base, k, n):
        others = [o for o in base.objects if not o.dotted]
        confusable = _choose(rng, others, k - 1)
        # Confusables are crops of other present objects drawn WITH a dot: only the query image tells.
        sides = [_crop(base.with_dot_on(o.id), base.with_dot_on(o.id).objects[o.id]) for o in confusable]
        undotted = base.with_dot_on(-1)
        rest = [o for o in others if o not in confusable]
        sides += [_crop(undotted, undotted.objects[o.id]) for o in rest][: n - len(sides)]
        while len(sides) < n:
            stranger = sample_scene(rng)
            sides.append(_crop(stranger, stranger.marked))
        return sides


# ------------------------------------------------------------------------------------ video families
def _clip_label(clip: Clip, object_id: int) -> str:
    o = clip.scene.objects[object_id]
    return f"{o.colour} {o.shape}"


class VideoFamily(ImageFamily):
    modality = "video"

    def base(self, rng):
        return sample_clip(rng)

    def targets(self, base: Clip) -> list[int]:
        return [o.id for o in base.scene.objects]

    def retarget(self, base: Clip, target: int) -> Clip:
        return base.with_flash(target, base.flash_frame)

    def _absent_clip(self, rng, base: Clip) -> Clip:
        """A clip whose flashing object is a near miss of the base's (near colour), the base's absent."""
        flashing = base.scene.objects[base.flash_object]
        near = dataclasses.replace(flashing, colour=near_colour(flashing.colour))
        for _ in range(100):
            clip = sample_clip(rng)
            if any((o.shape, o.colour) == (flashing.shape, flashing.colour) for o in clip.scene.objects):
                continue
            objects = list(clip.scene.objects)
            objects[clip.flash_object] = dataclasses.replace(near, id=clip.flash_object,
                                                             position=objects[clip.flash_object].position)
            if len({o.shape for o in objects}) == len(objects):
                return dataclasses.replace(clip, scene=Scene(tuple(objects), clip.scene.background))
        raise RuntimeError("could not sample a near-miss clip")  # pragma: no cover


class VideoClassification(VideoFamily):
    name, meta_task = "VidCLS-Flash", "classification"
    instruction = "Represent the given video for classification: which object flashes?"

    def pair(self, base):
        label = _clip_label(base, base.flash_object)
        return _clip(base, f"{VIDEO_TOKEN} {self.instruction}"), _text(f"the {label} flashes", object=label)

    def distractors(self, rng, base, k, n):
        others = [o.id for o in base.scene.objects if o.id != base.flash_object]
        labels = [_clip_label(base, t) for t in _choose(rng, others, k - 1)]
        present = {(o.shape, o.colour) for o in base.scene.objects}
        for o in base.scene.objects:
            for colour in (near_colour(o.colour), COLOUR_NAMES[(COLOUR_NAMES.index(o.colour) + 4) % len(COLOUR_NAMES)]):
                label = f"{colour} {o.shape}"
                if (o.shape, colour) not in present and label not in labels:
                    labels.append(label)
        return [_text(f"the {label} flashes", object=label) for label in labels[:n]]


class TextToVideo(VideoFamily):
    name, meta_task = "T2V-Flash", "retrieval"
    instruction = "Find the video clip that matches the description."

    def pair(self, base):
        label = _clip_label(base, base.flash_object)
        return _text(f"{self.instruction} The {label} flashes once.", object=label), _clip(base)

    def distractors(self, rng, base, k, n):
        others = [o.id for o in base.scene.objects if o.id != base.flash_object]
        sides = [_clip(base.with_flash(t, int(rng.integers(1, NUM_FRAMES + 1)))) for t in _choose(rng, others, k - 1)]
        while len(sides) < n:
            sides.append(_clip(self._absent_clip(rng, base)))
        return sides


class MomentRetrieval(VideoFamily):
    name, meta_task = "Moment-Flash", "moment_retrieval"
    segment_starts = (1, 3, 5, 7)

    def _start(self, base: Clip) -> int:
        return max(s for s in self.segment_starts if s <= base.flash_frame)

    def pair(self, base):
        label = _clip_label(base, base.flash_object)
        query = _clip(base, f"{VIDEO_TOKEN} Find the moment when the {label} flashes.")
        return query, _segment(base, self._start(base))

    def distractors(self, rng, base, k, n):
        starts = [s for s in self.segment_starts if s != self._start(base)]
        sides = [_segment(base, s) for s in _choose(rng, starts, k - 1)]
        while len(sides) < n:
            other = self._absent_clip(rng, base)
            sides.append(_segment(other, self.segment_starts[(other.flash_frame - 1) // 2]))
        return sides


# ---------------------------------------------------------------------------------- document family
@dataclass
class Corpus:
    pages: list[Page]


class DocumentFamily:
    """Visual-document retrieval over a global pool with graded relevance.

    relevance 2: the page holding the asked cell; 1: a page of the same topic that lists the same item
    with another number (a digit-blind reader cannot tell it apart); 0: every other page.
    """

    modality = "visdoc"
    meta_task = "visdoc_retrieval"

    def __init__(self, name: str, column: str):
        self.name, self.column = name, column

    def corpus(self, rng: np.random.Generator, n_pages: int) -> list[Page]:
        per_topic = max(1, n_pages // len(DOC_TOPICS))
        pages = []
        for topic in DOC_TOPICS:
            for number in range(1, per_topic + 1):
                pages.append(sample_page(rng, topic, number))
        return pages

    def query_text(self, page: Page, row: int) -> str:
        item, quantity, price = page.rows[row]
        if self.column == "quantity":
            return f"Find the {page.topic} page that lists {quantity} {item}."
        return f"Find the {page.topic} page where {item} cost {price}.00."

    def relevance(self, page: Page, asked: Page, row: int) -> int:
        item, quantity, price = asked.rows[row]
        value = quantity if self.column == "quantity" else price
        hits = [r for r in page.rows if r[0] == item]
        if page.topic != asked.topic or not hits:
            return 0
        exact = any((r[1] if self.column == "quantity" else r[2]) == value for r in hits)
        return 2 if exact else 1

    def page_side(self, page: Page) -> Side:
        return Side("", "page", render_page(page), page_to_dict(page))


IMAGE_FAMILIES = (ImageClassification(), VisualQA(), TextToImage(), ImageToText(), ComposedRetrieval(), Grounding())
VIDEO_FAMILIES = (VideoClassification(), TextToVideo(), MomentRetrieval())
DOCUMENT_FAMILIES = (DocumentFamily("VisDoc-Quantity", "quantity"), DocumentFamily("VisDoc-Price", "price"))
_ = DOC_ITEMS  # the page vocabulary lives in vocab.py
