"""The Embedder: one L2-normalised vector per input, the last hidden state at the `<emb>` token.

Input, as a chat (method.md): user turn = media, text, then the T-CoT with its evidence media (crops,
key frames) inserted between `</thinking>` and `<rethink>`, then "Summarize the above content in one
word:"; assistant turn = `<emb>`. Without a T-CoT (the `no_cot` variant) the user turn holds media and
text only.

The HF processor runs once per image (its pixels are cached); sequences are then assembled by hand, so
a training step only pads ids and concatenates pixel tensors. Batches are left-padded, which puts
`<emb>` at the last position of every row.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from embedrl.tcot import TCoT, render

log = logging.getLogger(__name__)

SUMMARY_PROMPT = "Summarize the above content in one word:"
IMAGE_SIZES_KEY = "embedder_image_sizes"  # the record in a trained Embedder's embedrl.json
DEFAULT_PATCH_ALIGN = 28  # Qwen2-VL's patch 14 x merge 2, for a processor that does not say


def patch_alignment(processor) -> int:
    """The side of one visual token in pixels (patch size x merge size): image sides are multiples of it."""
    image_processor = processor.image_processor
    patch = getattr(image_processor, "patch_size", None)
    merge = getattr(image_processor, "merge_size", None)
    return patch * merge if patch and merge else DEFAULT_PATCH_ALIGN


@dataclass(frozen=True)
class ImageSizes:
    """Pixel sizes the Embedder sees (best multiples of `patch_alignment`; the processor rounds the rest).
    Fine detail lives below these scales. Set by EmbedderTrainConfig and saved with the trained Embedder
    (embedrl.json), so the reward and evaluation show it images as it was trained on."""

    image: int = 112  # a whole image or page
    frame: int = 56  # each of the 8 frames of a clip
    crop_long_side: int = 56  # evidence crop, aspect kept, longer side
    key_frame: int = 112  # an evidence key frame, seen sharper than the clip's frames

    def __post_init__(self) -> None:
        for name, value in self.to_dict().items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ImageSizes.{name}={value!r}: must be a positive whole number of pixels")

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> ImageSizes:
        return cls(**(data or {}))

    @classmethod
    def of_model(cls, model_dir) -> ImageSizes:
        """The sizes a saved Embedder was trained with (today's defaults for a model without that record)."""
        meta_path = Path(model_dir) / "embedrl.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        try:
            return cls.from_dict(meta.get(IMAGE_SIZES_KEY))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{meta_path}: bad {IMAGE_SIZES_KEY} record ({err}); set it to the sizes the Embedder "
                             f"was trained with, ints for {[f.name for f in dataclasses.fields(cls)]}") from err


@dataclass
class Side:
    """One thing to embed: text, media (one image, or frames), an optional T-CoT and its evidence."""

    text: str
    media: list[Image.Image] = field(default_factory=list)
    media_kind: str = "text"  # "text" | "image" | "video"
    tcot: TCoT | None = None
    evidence: list[Image.Image] = field(default_factory=list)
    evidence_kind: str = "crop"  # "crop" | "frame"


@dataclass
class Encoded:
    input_ids: list[int]
    pixel_values: torch.Tensor | None  # [patches, patch_dim]
    grid_thw: torch.Tensor | None  # [images, 3]


def _aligned(value: float, align: int) -> int:
    return max(align, int(round(value / align)) * align)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    return image.convert("RGB").resize((size, size), Image.BICUBIC)


def resize_long_side(image: Image.Image, long_side: int, align: int) -> Image.Image:
    w, h = image.size
    scale = long_side / max(w, h)
    return image.convert("RGB").resize((_aligned(w * scale, align), _aligned(h * scale, align)), Image.BICUBIC)


