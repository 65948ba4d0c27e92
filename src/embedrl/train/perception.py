"""Perception curriculum for a Reasoner built from scratch (the tiny profile).

The paper's Reasoner is a pretrained Qwen3-VL: it already sees small details and can point at the
region that holds one. The tiny Reasoner starts from random weights, and its SFT cold start on teacher
traces never learns to look at the region crops (measured: docs/STATUS.md, issue 3). This module
stands in for that pretraining with two kinds of examples drawn from the training split's scene
annotations (objects with boxes and a `detail`, e.g. MiniMMEB's dot), never from the RL or eval split:

- detail: one region crop alone, "Does it carry a dot?" -> "yes" / "no" (one crop with the detail and
  one without, per image). Trained first, on its own, for `SFTStageConfig.perception_steps` steps: the
  loss sits at chance for a couple of hundred steps before the model starts reading the crop.
- grounding: which region carries the detail, in one of two forms (`SFTStageConfig.grounding_form`):
  "question", the Reasoner's own grounded prompt with the question "Which region carries the dot?" -> "#k";
  or "trace", its own T-CoT prompt -> the gold T-CoT in mark form ("... The #k carries the dot ..."), so
  that the pointer is learned at the very position where a trace names its region. Trained alone after
  the detail phase (`grounding_steps`) and mixed into the cold start (`grounding_copies`). With the
  question form the cold start had to carry the pointer over to the trace's mark, and whether it did
  depended on the data order (first marks on the dot 34-78%, some orders at chance); the trace form bound
  89-91% in three orders of three (docs/STATUS.md, issue 3, session 12). With `SFTStageConfig.grounding_video`
  (trace form only) each video clip whose flash is in view gives one more example: its T-CoT prompt -> the
  gold T-CoT naming the flashing object and the flash frame. A flash is an object drawn white on a light
  canvas, i.e. an object that vanishes for one frame: it shows only against the other frames, so no
  one-frame question can teach it (measured: "Does it show a flash?" on single frames stayed at chance
  for 400 steps; docs/STATUS.md, issue 3, session 13).
- track: one object's track strip alone (its crop in every frame of a clip side, `ReasonerPrompt.track_size`),
  "Which frame flashes?" -> "frame F" for the flashing object, "none" for another object of the same side.
  In a strip the flash is one cell unlike the others, where in a whole 56 px frame it is a few pixels.
  Trained after the detail phase for `SFTStageConfig.track_steps` steps, with the detail examples
  replayed (alone, 1200 strip steps erased the dot: first marks on the dotted region 92% -> 20%), so that
  the clips' grounding examples can point at the object whose strip flashes. With `SFTStageConfig.track_form`
  "prompt" the question is asked in the clip's own grounded prompt about a mark ("Which frame does #k flash
  in?"): the hop a trace takes when it writes the frame after the flashing object's mark (with the strip
  alone, the traces' frames stayed near chance: docs/STATUS.md, issue 3, session 15).

Images whose scene does not have exactly one object with the detail give no example (counted, logged).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedrl.data.sides import MediaStore, SideRef
from embedrl.models.reasoner import (
    ReasonerPrompt,
    completion_for,
    reasoner_input,
    side_regions,
)
from embedrl.tcot import render
from embedrl.tcot.regions import MAX_REGIONS, region_crops, region_proposals, track_strips
from embedrl.tcot.teachers import (
    flash_frame,
    names_disambiguating_evidence,
    side_gold_tcot,
    side_teacher_tcot,
)
from embedrl.train.embedder import load_pairs

log = logging.getLogger(__name__)

DETAIL_QUESTION = "Does it carry a {detail}?"
GROUNDING_QUESTION = "Which region carries the {detail}?"
TRACK_QUESTION = "Which frame flashes?"
TRACK_MARK_QUESTION = "Which frame does #{mark} flash in?"
TRACK_WHICH_QUESTION = "Which object flashes?"
NO_FLASH = "none"
GROUNDING_FORMS = ("question", "trace")
GROUNDING_TRACES = ("gold", "teacher", "teacher_all")
TRACK_FORMS = ("strip", "prompt", "which")


@dataclass(frozen=True)
class DetailImage:
    """An image side whose scene marks exactly one of its regions with a detail."""

    ref: SideRef
    detail: str
    mark: int  # 1-based index of the region with the detail


def detail_images(data_root: str | Path, split: str = "train") -> Iterator[DetailImage]:
    """Each distinct image of the split with exactly one detailed object among its listed regions."""
    skipped = 0
    for ref in _distinct_sides(data_root, split, "image"):
        found = single_detail(ref.scene)
        if found is None:
            skipped += 1
            continue
        yield DetailImage(ref, *found)
    if skipped:
        log.info("perception examples: %d images of split %s have no single detailed object", skipped, split)


def single_detail(scene: dict) -> tuple[str, int] | None:
    objects = scene.get("objects", [])[:MAX_REGIONS]
    marked = [(index, o["detail"]) for index, o in enumerate(objects, 1) if o.get("detail")]
    if len(marked) != 1:
        return None
    mark, detail = marked[0]
    return detail, mark


@dataclass(frozen=True)
class FlashClip:
    """A video side whose flash falls inside its frames."""

    ref: SideRef
    frame: int  # 1-based index of the flash among the side's frames


def flash_clips(data_root: str | Path, split: str = "train") -> Iterator[FlashClip]:
    """Each distinct video (or segment) of the split whose flash is in view."""
    for ref in _distinct_sides(data_root, split, "video"):
        frame = flash_frame(ref.scene)
        if frame is not None:
            yield FlashClip(ref, frame)


def flashless_clips(data_root: str | Path, split: str = "train") -> Iterator[SideRef]:
    """Each distinct video (or segment) of the split, hard negatives included, whose flash is out of view:
    in MiniMMEB, the Moment-Flash negatives (segments of the clip outside the flash)."""
    for ref in _distinct_sides(data_root, split, "video", negatives=True):
        if flash_frame(ref.scene) is None:
            yield ref


def _distinct_sides(data_root: str | Path, split: str, kind: str, *, negatives: bool = False) -> Iterator[SideRef]:
    """Each side of the split (with `negatives`, each hard negative too) whose media and scene are of `kind`,
    once per media file."""
    seen: set[str] = set()
    for pairs in load_pairs(data_root, split).values():
        for pair in pairs:
            for ref in (pair.query, pair.positive, *([pair.negative] if negatives and pair.negative else [])):
                if ref.media_kind == kind and (ref.scene or {}).get("type") == kind and ref.media_path not in seen:
                    seen.add(ref.media_path)
                    yield ref


def detail_examples(data_root: str | Path, prompt: ReasonerPrompt, *, seed: int = 0,
                    split: str = "train") -> list[dict]:
    """One crop with the detail ("yes") and one random crop without ("no") per image, shuffled."""
    store = MediaStore(data_root)
    rng = random.Random(seed)
    examples = []
    for image in detail_images(data_root, split):
        regions = side_regions(image.ref, prompt) or region_proposals(image.ref.scene)
        crops = region_crops(store.load(image.ref)[0], regions, prompt.region_size)
        plain = [crop for index, crop in enumerate(crops, 1) if index != image.mark]
        question = DETAIL_QUESTION.format(detail=image.detail)
        examples.append(_example([{"type": "image"}], question, "yes", [crops[image.mark - 1]]))
        if plain:
            examples.append(_example([{"type": "image"}], question, "no", [rng.choice(plain)]))
    rng.shuffle(examples)
    return examples


def track_examples(data_root: str | Path, prompt: ReasonerPrompt, *, seed: int = 0,
                   split: str = "train", form: str = "strip", flashless: bool = False) -> list[dict]:
    """Per clip side with its flash in view, two examples, shuffled: the flashing object -> "frame F", and
    another object of the same side -> "none". Form "strip": the object's track strip alone, "Which frame
    flashes?". Form "prompt": the clip's own grounded prompt (its frames, region lines and every strip),
    "Which frame does #k flash in?": the hop from a mark to its strip, which a trace takes when it writes
    the frame after the flashing object's mark. Form "which": one example per side, its own prompt asked
    "Which object flashes?" -> "#k" (or "none"): the choice a trace makes at its first mark. Forms joined by
    "+" (`track_forms`) give each form's examples of every side. With
    `flashless`, also the clip sides whose flash is out of view (`flashless_clips`): one of their objects ->
    "none" (form "which": the side -> "none")."""
    if prompt.track_size <= 0:
        raise ValueError("track examples need track strips in the prompt (sft.reasoner_track_size > 0)")
    forms = track_forms(form)
    store = MediaStore(data_root)
    rng = random.Random(seed)
    examples = []
    for ref, asked in _track_questions(data_root, split, rng, flashless):
        for each in forms:
            examples += _track_form_examples(each, ref, asked, store, prompt)
    rng.shuffle(examples)
    return examples


def track_forms(form: str) -> list[str]:
    """The forms a track phase mixes: one of TRACK_FORMS, or several joined by "+" (e.g. "strip+which": the
    strip alone, after which the grounding phase binds the image traces' marks, and the clip's own prompt
    asked which object flashes; docs/STATUS.md, issue 3, session 28)."""
    forms = form.split("+")
    if any(each not in TRACK_FORMS for each in forms) or len(set(forms)) != len(forms):
        raise ValueError(f"track form {form!r}: expected one of {TRACK_FORMS}, or several of them joined by '+'")
    return forms


def _track_form_examples(form: str, ref: SideRef, asked: list[tuple[int, str]], store: MediaStore,
                         prompt: ReasonerPrompt) -> list[dict]:
    if form == "strip":
        strips = track_strips(store.load(ref), ref.scene, prompt.track_size)
        return [_example([{"type": "image"}], TRACK_QUESTION, answer, [strips[index]]) for index, answer in asked]
    messages, images = reasoner_input(ref, "query", store, prompt)
    if form == "which":
        flashing = next((f"#{index + 1}" for index, answer in asked if answer != NO_FLASH), NO_FLASH)
        return [_asked(messages, TRACK_WHICH_QUESTION, flashing, images)]
    return [_asked(messages, TRACK_MARK_QUESTION.format(mark=index + 1), answer, images) for index, answer in asked]


def _track_questions(data_root, split: str, rng: random.Random,
                     flashless: bool) -> Iterator[tuple[SideRef, list[tuple[int, str]]]]:
    """Per clip side, the objects asked about (0-based; object i is region mark i + 1) and their answers."""
    for clip in flash_clips(data_root, split):
        flashing = clip.ref.scene["event"]["object"]
        n_objects = min(len(clip.ref.scene["objects"]), MAX_REGIONS)
        if flashing >= n_objects:
            continue
        others = [index for index in range(n_objects) if index != flashing]
        yield clip.ref, [(flashing, f"frame {clip.frame}")] + ([(rng.choice(others), NO_FLASH)] if others else [])
    for ref in (flashless_clips(data_root, split) if flashless else ()):
        yield ref, [(rng.randrange(min(len(ref.scene["objects"]), MAX_REGIONS)), NO_FLASH)]


def grounding_examples(data_root: str | Path, prompt: ReasonerPrompt, *, split: str = "train",
                       form: str = "question", video: bool = False, traces: str = "gold",
                       flashless: bool = False) -> list[dict]:
    """Which region carries the detail, per detailed image of the split: the grounding question -> "#k"
    (form "question"), or the T-CoT prompt -> a T-CoT in mark form (form "trace"); with `video` (trace
    form), also each clip with its flash in view -> its T-CoT (the flashing object's mark and the flash
    frame). The trace form's T-CoT is the gold one (`traces` "gold"), or the oracle teacher's, on the sides
    where it holds the evidence (`traces` "teacher"; the others give no example): the pointer is learned
    where a trace names its region, but which sides get the evidence stays the teacher's policy, as in
    the cold start's data, and is left for EG-RL to improve. `traces` "teacher_all": the teacher's trace on
    every side, its misses included, so its rule for when it names the evidence is shown as well. With
    `flashless` (video only), also each clip side whose flash is out of view (`flashless_clips`) -> its trace,
    which names an object's motion: the only sides where a trace without a flash is right because there is
    none to see, not because the teacher is blind to it."""
    if form not in GROUNDING_FORMS:
        raise ValueError(f"grounding form {form!r}: expected one of {GROUNDING_FORMS}")
    if traces not in GROUNDING_TRACES:
        raise ValueError(f"grounding traces {traces!r}: expected one of {GROUNDING_TRACES}")
    if not prompt.grounded:
        raise ValueError("grounding examples need a grounded Reasoner prompt (sft.grounded: true): "
                         "the answer is a region mark")
    if video and form != "trace":
        raise ValueError("video grounding examples are traces: they need form 'trace'")
    if flashless and not video:
        raise ValueError("flashless grounding examples are video examples: they need video=True")
    store = MediaStore(data_root)
    sides = [(image.ref, image) for image in detail_images(data_root, split)]
    sides += [(clip.ref, None) for clip in (flash_clips(data_root, split) if video else ())]
    sides += [(ref, None) for ref in (flashless_clips(data_root, split) if flashless else ())]
    examples, blind = [], 0
    for ref, image in sides:
        messages, images = reasoner_input(ref, "query", store, prompt)
        if form == "question":
            examples.append(_asked(messages, GROUNDING_QUESTION.format(detail=image.detail), f"#{image.mark}",
                                   images))
            continue
        tcot = side_gold_tcot(ref) if traces == "gold" else side_teacher_tcot(ref)
        if traces == "teacher" and not names_disambiguating_evidence(tcot, ref.scene):
            blind += 1
            continue
        examples.append({"prompt": messages,
                         "completion": [{"role": "assistant", "content": completion_for(ref, render(tcot), prompt)}],
                         "images": images})
    if blind:
        log.info("grounding examples: %d of %d sides skipped: the teacher's trace misses their evidence",
                 blind, len(sides))
    return examples


def _asked(messages: list[dict], question: str, answer: str, images: list) -> dict:
    """A side's own prompt with its closing instruction replaced by `question`."""
    content = list(messages[-1]["content"])
    content[-1] = {"type": "text", "text": "\n" + question}
    return {"prompt": messages[:-1] + [{"role": "user", "content": content}],
            "completion": [{"role": "assistant", "content": answer}], "images": images}


def _example(media: list[dict], question: str, answer: str, images: list) -> dict:
    return {"prompt": [{"role": "user", "content": media + [{"type": "text", "text": question}]}],
            "completion": [{"role": "assistant", "content": answer}],
            "images": images}
