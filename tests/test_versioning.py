"""Our DVC 3 directory hash equals the one `dvc add` writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embedrl.data.versioning import DataVersionMismatch, check_matches_dvc, directory_hash, read_dvc_out

DVC = Path(sys.executable).parent / "dvc"


def _make_tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.txt").write_text("hello\n")
    (root / "a" / "y.bin").write_bytes(bytes(range(256)) * 10)
    (root / "z.json").write_text('{"k": 1}\n')


def test_directory_hash_matches_dvc_add(tmp_path):
    if not DVC.exists():
        pytest.skip("dvc is not installed in this environment")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(DVC), "init", "-q"], cwd=repo, check=True)
    _make_tree(repo / "data")
    subprocess.run([str(DVC), "add", "-q", "data"], cwd=repo, check=True)
    pinned = read_dvc_out(repo / "data.dvc")
    ours = directory_hash(repo / "data")
    assert ours.md5 == pinned["md5"]
    assert ours.nfiles == pinned["nfiles"] and ours.size == pinned["size"]
    assert check_matches_dvc(repo / "data", repo / "data.dvc") == ours


def test_one_changed_byte_is_a_mismatch(tmp_path):
    _make_tree(tmp_path / "data")
    h = directory_hash(tmp_path / "data")
    (tmp_path / "data.dvc").write_text(f"outs:\n- md5: {h.md5}\n  path: data\n")
    check_matches_dvc(tmp_path / "data", tmp_path / "data.dvc")
    (tmp_path / "data" / "z.json").write_text('{"k": 2}\n')
    with pytest.raises(DataVersionMismatch, match=h.md5):
        check_matches_dvc(tmp_path / "data", tmp_path / "data.dvc")
    shutil.rmtree(tmp_path / "data")
    with pytest.raises(FileNotFoundError):
        directory_hash(tmp_path / "data")
