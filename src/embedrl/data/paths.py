"""Media paths: resolving them safely inside a data root, listing video frames, checking that media decode."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

from PIL import Image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"})

MediaKind = Literal["image", "frames", "any"]


class MediaPathError(ValueError):
    """A media path that is unsafe, missing, or whose media do not decode; `.path` and `.reason` apart."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        shown = self.path if len(self.path) <= 120 else f"...{self.path[-117:]}"
        super().__init__(f"{shown!r}: {reason}")


def resolve_media(data_root: str | os.PathLike[str], rel_path: str) -> Path:
    """The resolved path of `rel_path` under `data_root`.

    Rejects an empty path, an absolute one, and one that resolves outside the root, whether through `..`
    or through a symbolic link. Does not require the file to exist.
    """
    if not isinstance(rel_path, str):
        raise MediaPathError(repr(rel_path), f"expected a str path, got {type(rel_path).__name__}")
    if not rel_path:
        raise MediaPathError(rel_path, "empty media path")
    if "\x00" in rel_path:
        raise MediaPathError(rel_path, "path contains a NUL character")
    if PurePosixPath(rel_path).is_absolute() or PureWindowsPath(rel_path).is_absolute():
        raise MediaPathError(rel_path, "absolute path; media paths are relative to the data root")
    root = Path(data_root).resolve()
    target = (root / rel_path).resolve()
    if not target.is_relative_to(root):
        if ".." in PurePosixPath(rel_path.replace("\\", "/")).parts:
            raise MediaPathError(rel_path, "escapes the data root through '..'")
        raise MediaPathError(
            rel_path, f"resolves outside the data root (to {target}) through a symbolic link"
        )
    return target


def frame_paths(video_dir: str | os.PathLike[str]) -> list[Path]:
    """The image files of a frames directory, sorted by name (hidden files and other files left out)."""
    directory = Path(video_dir)
    if not directory.is_dir():
        raise MediaPathError(directory, "not a directory of frames")
    return sorted(
        (
            p
            for p in directory.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        ),
        key=lambda p: p.name,
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC


def _png_is_cut(path: str | os.PathLike[str]) -> bool:
    # PIL decodes a PNG whose IEND chunk is cut off without complaint, but such a file is a broken copy.
    with open(path, "rb") as handle:
        if handle.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
            return False
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - len(_PNG_END)))
        return handle.read() != _PNG_END


def verify_image(path: str | os.PathLike[str]) -> None:
    """Raise MediaPathError unless the file is an image that decodes completely (and a PNG ends with IEND)."""
    try:
        with Image.open(path) as image:
            image.verify()  # checks structure and checksums; the image can't be used after this
        with Image.open(path) as image:
            image.load()  # decodes every pixel: catches truncated data that verify() lets through
        # Checked last, so that bytes that are not an image at all are reported as such, not as a cut PNG.
        if _png_is_cut(path):
            raise OSError("truncated PNG file: it does not end with the IEND chunk")
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) on bad input
        raise MediaPathError(path, f"image does not decode ({type(exc).__name__}: {exc})") from exc


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """The image at `path` decoded to RGB; MediaPathError, naming the path, when it is missing or does not
    decode (a PNG cut before its IEND chunk included, as in `verify_image`)."""
    if not os.path.isfile(path):
        raise MediaPathError(path, "missing: not a file")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if _png_is_cut(path):
            raise OSError("truncated PNG file: it does not end with the IEND chunk")
    except Exception as exc:  # PIL raises many types on bad input, see verify_image
        raise MediaPathError(path, f"image does not decode ({type(exc).__name__}: {exc})") from exc
    return rgb


def verify_frames(video_dir: str | os.PathLike[str]) -> None:
    """Raise MediaPathError unless the directory holds at least one frame and every frame decodes."""
    frames = frame_paths(video_dir)
    if not frames:
        raise MediaPathError(video_dir, "frames directory has no image frames")
    for frame in frames:
        try:
            verify_image(frame)
        except MediaPathError as exc:
            raise MediaPathError(video_dir, f"frame {frame.name}: {exc.reason}") from exc


def check_media(
    data_root: str | os.PathLike[str], rel_path: str, expect: MediaKind = "any", *, decode: bool = True
) -> Path:
    """The resolved media path, after checking it: safe, present, of the expected kind, and (with
    `decode`) decodable. An image is a file; a video is a directory of frames; `any` takes either.
    """
    target = resolve_media(data_root, rel_path)
    if not target.exists():
        raise MediaPathError(rel_path, "missing: no such file or directory under the data root")
    is_dir = target.is_dir()
    if is_dir and expect == "image":
        raise MediaPathError(rel_path, "is a directory; an image file is expected")
    if not is_dir and expect == "frames":
        raise MediaPathError(rel_path, "is a file; a directory of frames is expected")
    if decode:
        try:
            if is_dir:
                verify_frames(target)
            else:
                verify_image(target)
        except MediaPathError as exc:  # name the path as the record gives it, not the resolved one
            raise MediaPathError(rel_path, exc.reason) from exc
    return target