class EmbedderInputs:
    """Turns `Side`s into model inputs for the Embedder (and the Reasoner's prompt media)."""

    def __init__(self, processor, *, sizes: ImageSizes | None = None, max_text_tokens: int = 256):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.sizes = sizes or ImageSizes()
        self.max_text_tokens = max_text_tokens
        self.patch_align = patch_alignment(processor)
        merge = getattr(processor.image_processor, "merge_size", 2)
        self.merge_area = merge * merge
        tok = self.tokenizer
        self.image_pad_id = tok.convert_tokens_to_ids("<|image_pad|>")
        self.vision_start_id = tok.convert_tokens_to_ids("<|vision_start|>")
        self.vision_end_id = tok.convert_tokens_to_ids("<|vision_end|>")
        self.emb_id = tok.convert_tokens_to_ids("<emb>")
        if self.emb_id is None or self.emb_id == tok.unk_token_id:
            raise ValueError("the tokenizer has no <emb> token; build models with `embedrl model init`")
        self._head = self._ids("<|im_start|>user\n")
        self._tail = self._ids(f"\n{SUMMARY_PROMPT}<|im_end|>\n<|im_start|>assistant\n") + [self.emb_id]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _text_ids(self, text: str) -> list[int]:
        ids = self._ids(text)
        return ids[: self.max_text_tokens]

    def pixels(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.processor.image_processor(images=[image], return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    def _image_block(self, image: Image.Image, pixels: list, grids: list) -> list[int]:
        values, grid = self.pixels(image)
        pixels.append(values)
        grids.append(grid)
        n_tokens = int(grid.prod()) // self.merge_area
        return [self.vision_start_id] + [self.image_pad_id] * n_tokens + [self.vision_end_id]

    def media_images(self, side: Side) -> list[Image.Image]:
        if side.media_kind == "video":
            return [resize_square(f, self.sizes.frame) for f in side.media]
        return [resize_square(m, self.sizes.image) for m in side.media]

    def evidence_images(self, side: Side) -> list[Image.Image]:
        if side.evidence_kind == "frame":
            return [resize_square(f, self.sizes.key_frame) for f in side.evidence]
        return [resize_long_side(c, self.sizes.crop_long_side, self.patch_align) for c in side.evidence]

    def encode(self, side: Side) -> Encoded:
        pixels: list[torch.Tensor] = []
        grids: list[torch.Tensor] = []
        ids = self._prefix_ids(side, pixels, grids) + self._suffix_ids(side, pixels, grids)
        return _encoded(ids, pixels, grids)

    def encode_prefix(self, side: Side) -> Encoded:
        """The part of `encode(side)` before the T-CoT: chat head, media, text (the same for every trace)."""
        pixels: list[torch.Tensor] = []
        grids: list[torch.Tensor] = []
        return _encoded(self._prefix_ids(side, pixels, grids), pixels, grids)

    def encode_suffix(self, side: Side) -> Encoded:
        """The rest of `encode(side)`: T-CoT with its evidence media, summary prompt, `<emb>`."""
        pixels: list[torch.Tensor] = []
        grids: list[torch.Tensor] = []
        return _encoded(self._suffix_ids(side, pixels, grids), pixels, grids)

    def _prefix_ids(self, side: Side, pixels: list, grids: list) -> list[int]:
        ids = list(self._head)
        for image in self.media_images(side):
            ids += self._image_block(image, pixels, grids)
        return ids + self._text_ids(side.text)

    def _suffix_ids(self, side: Side, pixels: list, grids: list) -> list[int]:
        # Every piece is tokenised on its own, so prefix + suffix ids are exactly the whole side's ids.
        ids: list[int] = []
        if side.tcot is not None:
            thinking, rest = _split_after_thinking(render(side.tcot))
            ids += self._ids("\n") + self._text_ids(thinking)
            for image in self.evidence_images(side):
                ids += self._image_block(image, pixels, grids)
            ids += self._text_ids(rest)
        return ids + self._tail

    def collate(self, encoded: Sequence[Encoded], *, padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Left-padded batch with `<emb>` last in every row (right-padded on request: suffixes after a cache)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        pad_id = self.tokenizer.pad_token_id
        width = max(len(e.input_ids) for e in encoded)
        input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            cols = slice(width - len(e.input_ids), width) if padding_side == "left" else slice(0, len(e.input_ids))
            input_ids[row, cols] = torch.tensor(e.input_ids)
            attention[row, cols] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "mm_token_type_ids": (input_ids == self.image_pad_id).long(),
        }
        with_pixels = [e for e in encoded if e.pixel_values is not None]
        if with_pixels:
            batch["pixel_values"] = torch.cat([e.pixel_values for e in with_pixels])
            batch["image_grid_thw"] = torch.cat([e.grid_thw for e in with_pixels])
        return batch


def _encoded(ids: list[int], pixels: list[torch.Tensor], grids: list[torch.Tensor]) -> Encoded:
    if not pixels:
        return Encoded(ids, None, None)
    return Encoded(ids, torch.cat(pixels), torch.cat(grids))


def _split_after_thinking(text: str) -> tuple[str, str]:
    cut = text.index("</thinking>") + len("</thinking>")
    return text[:cut], text[cut:]


def language_backbone(vlm):
    """The VLM without its LM head (Qwen*VLModel), also through a peft wrapper."""
    model = vlm
    while hasattr(model, "base_model") and model.base_model is not model:
        model = model.base_model
        if hasattr(model, "model") and not hasattr(model, "language_model"):
            model = model.model
    return model.model if hasattr(model, "model") and hasattr(model.model, "language_model") else model


def inference_device() -> torch.device:
    """Where a frozen Embedder runs: the (local) GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class Embedder(torch.nn.Module):
    """Wraps a Qwen-VL: `forward(batch)` returns L2-normalised `<emb>` hidden states [B, D]."""

    def __init__(self, vlm, emb_token_id: int):
        super().__init__()
        self.vlm = vlm
        self.emb_token_id = emb_token_id

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if not bool((batch["input_ids"][:, -1] == self.emb_token_id).all()):
            raise ValueError("every row must end with <emb> (left padding); build batches with EmbedderInputs")
        device = next(self.vlm.parameters()).device
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        backbone = language_backbone(self.vlm)
        out = backbone(**batch, use_cache=False)
        return F.normalize(out.last_hidden_state[:, -1].float(), dim=-1)


def load_embedder(model_dir) -> tuple[Embedder, EmbedderInputs]:
    """A trained Embedder in eval mode on the inference device, with inputs at the image sizes it was trained on."""
    from embedrl.models.factory import load_model

    vlm, processor = load_model(model_dir)
    inputs = EmbedderInputs(processor, sizes=ImageSizes.of_model(model_dir))
    return Embedder(vlm, inputs.emb_id).eval().to(inference_device()), inputs
