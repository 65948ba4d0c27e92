"""The Reasoner: writes a T-CoT for a query or a target, from its media and text.

Its prompt is a chat with one user turn (media, text, the region proposals when grounded, an instruction
that says which side it writes for) and the T-CoT as the assistant turn; `ReasonerPrompt` holds the
settings.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from embedrl.data.sides import MediaStore, SideRef
from embedrl.models.embedder import resize_square
from embedrl.tcot.regions import (
    Region,
    region_crops,
    region_proposals,
    resolve_marks,
    text_regions,
    to_marks,
    track_strips,
)

SHORT_INSTRUCTIONS = {
    "query": "Write the T-CoT of this query.",
    "target": "Write the T-CoT of this candidate.",
}
REGIONS_HEADER = "Regions:"


@dataclass(frozen=True)
class ReasonerPrompt:
    """How the Reasoner's input is built. Set at SFT time and saved with the model (embedrl.json), so
    EG-RL and evaluation prompt the Reasoner exactly as it was trained.

    style: `short` keeps tiny models' prompts short; `full` uses the detailed prompts of
    `embedrl.tcot.prompts` (paper-scale Reasoners). grounded: list the region proposals of the input
    (embedrl.tcot.regions), each with its words, its box when `region_boxes`, and for images a sharp
    crop of `region_size` px; the Reasoner then writes marks (`#k`) for regions, resolved into the
    region's words and box before anything reads its T-CoT (`Reasoner.resolve`); with `back_references`
    it writes each repeat of its first mark as `#=` (one region choice per trace, embedrl.tcot.regions);
    with `text_regions` a text side's keywords are listed and marked too. With `track_size` > 0 each object of
    a grounded clip also comes with its track strip (embedrl.tcot.regions.track_strips: its crop in every
    frame, `track_size` px each), as each image region comes with its crop.
    The Reasoner sees sharper media than the Embedder: it must find the fine evidence.
    """

    style: str = "short"
    image_size: int = 224
    frame_size: int = 56
    grounded: bool = False
    region_size: int = 56
    region_boxes: bool = True
    back_references: bool = False
    text_regions: bool = False
    track_size: int = 0

    def __post_init__(self) -> None:
        if self.style not in ("short", "full"):
            raise ValueError(f"ReasonerPrompt.style={self.style!r}: expected 'short' or 'full'")
        if self.track_size < 0:
            raise ValueError(f"ReasonerPrompt.track_size={self.track_size}: expected >= 0 (0 = no track strips)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> ReasonerPrompt:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    @classmethod
    def of_model(cls, model_dir) -> ReasonerPrompt:
        """The prompt a saved Reasoner was trained with (defaults for a model without that record)."""
        meta_path = Path(model_dir) / "embedrl.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return cls.from_dict(meta.get("reasoner_prompt"))


def side_regions(ref: SideRef, prompt: ReasonerPrompt) -> list[Region]:
    if not prompt.grounded:
        return []
    if ref.media_path:
        return region_proposals(ref.scene)
    return text_regions(ref.clean_text) if prompt.text_regions and ref.clean_text else []


def completion_for(ref: SideRef, tcot_text: str, prompt: ReasonerPrompt) -> str:
    """What the Reasoner is trained to write for a full T-CoT: its mark form when grounded."""
    return to_marks(tcot_text, side_regions(ref, prompt), back_references=prompt.back_references)


def resolve_completion(ref: SideRef, text: str, prompt: ReasonerPrompt) -> str:
    """The full T-CoT of what the Reasoner wrote (marks resolved when grounded)."""
    return resolve_marks(text, side_regions(ref, prompt))


def _has_region_crops(ref: SideRef) -> bool:
    return ref.media_kind == "image" and (ref.scene or {}).get("type") in ("image", "crop")


def _has_track_strips(ref: SideRef, prompt: ReasonerPrompt) -> bool:
    return (prompt.grounded and prompt.track_size > 0 and ref.media_kind == "video"
            and (ref.scene or {}).get("type") == "video")


def reasoner_messages(ref: SideRef, role: str, prompt: ReasonerPrompt | None = None, *,
                      num_frames: int | None = None) -> list[dict]:
    """The chat prompt (trl / HF conversational format) for one side."""
    prompt = prompt or ReasonerPrompt()
    n_media = (num_frames or 1) if ref.media_path else 0
    media = [{"type": "image"} for _ in range(n_media)]
    region_parts = _region_parts(ref, prompt)
    if prompt.style == "full":
        from embedrl.tcot.prompts import tcot_system_prompt, tcot_user_text

        system = tcot_system_prompt(role, ref.modality, num_frames=num_frames)
        text = tcot_user_text(role, ref.clean_text)
        return [{"role": "system", "content": system},
                {"role": "user", "content": media + region_parts + [{"type": "text", "text": text}]}]
    text = f"{ref.clean_text}\n" if ref.clean_text else ""
    if region_parts:
        return [{"role": "user", "content": media + [{"type": "text", "text": text + REGIONS_HEADER}] + region_parts
                 + [{"type": "text", "text": "\n" + SHORT_INSTRUCTIONS[role]}]}]
    return [{"role": "user", "content": media + [{"type": "text", "text": text + SHORT_INSTRUCTIONS[role]}]}]


def _region_parts(ref: SideRef, prompt: ReasonerPrompt) -> list[dict]:
    regions = side_regions(ref, prompt)
    with_crop, with_track = _has_region_crops(ref), _has_track_strips(ref, prompt)
    parts: list[dict] = []
    for index, region in enumerate(regions, 1):
        parts.append({"type": "text", "text": "\n" + region.line(index, with_box=prompt.region_boxes)})
        if (with_crop and region.box_2d is not None) or with_track:
            parts.append({"type": "image"})
    return parts


def reasoner_images(ref: SideRef, store: MediaStore, prompt: ReasonerPrompt | None = None) -> list[Image.Image]:
    """The images of the prompt, in order: the media, then one crop per boxed region (grounded images) or one
    track strip per object (grounded clips with `track_size`)."""
    prompt = prompt or ReasonerPrompt()
    media = store.load(ref)
    size = prompt.frame_size if ref.media_kind == "video" else prompt.image_size
    images = [resize_square(m, size) for m in media]
    if media and _has_region_crops(ref):
        images += region_crops(media[0], side_regions(ref, prompt), prompt.region_size)
    if media and _has_track_strips(ref, prompt):
        images += track_strips(media, ref.scene, prompt.track_size)
    return images


def reasoner_input(ref: SideRef, role: str, store: MediaStore,
                   prompt: ReasonerPrompt | None = None) -> tuple[list[dict], list[Image.Image]]:
    """The chat prompt of one side and its images, placeholders and images in the same order (a clip's
    frames counted apart from its track strips)."""
    prompt = prompt or ReasonerPrompt()
    images = reasoner_images(ref, store, prompt)
    return reasoner_messages(ref, role, prompt, num_frames=store.num_frames(ref)), images


class Reasoner:
    """Batched greedy (or sampled) T-CoT generation with a Qwen-VL and its processor."""

    def __init__(self, model, processor, *, prompt: ReasonerPrompt | None = None, max_new_tokens: int = 96):
        self.model = model
        self.processor = processor
        self.prompt = prompt or ReasonerPrompt()
        self.max_new_tokens = max_new_tokens
        self.source_dir: Path | None = None
        self.processor.tokenizer.padding_side = "left"

    @classmethod
    def load(cls, model_dir, **kwargs) -> Reasoner:
        """A saved Reasoner, prompted as it was trained (its `reasoner_prompt` record) unless `prompt=` says."""
        from embedrl.models.embedder import inference_device
        from embedrl.models.factory import load_model

        model, processor = load_model(model_dir)
        kwargs.setdefault("prompt", ReasonerPrompt.of_model(model_dir))
        reasoner = cls(model.to(inference_device()), processor, **kwargs)
        reasoner.source_dir = Path(model_dir)  # names its trace cache (embedrl.eval.cache)
        return reasoner

    def chat_input(self, ref: SideRef, role: str, store: MediaStore) -> tuple[str, list[Image.Image]]:
        """The templated prompt text of one side and its images."""
        messages, images = reasoner_input(ref, role, store, self.prompt)
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), images

    @torch.no_grad()
    def generate(self, refs: Sequence[SideRef], roles: Sequence[str], store: MediaStore, *,
                 batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0,
                 min_p: float | None = None, resolve: bool = True) -> list[str]:
        """The Reasoner's T-CoT for each side; `resolve=False` keeps a grounded Reasoner's marks as written."""
        outputs: list[str] = []
        for start in range(0, len(refs), batch_size):
            chunk = list(zip(refs[start:start + batch_size], roles[start:start + batch_size], strict=True))
            texts, images = [], []
            for ref, role in chunk:
                text, media = self.chat_input(ref, role, store)
                texts.append(text)
                images.extend(media)
            batch = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
            batch = batch.to(self.model.device)
            generated = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, do_sample=do_sample,
                temperature=temperature if do_sample else None, top_p=None, top_k=None,
                min_p=min_p if do_sample else None,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
            new_tokens = generated[:, batch["input_ids"].shape[1]:]
            outputs += self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        if not resolve:
            return [o.strip() for o in outputs]
        return [resolve_completion(ref, o.strip(), self.prompt) for ref, o in zip(refs, outputs, strict=True)]
