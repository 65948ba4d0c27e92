"""MMEB-train and the training mix: the set registry, mix files, and official-format rows through training.

The fixture writes a few rows per layout exactly as the official files hold them (MMEB-train parquet
columns `qry`, `qry_image_path`, `pos_text`, `pos_image_path`, `neg_text`, `neg_image_path`; empty string =
no media; `<|image_1|>` marks an image; images by relative path), drawn with PIL here, plus a video set
(frames directories) and a page set in the same layout, then trains the tiny Embedder on them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from embedrl.data.mmeb_train import (
    MMEB_TRAIN_SUBSETS,
    TRAIN_SETS,
    MixError,
    UnknownTrainSetError,
    load_mix,
    locate,
    mix_names,
    train_set,
    write_train_manifest,
)
from embedrl.data.readers import write_parquet

# The 20 subsets of TIGER-Lab/MMEB-train as VLM2Vec's training configs list them.
OFFICIAL_SUBSETS = {
    "ImageNet_1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "OK-VQA", "A-OKVQA", "DocVQA",
    "InfographicsVQA", "ChartQA", "Visual7W", "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t",
    "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA", "MSCOCO",
}
NO_IMAGE = ""


# --------------------------------------------------------------------------------------- registry
def test_registry_holds_the_20_mmeb_train_subsets_and_the_video_and_page_sets():
    assert set(MMEB_TRAIN_SUBSETS) == OFFICIAL_SUBSETS and len(MMEB_TRAIN_SUBSETS) == 20
    families = Counter(s.family for s in TRAIN_SETS.values())
    assert families == {"mmeb": 20, "video": 3, "visdoc": 2}
    assert train_set("NIGHTS").layout == "image -> image"
    assert train_set("video_caption_300k-video").layout == "text -> video"
    assert train_set("colpali_train_set").default_pattern == "colpali_train_set/train.parquet"
    assert train_set("CIRR").default_pattern == "CIRR/original-*.parquet"


def test_unknown_set_lists_the_registered_ones():
    with pytest.raises(UnknownTrainSetError, match=r"unknown training set 'ImageNet'.*ImageNet_1K"):
        train_set("ImageNet")


# -------------------------------------------------------------------------------------------- mixes
def test_packaged_mixes_cover_every_registered_set():
    assert {"paper", "vlm2vec-v2"} <= set(mix_names())
    for name in ("paper", "vlm2vec-v2"):
        mix = load_mix(name)
        assert {e.name for e in mix.entries} == set(TRAIN_SETS), name


def test_paper_mix_weights_and_caps():
    mix = load_mix("paper")
    left_out = {e.name for e in mix.entries if e.weight == 0}
    assert left_out == {"N24News", "HatefulMemes", "VOC2007"}  # absent from the public Embed-RL config
    assert mix.weights["visrag-indomain"] == 6.0 and mix.weights["ImageNet_1K"] == 2.25
    assert mix.entry("VisDial").cap == 130000 and mix.entry("colpali_train_set").cap is None
    assert "N24News" not in mix.weights  # weights list only the sets a run reads


@pytest.mark.parametrize(("sets", "message"), [
    ("  ImageNet: {weight: 1}\n", r"sets\.ImageNet: unknown training set"),
    ("  NIGHTS: {weight: -1}\n", r"sets\.NIGHTS: weight=-1 must be a finite number >= 0"),
    ("  NIGHTS: {weight: 1, cap: 0}\n", r"sets\.NIGHTS: cap=0 must be a positive integer"),
    ("  NIGHTS: {weight: 1, cap: 2.5}\n", r"cap=2\.5"),
    ("  NIGHTS: {weight: 1, caps: 4}\n", r"sets\.NIGHTS: needs `weight`; allowed keys weight, cap, path"),
    ("  NIGHTS: {weight: 1}\n  NIGHTS: {weight: 2}\n", r"key 'NIGHTS' is given twice"),
    ("  NIGHTS: {weight: 0}\n", r"every set has weight 0"),
])
def test_bad_mix_files_name_the_set_and_the_field(tmp_path, sets, message):
    path = tmp_path / "mix.yaml"
    path.write_text("name: bad\nsets:\n" + sets)
    with pytest.raises(MixError, match=message):
        load_mix(path)


def test_unknown_mix_lists_the_packaged_ones():
    with pytest.raises(MixError, match=r"unknown mix 'papper'.*paper"):
        load_mix("papper")


def test_config_checks_the_mix_when_it_is_built():
    from embedrl.config import EmbedderTrainConfig

    assert EmbedderTrainConfig(data_mix="paper").data_mix == "paper"
    with pytest.raises(MixError, match="unknown mix"):
        EmbedderTrainConfig(data_mix="no-such-mix")


# ------------------------------------------------------------------------------------ official rows
def _image(path: Path, seed: int, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size), ((37 * seed) % 256, (91 * seed) % 256, (53 * seed) % 256))
    draw = ImageDraw.Draw(image)
    offset = 4 + seed % 24
    draw.rectangle((offset, offset, offset + 20, offset + 14), fill=(255 - (37 * seed) % 256, 20, 200))
    image.save(path)


def _row(qry: str, qry_image: str, pos_text: str, pos_image: str) -> dict[str, str]:
    return {"qry": qry, "qry_image_path": qry_image, "pos_text": pos_text, "pos_image_path": pos_image,
            "neg_text": "", "neg_image_path": NO_IMAGE}


def _image_text_rows(root: Path, n: int) -> list[dict]:  # ImageNet_1K: image -> label
    rows = []
    for i in range(n):
        rel = f"images/ImageNet_1K/n0144_{i}.JPEG"
        _image(root / rel, i)
        rows.append(_row("<|image_1|>\nRepresent the given image for classification\n", rel, f"label {i}", NO_IMAGE))
    return rows


def _text_image_rows(root: Path, n: int) -> list[dict]:  # VisualNews_t2i: caption -> image
    rows = []
    for i in range(n):
        rel = f"images/VisualNews_t2i/news_{i}.jpg"
        _image(root / rel, 100 + i)
        rows.append(_row(f"Retrieve an image of this news caption: story number {i}", NO_IMAGE,
                         "<|image_1|>\nRepresent the given image.\n", rel))
    return rows


def _image_image_rows(root: Path, n: int) -> list[dict]:  # NIGHTS: image -> similar image
    rows = []
    for i in range(n):
        query, positive = f"images/NIGHTS/{i}_ref.png", f"images/NIGHTS/{i}_0.png"
        _image(root / query, 200 + i)
        _image(root / positive, 200 + i + 1)
        rows.append(_row("<|image_1|>\nFind a day-to-day image that looks similar to the provided image.\n", query,
                         "<|image_1|>\nRepresent the given image.\n", positive))
    return rows


def _video_rows(root: Path, n: int, frames: int = 8) -> list[dict]:  # video -> caption
    rows = []
    for i in range(n):
        clip = f"video_frames/clip_{i}"
        for f in range(frames):
            _image(root / clip / f"frame_{f:02d}.jpg", 300 + 10 * i + f, size=32)
        rows.append(_row("<|video_1|>\nDescribe the video.", clip, f"a clip of moving shapes, take {i}", NO_IMAGE))
    return rows


def _page_rows(root: Path, n: int) -> list[dict]:  # text -> document page
    rows = []
    for i in range(n):
        rel = f"pages/colpali_{i}.png"
        _image(root / rel, 400 + i, size=96)
        rows.append(_row(f"Which page lists the price of item {i}?", NO_IMAGE,
                         "<|image_1|>\nRepresent the given document page.\n", rel))
    return rows


def _bad_rows(root: Path) -> tuple[dict, dict]:
    token_without_image = _row("<|image_1|>\nRepresent the given image for classification\n", NO_IMAGE, "label", "")
    missing_image = _row("a caption of nothing", NO_IMAGE, "<|image_1|>\nRepresent the given image.\n",
                         "images/VisualNews_t2i/not_there.jpg")
    return token_without_image, missing_image


@pytest.fixture(scope="module")
def official_root(tmp_path_factory) -> Path:
    """Five sets in the official MMEB-train layout (two with one bad row each) and their manifest."""
    root = tmp_path_factory.mktemp("mmeb_train")
    bad_image_text, bad_text_image = _bad_rows(root)
    files = {
        "ImageNet_1K/original-00000-of-00001.parquet": _image_text_rows(root, 8) + [bad_image_text],
        "VisualNews_t2i/original-00000-of-00001.parquet": _text_image_rows(root, 4)
        + [bad_text_image] + _text_image_rows(root, 8)[4:],
        "NIGHTS/original-00000-of-00001.parquet": _image_image_rows(root, 8),
        "video_caption_300k/train.parquet": _video_rows(root, 4),
        "colpali_train_set/train.parquet": _page_rows(root, 4),
    }
    for rel, rows in files.items():
        write_parquet(root / rel, rows)
    return root


MIX_YAML = """name: fixture
sets:
  ImageNet_1K: {weight: 1}
  VisualNews_t2i: {weight: 0.5}
  NIGHTS: {weight: 1, cap: 4}
  N24News: {weight: 0}
  video_caption_300k: {weight: 1}
  colpali_train_set: {weight: 1}
