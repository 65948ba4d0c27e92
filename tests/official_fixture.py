"""The official-layout fixtures (tests/fixtures/official/) made whole: the committed rows copied to a
folder, and every image, page and video frame they name drawn there with PIL.

Rows are committed as the benchmarks publish them; media are drawn at test time (a flat colour per
file, from its name, so that two files differ; frame k of a video is drawn with grey level 20 * k, so
that a test can tell which frames were sampled).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path, PurePosixPath

from PIL import Image

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
IMAGE_SIZE = (112, 112)
FRAMES_PER_CLIP = 12  # more than the 8 the benchmarks sample

IMAGE_TASK_MEDIA = "image-tasks/MMEB"  # media_root of the MMEB-V2 image tasks in the registry
MSRVTT_FRAMES = "video-tasks/frames/video_ret/MSR-VTT"  # media_root of MSR-VTT in the registry


def materialize(out: Path, *, image_rows_as_parquet: bool = False) -> dict[str, Path]:
    """Copy the fixtures into `out` and draw their media; the data roots, as {"mmeb-v2": ..., "uvrb": ...}.

    `image_rows_as_parquet`: store the ImageNet-1K rows as a parquet shard (`test-00000-of-00001.parquet`,
    as a Hugging Face download holds them) instead of the committed JSONL.
    """
    shutil.copytree(FIXTURES, out, dirs_exist_ok=True)
    mmeb, uvrb = out / "mmeb-v2", out / "uvrb"
    _draw_eval_rows_media(mmeb, "image-query/ImageNet-1K/test.jsonl", IMAGE_TASK_MEDIA)
    _draw_eval_rows_media(mmeb, "video-query/MSR-VTT/test.jsonl", MSRVTT_FRAMES)
    for row in _rows(mmeb / "visdoc-tasks/ViDoRe_arxivqa/corpus.jsonl"):
        draw_image(mmeb / "visdoc-tasks/ViDoRe_arxivqa" / f"{row['corpus-id']}.png")
    for folder in (uvrb / "MSRVTT", uvrb / "MSRVTT-I2V/UVRB/MSRVTT-I2V"):
        _draw_uvrb_media(folder)
    if image_rows_as_parquet:
        _to_parquet(mmeb / "image-query/ImageNet-1K/test.jsonl")
    return {"mmeb-v2": mmeb, "uvrb": uvrb}


def draw_image(path: Path, grey: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (grey, grey, grey) if grey is not None else tuple(hashlib.md5(path.name.encode()).digest()[:3])
    Image.new("RGB", IMAGE_SIZE, colour).save(path)


def draw_clip(folder: Path, n_frames: int = FRAMES_PER_CLIP) -> None:
    for k in range(n_frames):
        draw_image(folder / f"frame_{k + 1:02d}.jpg", grey=20 * k)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _draw_eval_rows_media(root: Path, rows_file: str, media_root: str) -> None:
    for row in _rows(root / rows_file):
        for path in [row["qry_img_path"], *row["tgt_img_path"]]:
            if not path:
                continue
            target = root / media_root / path
            if PurePosixPath(path).suffix:
                draw_image(target)
            else:
                draw_clip(target)


def _draw_uvrb_media(folder: Path) -> None:
    for row in _rows(folder / "jsonl/corpus.jsonl"):
        draw_clip(folder / "videos_frames" / PurePosixPath(row["video"]).with_suffix(""))
    for row in _rows(folder / "jsonl/queries.jsonl"):
        if row.get("image"):
            draw_image(folder / "images" / row["image"])
        if row.get("video"):
            draw_clip(folder / "videos_frames" / PurePosixPath(row["video"]).with_suffix(""))


def _to_parquet(jsonl: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = jsonl.with_name("test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(_rows(jsonl)), target)
    jsonl.unlink()
    return target
