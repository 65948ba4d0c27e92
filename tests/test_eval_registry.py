"""Eval task registry: validation, duplicate and unknown names, YAML loading, joining with a manifest."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from embedrl.eval.registry import (
    EvalTask,
    TaskRegistry,
    UnknownTaskError,
    load_registry,
    packaged_registries,
    tasks_for_data,
)


def _task(name: str = "T2I-Marked", **overrides) -> EvalTask:
    fields = dict(
        name=name,
        modality="image",
        meta_task="retrieval",
        metric="hit@1",
        candidates="local",
        kind="mmeb_eval",
        path=f"eval/image/{name}.jsonl",
        benchmark="test",
    )
    fields.update(overrides)
    return EvalTask(**fields)


def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_manifest(root: Path, entries: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"name": "fake", "tasks": entries}), encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------- EvalTask


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("modality", "imgae", "did you mean 'image'"),
        ("metric", "hit@5", "allowed: hit@1, ndcg@5"),
        ("candidates", "pool", "allowed: local, global"),
        ("kind", "mmeb", "allowed: mmeb_eval, visdoc, uvrb"),
        ("path", "/abs/eval.jsonl", "relative to the data root"),
        ("path", "../outside.jsonl", "relative to the data root"),
        ("meta_task", " ", "'meta_task' must not be empty"),
    ],
)
def test_eval_task_rejects_bad_field_naming_task_and_field(field, value, expected):
    with pytest.raises(ValueError) as info:
        _task("My-Task", **{field: value})
    message = str(info.value)
    assert "'My-Task'" in message and field in message and expected in message


def test_eval_task_rejects_kind_modality_mismatch_and_non_strings():
    with pytest.raises(ValueError, match="kind 'visdoc' does not go with modality 'image'"):
        _task(kind="visdoc")
    with pytest.raises(ValueError, match="kind 'uvrb' does not go with modality 'image'"):
        _task(kind="uvrb", metric="recall@1")
    with pytest.raises(TypeError, match="'metric' must be a string"):
        _task(metric=1)
    with pytest.raises(ValueError, match="non-empty string"):
        _task(" padded ")


# ------------------------------------------------------------------------------------ TaskRegistry


def test_duplicate_name_raises_naming_both_sources():
    registry = TaskRegistry(name="test")
    registry.register(_task(), source="first.yaml: tasks[0]")
    with pytest.raises(ValueError) as info:
        registry.register(_task(meta_task="other"), source="second.yaml: tasks[3]")
    message = str(info.value)
    assert (
        "'T2I-Marked'" in message and "first.yaml: tasks[0]" in message and "second.yaml: tasks[3]" in message
    )


def test_duplicate_without_explicit_source_names_the_calling_file():
    registry = TaskRegistry([_task()])
    with pytest.raises(
        ValueError, match=r"test_eval_registry\.py:\d+.*again in .*test_eval_registry\.py:\d+"
    ):
        registry.register(_task())


def test_unknown_name_raises_key_error_listing_known_names_closest_first():
    registry = TaskRegistry([_task("ImgCLS-Marked"), _task("VQA-Marked"), _task("T2I-Marked")], name="test")
    with pytest.raises(KeyError) as info:
        registry.get("vqa-markd")
    assert isinstance(info.value, UnknownTaskError)
    message = str(info.value)
    assert message.startswith("unknown eval task 'vqa-markd' in registry 'test'")
    listed = message.split("closest first: ")[1].split(", ")
    assert listed[0] == "VQA-Marked" and sorted(listed) == ["ImgCLS-Marked", "T2I-Marked", "VQA-Marked"]


def test_iteration_len_names_and_select():
    video = _task("T2V-Flash", modality="video", path="eval/video/T2V-Flash.jsonl")
    registry = TaskRegistry([_task("A"), video, _task("B")])
    assert len(registry) == 3 and "A" in registry and "Z" not in registry
    assert registry.names() == ["A", "T2V-Flash", "B"]
    assert [t.name for t in registry] == ["A", "T2V-Flash", "B"]
    assert [t.name for t in registry.select()] == ["A", "T2V-Flash", "B"]
    assert [t.name for t in registry.select(names=["B", "A"])] == ["B", "A"]
    assert [t.name for t in registry.select(modality="video")] == ["T2V-Flash"]
    assert registry.select(names=["A", "B"], modality="video") == []
    with pytest.raises(KeyError, match="unknown eval task 'C'"):
        registry.select(names=["A", "C"])
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        registry.select(modality="audio")
    with pytest.raises(TypeError, match=r"pass \['A'\]"):
        registry.select(names="A")
    with pytest.raises(ValueError, match="more than once: A"):
        registry.select(names=["A", "A"])


# ------------------------------------------------------------------------------------------- YAML


GOOD_YAML = """\
benchmark: mini
tasks:
  - {name: A, modality: image, meta_task: vqa, metric: hit@1, candidates: local, kind: mmeb_eval}
  - {name: D, modality: visdoc, meta_task: visdoc_retrieval, metric: ndcg@5, candidates: global,
     kind: visdoc, path: eval/visdoc/D}