"""


@pytest.fixture(scope="module")
def fixture_mix(official_root) -> Path:
    path = official_root.parent / "fixture_mix.yaml"
    path.write_text(MIX_YAML)
    write_train_manifest(official_root, load_mix(path))
    return path


def test_manifest_lists_the_mix_files_and_keeps_other_tasks(official_root, fixture_mix):
    manifest = json.loads((official_root / "manifest.json").read_text())
    paths = {t["name"]: t["path"] for t in manifest["tasks"]}
    assert paths == {"ImageNet_1K": "ImageNet_1K/original-00000-of-00001.parquet",
                     "VisualNews_t2i": "VisualNews_t2i/original-00000-of-00001.parquet",
                     "NIGHTS": "NIGHTS/original-00000-of-00001.parquet",
                     "video_caption_300k": "video_caption_300k/train.parquet",
                     "colpali_train_set": "colpali_train_set/train.parquet"}  # N24News (weight 0) is not needed
    assert {t["kind"] for t in manifest["tasks"]} == {"mmeb_train"}


def test_a_missing_or_ambiguous_set_file_is_named(tmp_path):
    mix = load_mix("paper")
    with pytest.raises(MixError, match=r"set ImageNet_1K: no file matches 'ImageNet_1K/original-\*\.parquet'"):
        locate(tmp_path, mix.entry("ImageNet_1K"))
    for shard in ("original-00000-of-00002.parquet", "original-00001-of-00002.parquet"):
        (tmp_path / "CIRR").mkdir(exist_ok=True)
        (tmp_path / "CIRR" / shard).write_bytes(b"")
    with pytest.raises(MixError, match=r"set CIRR: 2 files match.*name one as `path:`"):
        locate(tmp_path, mix.entry("CIRR"))


def test_training_reader_applies_the_mix_and_quarantines_bad_rows(official_root, fixture_mix, tmp_path):
    from embedrl.train.embedder import load_pairs

    quarantine = tmp_path / "q.jsonl"
    pairs = load_pairs(official_root, "train", quarantine=quarantine, mix=load_mix(fixture_mix))
    assert {k: len(v) for k, v in pairs.items()} == {
        "ImageNet_1K": 8, "VisualNews_t2i": 8, "NIGHTS": 4, "video_caption_300k": 4, "colpali_train_set": 4}
    assert [p.query.media_path for p in pairs["NIGHTS"]] == [f"images/NIGHTS/{i}_ref.png" for i in range(4)]
    rejected = [json.loads(line) for line in quarantine.read_text().splitlines()]
    located = {(r["source"], r["index"], e["field"]) for r in rejected for e in r["errors"]}
    assert located == {("ImageNet_1K/original-00000-of-00001.parquet", 8, "qry"),
                       ("VisualNews_t2i/original-00000-of-00001.parquet", 4, "pos_image_path")}
    by_index = {r["index"]: r["record"] for r in rejected}  # each row as the file holds it
    assert by_index[4]["pos_image_path"] == "images/VisualNews_t2i/not_there.jpg"


def test_a_mix_set_missing_from_the_manifest_is_named(official_root, fixture_mix, tmp_path):
    from embedrl.train.embedder import load_pairs

    path = tmp_path / "mix.yaml"
    path.write_text("name: wider\nsets:\n  ImageNet_1K: {weight: 1}\n  CIRR: {weight: 1}\n")
    with pytest.raises(MixError, match=r"needs set\(s\) \['CIRR'\].*write_train_manifest"):
        load_pairs(official_root, "train", mix=load_mix(path))


def test_image_tokens_become_the_backbones_placeholders(official_root, fixture_mix, tiny_models):
    """`<|image_1|>` leaves the text; each image enters as one vision block, each frame of a clip as one."""
    from embedrl.data.sides import MediaStore
    from embedrl.models.embedder import EmbedderInputs
    from embedrl.models.factory import load_model
    from embedrl.train.embedder import build_side, load_pairs

    _, processor = load_model(tiny_models["embedder"])
    inputs, store = EmbedderInputs(processor), MediaStore(official_root)
    pairs = load_pairs(official_root, "train", mix=load_mix(fixture_mix))
    expected_blocks = {"image": 1, "video": 8, "text": 0}
    for name, subset in pairs.items():
        pair = subset[0]
        for ref, media in ((pair.query, train_set(name).query), (pair.positive, train_set(name).target)):
            assert ref.media_kind == {"page": "image", "image+text": "image", "video+text": "video"}.get(media, media)
            ids = inputs.encode(build_side(ref, store, None)).input_ids
            text = processor.tokenizer.decode(ids)
            assert "<|image_1|>" not in text and "<|video_1|>" not in text, (name, text)
            assert text.count("<|vision_start|>") == expected_blocks[ref.media_kind], (name, text)


def test_official_rows_train_the_embedder_and_batches_follow_the_mix(official_root, fixture_mix, tiny_models,
                                                                    tmp_path):
    """One epoch of the sampler: each set's batches in proportion to weight x (capped) size, none from weight 0."""
    import math

    from conftest import MICRO_PROFILE

    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.train.embedder import train_embedder

    config = build_config(EmbedderTrainConfig, MICRO_PROFILE, "embedder", max_steps=6, global_batch_size=4,
                          data_mix=str(fixture_mix), save_every=0, log_every=1)
    result = train_embedder(official_root, tiny_models["embedder"], tmp_path / "run", config, progress=False)
    assert len(result.losses) == 6 and all(math.isfinite(loss) for loss in result.losses)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    # weight x size, batch 4: ImageNet 1 x 8 -> 2 batches; VisualNews 0.5 x 8 -> 1; NIGHTS 1 x 4 (cap) -> 1; ...
    assert Counter(r["subset"] for r in log) == {"ImageNet_1K": 2, "VisualNews_t2i": 1, "NIGHTS": 1,
                                                  "video_caption_300k": 1, "colpali_train_set": 1}
    assert all(r["tokens"] > 0 for r in log)
    rejected = (tmp_path / "run" / "train_quarantine.jsonl").read_text().splitlines()
    assert len(rejected) == 2
