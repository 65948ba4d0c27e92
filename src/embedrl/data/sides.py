"""From records to the things models read: a query, a positive, a candidate ("sides").

A side is text plus its media (one image, the frames of a clip, or nothing), the modality its T-CoT
cue must fit, and the scene graph when the data set keeps one. Media are loaded lazily and cached.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from embedrl.data.paths import frame_paths, resolve_media

MEDIA_TOKENS = ("<|image_1|>", "<|video_1|>")


@dataclass
class SideRef:
    """A side before its media are loaded."""

    text: str
    media_path: str = ""  # relative to the data root; an image file or a frames directory; "" = none
    scene: dict = field(default_factory=dict)

    @property
    def media_kind(self) -> str:
        if not self.media_path:
            return "text"
        return "video" if not Path(self.media_path).suffix else "image"

    @property
    def modality(self) -> str:
        """The T-CoT cue this side needs: text (keywords), image (boxes) or video (key frames)."""
        return {"text": "text", "image": "image", "video": "video"}[self.media_kind]

    @property
    def clean_text(self) -> str:
        text = self.text
        for token in MEDIA_TOKENS:
            text = text.replace(token, "")
        return " ".join(text.split())


class MediaStore:
    """Loads images and frame lists under a data root, with a bounded cache."""

    def __init__(self, root: str | Path, cache_size: int = 4096):
        self.root = Path(root)
        self._load = functools.lru_cache(maxsize=cache_size)(self._load_uncached)

    def _load_uncached(self, rel_path: str) -> tuple[Image.Image, ...]:
        path = resolve_media(self.root, rel_path)
        if path.is_dir():
            return tuple(_read(p) for p in frame_paths(path))
        return (_read(path),)

    def load(self, ref: SideRef) -> list[Image.Image]:
        return list(self._load(ref.media_path)) if ref.media_path else []

    def num_frames(self, ref: SideRef) -> int | None:
        return len(self.load(ref)) if ref.media_kind == "video" else None


def _read(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _scene(row: dict, key: str) -> dict:
    raw = row.get("scene")
    if not raw:
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    return data.get(key) or {}


def train_sides(row: dict) -> tuple[SideRef, SideRef]:
    """(query, positive) of an MMEB-train row."""
    query = SideRef(row["qry"], row.get("qry_image_path") or "", _scene(row, "query"))
    positive = SideRef(row["pos_text"], row.get("pos_image_path") or "", _scene(row, "positive"))
    return query, positive


def eval_sides(row: dict) -> tuple[SideRef, list[SideRef]]:
    """(query, candidates) of an MMEB eval row; the first candidate is the positive."""
    scenes = json.loads(row["scene"]) if row.get("scene") else {}
    candidate_scenes = scenes.get("candidates") or [{}] * len(row["tgt_text"])
    query = SideRef(row["qry_text"] or row.get("qry_inst", ""), row.get("qry_img_path") or "", scenes.get("query") or {})
    candidates = [
        SideRef(text, path or "", scene)
        for text, path, scene in zip(row["tgt_text"], row["tgt_img_path"], candidate_scenes, strict=True)
    ]
    return query, candidates
