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


MICRO_PROFILE = REPO_ROOT / "tests" / "profiles" / "micro.yaml"


@pytest.fixture(scope="session")
def prepared_small(small_minimmeb, tmp_path_factory) -> Path:
    """The small MiniMMEB with teacher and gold T-CoTs (data prep), once per session."""
    from embedrl.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare(small_minimmeb, out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Freshly initialised tiny Embedder and Reasoner directories."""
    from embedrl.models.factory import init_model_dir
    from embedrl.models.spec import load_model_specs

    root = tmp_path_factory.mktemp("models")
    specs = load_model_specs(MICRO_PROFILE)
    return {role: init_model_dir(specs[role], root / role, seed=i) for i, role in enumerate(("embedder", "reasoner"))}


@pytest.fixture(scope="session")
def trained_embedder(prepared_small, tiny_models, tmp_path_factory) -> Path:
    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.train.embedder import train_embedder

    out = tmp_path_factory.mktemp("embedder")
    config = build_config(EmbedderTrainConfig, MICRO_PROFILE, "embedder", max_steps=40)
    result = train_embedder(prepared_small, tiny_models["embedder"], out, config, progress=False)
    return result.out_dir / "model"


@pytest.fixture(scope="session")
def sft_reasoner(prepared_small, tiny_models, tmp_path_factory):
    from embedrl.config import build_config
    from embedrl.train.sft import SFTStageConfig, train_sft

    out = tmp_path_factory.mktemp("sft")
    # 150 steps: enough that sampled traces are well-formed about half the time (EG-RL has a signal)
    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(out), max_steps=150)
    return train_sft(prepared_small, tiny_models["reasoner"], out, config)


def pytest_sessionfinish(session, exitstatus):
    """Write the fault tables (tests/faults_table.py) into EMBEDRL_FAULTS_DIR, if it is set."""
    from faults_table import ROWS, markdown

    target = os.environ.get("EMBEDRL_FAULTS_DIR")
    if not target:
        return
    command = " ".join([f"EMBEDRL_FAULTS_DIR={target} python -m pytest", *map(str, session.config.args)])
    for table, rows in ROWS.items():
        if rows:
            path = Path(target) / f"{table}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(markdown(table, command))
