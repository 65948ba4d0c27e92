"""MiniMMEB: reproducible, in the real formats, valid, and built around fine evidence."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from embedrl.data.minimmeb import SIZE_PRESETS, generate
from embedrl.data.minimmeb.scenes import render_scene, sample_scene
from embedrl.data.validate import validate_path
from embedrl.data.versioning import directory_hash

REPO_ROOT = Path(__file__).resolve().parents[1]


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def test_same_seed_gives_identical_bytes(small_minimmeb, tmp_path):
    again = tmp_path / "again"
    generate(again, seed=0, size="small", progress=False)
    assert directory_hash(again) == directory_hash(small_minimmeb)


def test_other_seed_gives_other_data(small_minimmeb, tmp_path):
    other = tmp_path / "other"
    generate(other, seed=1, size="small", progress=False)
    assert directory_hash(other).md5 != directory_hash(small_minimmeb).md5
    assert validate_path(other).ok


def test_small_data_set_is_valid_everywhere(small_minimmeb):
    report = validate_path(small_minimmeb)
    assert report.ok, report.describe()
    assert report.n_rejected == 0
    assert report.n_records > 300


def test_manifest_covers_every_meta_task_and_split(small_minimmeb):
    tasks = _manifest(small_minimmeb)["tasks"]
    eval_tasks = {(t["modality"], t["meta_task"]) for t in tasks if t["split"] == "eval"}
    assert {("image", "classification"), ("image", "vqa"), ("image", "retrieval"), ("image", "grounding"),
            ("video", "classification"), ("video", "retrieval"), ("video", "moment_retrieval"),
            ("visdoc", "visdoc_retrieval")} <= eval_tasks
    assert {t["split"] for t in tasks} == {"train", "rl", "eval"}
    assert {t["kind"] for t in tasks} == {"mmeb_train", "mmeb_eval", "visdoc", "uvrb"}
    names = {t["name"] for t in tasks if t["split"] == "eval"}
    assert {"T2I-Marked", "I2T-Marked", "CIR-Marked", "MiniUVRB-Flash"} <= names


def test_eval_rows_are_pools_of_near_misses(small_minimmeb):
    rows = [json.loads(line) for line in (small_minimmeb / "eval/image/T2I-Marked.jsonl").read_text().splitlines()]
    for row in rows:
        assert len(row["tgt_img_path"]) == 8
        scenes = json.loads(row["scene"])
        positive = scenes["candidates"][0]
        marked = next(o for o in positive["objects"] if o["detail"] == "dot")
        label = (marked["shape"], marked["colour"], marked["size"])
        # The described object carries the dot only in the positive; confusables hold it undotted.
        for cand in scenes["candidates"][1:]:
            dotted = next(o for o in cand["objects"] if o["detail"] == "dot")
            assert (dotted["shape"], dotted["colour"], dotted["size"]) != label
        holders = sum(any((o["shape"], o["colour"], o["size"]) == label for o in c["objects"])
                      for c in scenes["candidates"])
        assert holders == row["n_confusable"]


def test_every_record_keeps_its_scene_graph(small_minimmeb):
    import pyarrow.parquet as pq

    for task in _manifest(small_minimmeb)["tasks"]:
        path = small_minimmeb / task["path"]
        if task["kind"] == "mmeb_train":
            scenes = pq.read_table(path, columns=["scene"]).column("scene").to_pylist()
        elif task["kind"] == "mmeb_eval":
            scenes = [json.loads(line)["scene"] for line in path.read_text().splitlines()]
        else:
            continue
        assert scenes and all(json.loads(s) for s in scenes)


def test_rl_pairs_come_in_groups_of_near_misses(small_minimmeb):
    import pyarrow.parquet as pq

    table = pq.read_table(small_minimmeb / "rl/T2I-Marked.parquet").to_pylist()
    groups = Counter(row["group"] for row in table)
    assert max(groups.values()) >= 3
    first = [r for r in table if r["group"] == next(iter(groups))]
    layouts = {tuple(sorted((o["shape"], o["position"]) for o in json.loads(r["scene"])["positive"]["objects"]))
               for r in first}
    assert len(layouts) == 1  # one base scene, the dot on different objects


def test_dot_is_below_patch_scale_but_visible_in_a_crop():
    import numpy as np

    scene = sample_scene(np.random.default_rng(3))
    marked = scene.marked
    image = np.asarray(render_scene(scene).convert("L"), dtype=float)
    undotted = np.asarray(render_scene(scene.with_dot_on(-1)).convert("L"), dtype=float)
    changed = np.argwhere(np.abs(image - undotted) > 0)
    assert 4 <= len(changed) <= 30  # a few pixels out of 224 x 224
    ys, xs = changed[:, 0], changed[:, 1]
    assert xs.max() - xs.min() < 14 and ys.max() - ys.min() < 14
    assert marked is not None


def test_detail_blind_ceiling_is_in_the_target_band(small_minimmeb):
    blind = _manifest(small_minimmeb)["detail_blind_hit_at_1"]
    for task, value in blind.items():
        if not task.startswith("VisDoc"):
            assert 0.4 <= value <= 0.8, (task, value)


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="does not hold a MiniMMEB"):
        generate(tmp_path, seed=0, size="small", progress=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_default_size_has_500_pools_per_modality_group():
    preset = SIZE_PRESETS["default"]
    assert 6 * preset.eval_pools_image >= 500
    assert 3 * preset.eval_pools_video >= 500
    assert 2 * preset.eval_queries_doc >= 500


@pytest.mark.slow
def test_seed_0_default_regenerates_data_dvc(tmp_path):
    """The DVC-tracked data/ is exactly `embedrl data generate --seed 0` (default size)."""
    from embedrl.data.versioning import check_matches_dvc

    out = tmp_path / "data"
    summary = generate(out, seed=0, size="default", progress=False)
    assert summary.seconds < 120
    check_matches_dvc(out, REPO_ROOT / "data.dvc")
