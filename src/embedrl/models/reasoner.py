"""The Reasoner: writes a T-CoT for a query or a target, from its media and text.

Its prompt is a chat with one user turn (media, text, an instruction that says which side it writes
for) and the T-CoT as the assistant turn. The `short` prompt style keeps tiny models' prompts short;
`full` uses the detailed prompts of `embedrl.tcot.prompts` (paper-scale Reasoners).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from embedrl.data.sides import MediaStore, SideRef
from embedrl.models.embedder import resize_square

SHORT_INSTRUCTIONS = {
    "query": "Write the T-CoT of this query.",
    "target": "Write the T-CoT of this candidate.",
}


@dataclass(frozen=True)
class ReasonerImageSizes:
    """The Reasoner sees sharper media than the Embedder: it must find the fine evidence."""

    image: int = 224
    frame: int = 56


def reasoner_messages(ref: SideRef, role: str, *, style: str = "short", num_frames: int | None = None) -> list[dict]:
    """The chat prompt (trl / HF conversational format) for one side."""
    if style == "full":
        from embedrl.tcot.prompts import tcot_system_prompt, tcot_user_text

        system = tcot_system_prompt(role, ref.modality, num_frames=num_frames)
        text = tcot_user_text(role, ref.clean_text)
        parts = [{"type": "image"} for _ in range(num_frames or 1)] if ref.media_path else []
        return [{"role": "system", "content": system},
                {"role": "user", "content": parts + [{"type": "text", "text": text}]}]
    n_images = (num_frames or 1) if ref.media_path else 0
    text = f"{ref.clean_text}\n{SHORT_INSTRUCTIONS[role]}" if ref.clean_text else SHORT_INSTRUCTIONS[role]
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def reasoner_images(ref: SideRef, store: MediaStore, sizes: ReasonerImageSizes | None = None) -> list[Image.Image]:
    sizes = sizes or ReasonerImageSizes()
    media = store.load(ref)
    size = sizes.frame if ref.media_kind == "video" else sizes.image
    return [resize_square(m, size) for m in media]


class Reasoner:
    """Batched greedy (or sampled) T-CoT generation with a Qwen-VL and its processor."""

    def __init__(self, model, processor, *, style: str = "short", max_new_tokens: int = 96,
                 sizes: ReasonerImageSizes | None = None):
        self.model = model
        self.processor = processor
        self.style = style
        self.max_new_tokens = max_new_tokens
        self.sizes = sizes or ReasonerImageSizes()
        self.processor.tokenizer.padding_side = "left"

    @classmethod
    def load(cls, model_dir, **kwargs) -> Reasoner:
        from embedrl.models.factory import load_model

        model, processor = load_model(model_dir)
        return cls(model, processor, **kwargs)

    def prompt_text(self, ref: SideRef, role: str, num_frames: int | None) -> str:
        messages = reasoner_messages(ref, role, style=self.style, num_frames=num_frames)
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.no_grad()
    def generate(self, refs: Sequence[SideRef], roles: Sequence[str], store: MediaStore, *,
                 batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0,
                 min_p: float | None = None) -> list[str]:
        outputs: list[str] = []
        for start in range(0, len(refs), batch_size):
            chunk = list(zip(refs[start:start + batch_size], roles[start:start + batch_size], strict=True))
            texts, images = [], []
            for ref, role in chunk:
                media = reasoner_images(ref, store, self.sizes)
                texts.append(self.prompt_text(ref, role, len(media) if ref.media_kind == "video" else None))
                images.extend(media)
            batch = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
            generated = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, do_sample=do_sample,
                temperature=temperature if do_sample else None, top_p=None, top_k=None,
                min_p=min_p if do_sample else None,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
            new_tokens = generated[:, batch["input_ids"].shape[1]:]
            outputs += self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [o.strip() for o in outputs]
