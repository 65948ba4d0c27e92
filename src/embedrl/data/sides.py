"""From records to the things models read: a query, a positive, a candidate ("sides").

A side is text plus its media (one image, the frames of a clip, or nothing), the modality its T-CoT
cue must fit, and the scene graph when the data set keeps one. Media are loaded lazily and cached; media
that fail to load raise MediaPathError naming the record and field the side comes from.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from embedrl.data.paths import IMAGE_SUFFIXES, MediaPathError, frame_paths, load_image, resolve_media

MEDIA_TOKENS = ("<|image_1|>", "<|video_1|>")


@dataclass
class SideRef:
    """A side before its media are loaded."""

    text: str
    media_path: str = ""  # relative to the data root; an image file or a frames directory; "" = none
    scene: dict = field(default_factory=dict)
    origin: str = field(default="", compare=False)  # the record and field, for messages: "id=t2 field=qry"

    @property
    def media_kind(self) -> str:
        if not self.media_path:
            return "text"
        # An image file, or else a frames folder, whose name may end in its video's suffix (MVBench: x.mp4/).
        return "image" if Path(self.media_path).suffix.lower() in IMAGE_SUFFIXES else "video"

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


def uniform_frame_indices(n_frames: int, n_wanted: int) -> list[int]:
    """Indices of `n_wanted` frames spread evenly over `n_frames` (first and last included); all when fewer.

    Index i is floor(i * (n_frames - 1) / (n_wanted - 1)), the usual "8 uniformly sampled frames" of
    MMEB-V2 and UVRB, applied to the frames a video's directory holds.
    """
    if n_wanted < 1:
        raise ValueError(f"n_wanted must be >= 1, got {n_wanted}")
    if n_frames <= n_wanted:
        return list(range(n_frames))
    if n_wanted == 1:
        return [0]
    return [i * (n_frames - 1) // (n_wanted - 1) for i in range(n_wanted)]


class MediaStore:
    """Loads images and frame lists under a data root, with a bounded cache.

    `frames_per_video`: keep that many frames of a longer frames directory, evenly spaced
    (`uniform_frame_indices`); None keeps every frame.
    """

    def __init__(self, root: str | Path, cache_size: int = 4096, *, frames_per_video: int | None = None):
        if frames_per_video is not None and frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1 or None, got {frames_per_video}")
        self.root = Path(root)
        self.frames_per_video = frames_per_video
        self._load = functools.lru_cache(maxsize=cache_size)(self._load_uncached)

    def _load_uncached(self, rel_path: str) -> tuple[Image.Image, ...]:
        path = resolve_media(self.root, rel_path)
        if not path.is_dir():
            return (load_image(path),)
        frames = frame_paths(path)
        if not frames:  # a clip of no frames would reach the models as a text side
            raise MediaPathError(rel_path, "frames directory has no image frames")
        if self.frames_per_video is not None:
            frames = [frames[i] for i in uniform_frame_indices(len(frames), self.frames_per_video)]
        return tuple(_load_frame(rel_path, frame) for frame in frames)

    def load(self, ref: SideRef) -> list[Image.Image]:
        if not ref.media_path:
            return []
        try:
            return list(self._load(ref.media_path))
        except MediaPathError as exc:
            where = f"{ref.origin}: " if ref.origin else ""
            raise MediaPathError(ref.media_path, f"{where}{exc.reason}") from exc

    def num_frames(self, ref: SideRef) -> int | None:
        return len(self.load(ref)) if ref.media_kind == "video" else None


def _load_frame(clip: str, frame: Path) -> Image.Image:
    try:
        return load_image(frame)
    except MediaPathError as exc:
        raise MediaPathError(clip, f"frame {frame.name}: {exc.reason}") from exc


def _scenes(row: dict) -> dict:
    raw = row.get("scene")
    if not raw:
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(data, dict):  # the validating readers reject such rows; this guards other callers
        raise ValueError(f"id={row.get('id')} field=scene: expected a JSON object, got {type(data).__name__}")
    return data


def train_sides(row: dict) -> tuple[SideRef, SideRef]:
    """(query, positive) of an MMEB-train row."""
    scenes, rid = _scenes(row), row.get("id")
    query = SideRef(row["qry"], row.get("qry_image_path") or "", scenes.get("query") or {},
                    origin=f"id={rid} field=qry_image_path")
    positive = SideRef(row["pos_text"], row.get("pos_image_path") or "", scenes.get("positive") or {},
                       origin=f"id={rid} field=pos_image_path")
    return query, positive


def train_negative(row: dict) -> SideRef | None:
    """The hard negative of an MMEB-train row, or None when the row has none."""
    if not (row.get("neg_text") or row.get("neg_image_path")):
        return None
    return SideRef(row.get("neg_text") or "", row.get("neg_image_path") or "", _scenes(row).get("negative") or {},
                   origin=f"id={row.get('id')} field=neg_image_path")


def eval_sides(row: dict) -> tuple[SideRef, list[SideRef]]:
    """(query, candidates) of an MMEB eval row; the first candidate is the positive."""
    scenes, rid, n = _scenes(row), row.get("id"), len(row["tgt_text"])
    candidate_scenes = scenes.get("candidates") or [{}] * n
    if len(candidate_scenes) != n:
        raise ValueError(f"id={rid} field=scene: {len(candidate_scenes)} candidate scenes for {n} candidates")
    query = SideRef(row["qry_text"] or row.get("qry_inst", ""), row.get("qry_img_path") or "",
                    scenes.get("query") or {}, origin=f"id={rid} field=qry_img_path")
    sides = zip(row["tgt_text"], row["tgt_img_path"], candidate_scenes, strict=True)
    candidates = [
        SideRef(text, path or "", scene, origin=f"id={rid} field=tgt_img_path[{i}]")
        for i, (text, path, scene) in enumerate(sides)
    ]
    return query, candidates
