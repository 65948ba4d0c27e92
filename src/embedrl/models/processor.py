"""Qwen-VL processors that work without torchvision.

The stock Qwen2-VL / Qwen3-VL processors need a video processor, and transformers' video processors
need torchvision, which the CPU build of torch here does not have. These subclasses take no video
processor and use the PIL image processor (`Qwen2VLImageProcessorPil`); a video is given as its
frames, each of which becomes an image. They are registered with `AutoProcessor`, so a directory
saved with one loads back with `AutoProcessor.from_pretrained`.

`load_processor` picks: the stock processor where torchvision works (CUDA images), ours otherwise.
A directory saved with ours names ours and loads ours everywhere (its image processor is the PIL
one), so a model trained on CPU sees the same pixels wherever it is loaded.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from transformers import AutoConfig, AutoProcessor, Qwen2VLConfig, Qwen3VLConfig
from transformers.image_utils import make_flat_list_of_images
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

# Qwen3-VL normalises pixels to [-1, 1]; Qwen2-VL uses the CLIP statistics.
_PIXEL_STATS = {"qwen3_vl": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]), "qwen2_vl": (None, None)}


class _FramesAsImages:
    """Processor mixin: no video processor; `videos=` is turned into images, frame by frame.

    Each video placeholder in the text (``<|vision_start|><|video_pad|><|vision_end|>``, as the chat
    template renders a video part) becomes one image placeholder per frame, and the frames join the
    images in the order their placeholders appear.
    """

    image_token: str
    video_token: str

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # The stock __init__ takes (image_processor, tokenizer, video_processor); `get_attributes`
        # reads *our* signature, so the processor has no video_processor attribute at all.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # transformers saves the backend-neutral name "Qwen2VLImageProcessor" and picks torchvision
        # where it can: keep the PIL backend, so a model sees the same pixels on every machine.
        args = super()._get_arguments_from_pretrained(pretrained_model_name_or_path, processor_dict, **kwargs)
        if not isinstance(args[0], Qwen2VLImageProcessorPil):
            from transformers import AutoImageProcessor

            args[0] = AutoImageProcessor.from_pretrained(
                pretrained_model_name_or_path, backend="pil", **kwargs
            )
        return args

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        if isinstance(images, (list, tuple)):
            # A batch mixing prompts with and without images (trl passes None for the latter): the
            # placeholders in the texts already say which image goes where, so a flat list is enough.
            images = [image for entry in images if entry is not None
                      for image in (entry if isinstance(entry, (list, tuple)) else [entry])] or None
        if videos is not None:
            images, text = self._videos_as_frames(images, text, videos)
        return super().__call__(images=images, text=text, **kwargs)

    def _videos_as_frames(self, images, text, videos) -> tuple[list[Any], list[str]]:
        if text is None:
            raise ValueError("videos need a text with a video placeholder per video (see the chat template)")
        texts = [text] if isinstance(text, str) else list(text)
        image_queue = list(make_flat_list_of_images(images)) if images is not None else []
        video_queue = [list(video) for video in videos]
        start, end = self.tokenizer.convert_ids_to_tokens([self.vision_start_id, self.vision_end_id])
        pattern = re.compile(
            f"(?:{re.escape(start)})?{re.escape(self.video_token)}(?:{re.escape(end)})?|{re.escape(self.image_token)}"
        )
        ordered: list[Any] = []

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == self.image_token:
                if not image_queue:
                    raise ValueError("more image placeholders in the text than images")
                ordered.append(image_queue.pop(0))
                return match.group(0)
            if not video_queue:
                raise ValueError("more video placeholders in the text than videos")
            frames = video_queue.pop(0)
            ordered.extend(frames)
            return (start + self.image_token + end) * len(frames)

        texts = [pattern.sub(replace, sample) for sample in texts]
        if image_queue or video_queue:
            raise ValueError(
                f"{len(image_queue)} image(s) and {len(video_queue)} video(s) have no placeholder in the text"
            )
        return ordered, texts

    @property
    def vision_start_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids("<|vision_start|>")

    @property
    def vision_end_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids("<|vision_end|>")


class EmbedRLQwen3VLProcessor(_FramesAsImages, Qwen3VLProcessor):
    """`Qwen3VLProcessor` without a video processor (no torchvision needed); videos as frames."""


class EmbedRLQwen2VLProcessor(_FramesAsImages, Qwen2VLProcessor):
    """`Qwen2VLProcessor` without a video processor (no torchvision needed); videos as frames."""


PROCESSORS: dict[str, type] = {"qwen3_vl": EmbedRLQwen3VLProcessor, "qwen2_vl": EmbedRLQwen2VLProcessor}
AutoProcessor.register(Qwen3VLConfig, EmbedRLQwen3VLProcessor, exist_ok=True)
AutoProcessor.register(Qwen2VLConfig, EmbedRLQwen2VLProcessor, exist_ok=True)


@functools.cache
def torchvision_available() -> bool:
    """True where torchvision imports (then the stock Qwen-VL processors work)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA build on a CPU torch fails with RuntimeError, not ImportError
        return False
    return True


def make_processor(
    tokenizer,
    *,
    arch: str = "qwen3_vl",
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 224 * 224,
):
    """A torchvision-free processor for a tiny model, around `tokenizer` (whose chat template it takes)."""
    mean, std = _PIXEL_STATS[arch]
    stats = {"image_mean": mean, "image_std": std} if mean is not None else {}
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        patch_size=patch_size,
        temporal_patch_size=temporal_patch_size,
        merge_size=merge_size,
        **stats,
    )
    return PROCESSORS[arch](
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )


def load_processor(name_or_path: str, *, trust_remote_code: bool = False, **kwargs):
    """The processor of a model directory or hub id: stock where torchvision works, ours otherwise.

    A directory saved with one of ours names it in `processor_config.json`, and `AutoProcessor`
    resolves that name through the registration above, with or without torchvision.
    """
    if torchvision_available():
        return AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    cls = PROCESSORS.get(config.model_type)
    if cls is None:
        raise ValueError(
            f"{name_or_path}: no torchvision-free processor for model type {config.model_type!r} "
            f"(have: {', '.join(PROCESSORS)}); install a torchvision that matches torch to use the stock one"
        )
    return cls.from_pretrained(name_or_path, **kwargs)
