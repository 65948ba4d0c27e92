"""Shared fixtures. Models and data are built here, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_BUILD_OPS", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def small_minimmeb(tmp_path_factory) -> Path:
    """A small MiniMMEB (seed 0), generated once per test session."""
    from embedrl.data.minimmeb import generate

    out = tmp_path_factory.mktemp("minimmeb") / "data"
    generate(out, seed=0, size="small", progress=False)
    return out