"""


def test_load_registry_from_path(tmp_path):
    registry = load_registry(_write_yaml(tmp_path / "mini.yaml", GOOD_YAML))
    assert registry.name == "mini" and registry.names() == ["A", "D"]
    assert registry.get("A").path == "" and registry.get("D").path == "eval/visdoc/D"
    assert {t.benchmark for t in registry} == {"mini"}
    assert registry.source_of("D").endswith("mini.yaml: tasks[1]")


def test_yaml_with_unknown_task_key_raises_listing_allowed_keys(tmp_path):
    path = _write_yaml(
        tmp_path / "bad.yaml", GOOD_YAML.replace("kind: mmeb_eval}", "kind: mmeb_eval, metirc: x}")
    )
    with pytest.raises(ValueError) as info:
        load_registry(path)
    message = str(info.value)
    assert "bad.yaml: tasks[0] ('A')" in message and "'metirc'" in message
    assert "allowed keys: name, modality, meta_task, metric, candidates, kind, path" in message


def test_yaml_with_unknown_top_level_key_or_missing_key_or_bad_value_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown top-level key.*'version'.*allowed keys: benchmark, tasks"):
        load_registry(_write_yaml(tmp_path / "top.yaml", "version: 2\n" + GOOD_YAML))
    with pytest.raises(ValueError, match=r"tasks\[0\] \('A'\): missing key\(s\) candidates"):
        load_registry(_write_yaml(tmp_path / "missing.yaml", GOOD_YAML.replace(" candidates: local,", "")))
    with pytest.raises(ValueError, match=r"tasks\[1\]: eval task 'D': field 'metric' has value 'ndcg@10'"):
        load_registry(_write_yaml(tmp_path / "value.yaml", GOOD_YAML.replace("ndcg@5", "ndcg@10")))
    with pytest.raises(ValueError, match=r"defined twice.*tasks\[0\].*tasks\[1\]"):
        load_registry(_write_yaml(tmp_path / "dup.yaml", GOOD_YAML.replace("name: D", "name: A")))


def test_unknown_packaged_registry_and_missing_file():
    assert "minimmeb" in packaged_registries()
    with pytest.raises(ValueError, match="did you mean 'minimmeb'.*packaged registries: .*minimmeb"):
        load_registry("minimeb")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_registry("no/such/registry.yaml")


def test_packaged_minimmeb_registry():
    registry = load_registry("minimmeb")
    assert registry.name == "minimmeb" and len(registry) == 12
    assert [t.name for t in registry if t.kind == "uvrb"] == ["MiniUVRB-Flash"]
    assert len(registry.select(modality="image")) == 6 and len(registry.select(modality="visdoc")) == 2
    assert {t.metric for t in registry.select(modality="visdoc")} == {"ndcg@5"}
    assert {t.benchmark for t in registry} == {"minimmeb"}


# ---------------------------------------------------------------------------------- tasks_for_data


def _manifest_entry(task: EvalTask, split: str = "eval", **overrides) -> dict:
    entry = dict(
        name=task.name,
        split=split,
        kind=task.kind,
        path=f"data-path/{task.name}",
        modality=task.modality,
        meta_task=task.meta_task,
        metric=task.metric,
        candidates=task.candidates,
    )
    entry.update(overrides)
    return entry


@pytest.fixture()
def two_task_registry(tmp_path) -> TaskRegistry:
    return load_registry(_write_yaml(tmp_path / "mini.yaml", GOOD_YAML))


def test_tasks_for_data_takes_paths_from_manifest_in_registry_order(tmp_path, two_task_registry):
    a, d = two_task_registry.get("A"), two_task_registry.get("D")
    root = _write_manifest(
        tmp_path / "data",
        [_manifest_entry(d), _manifest_entry(a, split="train", path="train/A.parquet"), _manifest_entry(a)],
    )
    tasks = tasks_for_data(root, two_task_registry)
    assert tasks == [replace(a, path="data-path/A"), replace(d, path="data-path/D")]


def test_tasks_for_data_accepts_a_registry_path(tmp_path):
    path = _write_yaml(tmp_path / "mini.yaml", GOOD_YAML)
    registry = load_registry(path)
    root = _write_manifest(tmp_path / "data", [_manifest_entry(t) for t in registry])
    assert [t.name for t in tasks_for_data(root, path)] == ["A", "D"]


def test_manifest_task_missing_from_registry_raises_naming_it(tmp_path, two_task_registry):
    extra = _task("Extra-Task")
    root = _write_manifest(tmp_path / "data", [_manifest_entry(t) for t in [*two_task_registry, extra]])
    with pytest.raises(ValueError, match="eval task\\(s\\) Extra-Task that registry 'mini' does not define"):
        tasks_for_data(root, two_task_registry)


def test_registry_task_missing_from_data_raises_unless_allowed(tmp_path, two_task_registry, caplog):
    root = _write_manifest(tmp_path / "data", [_manifest_entry(two_task_registry.get("A"))])
    with pytest.raises(ValueError, match="task\\(s\\) D are not in .*allow_missing=True"):
        tasks_for_data(root, two_task_registry)
    with caplog.at_level("WARNING"):
        tasks = tasks_for_data(root, two_task_registry, allow_missing=True)
    assert [t.name for t in tasks] == ["A"] and "absent" in caplog.text


def test_manifest_disagreeing_with_registry_raises_naming_field(tmp_path, two_task_registry):
    entries = [_manifest_entry(t) for t in two_task_registry]
    entries[1]["metric"] = "recall@1"
    root = _write_manifest(tmp_path / "data", entries)
    with pytest.raises(ValueError, match="'D'.*metric: manifest says 'recall@1', registry says 'ndcg@5'"):
        tasks_for_data(root, two_task_registry)


def test_manifest_problems_raise(tmp_path, two_task_registry):
    with pytest.raises(FileNotFoundError, match="manifest.json does not exist"):
        tasks_for_data(tmp_path / "nowhere", two_task_registry)
    a = two_task_registry.get("A")
    root = _write_manifest(tmp_path / "dup", [_manifest_entry(a), _manifest_entry(a)])
    with pytest.raises(ValueError, match="'A' is listed twice"):
        tasks_for_data(root, two_task_registry, allow_missing=True)
    root = _write_manifest(tmp_path / "nopath", [_manifest_entry(a, path="")])
    with pytest.raises(ValueError, match="'A' .*has no 'path'"):
        tasks_for_data(root, two_task_registry, allow_missing=True)


def test_minimmeb_registry_matches_the_generated_data(small_minimmeb):
    """The registry against a MiniMMEB generated here (data/ itself exists only after `make run`)."""
    manifest = json.loads((small_minimmeb / "manifest.json").read_text(encoding="utf-8"))
    expected = {e["name"]: e for e in manifest["tasks"] if e["split"] == "eval"}
    tasks = tasks_for_data(small_minimmeb)
    assert sorted(t.name for t in tasks) == sorted(expected)
    for task in tasks:
        entry = expected[task.name]
        for field in ("kind", "path", "modality", "meta_task", "metric", "candidates"):
            assert getattr(task, field) == entry[field], (task.name, field)
