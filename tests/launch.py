"""Launching `embedrl train embedder` as users do: one process, or torchrun with N ranks (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(ranks: int) -> list[str]:
    """The command prefix that starts `ranks` local ranks on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(ranks),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


def train_embedder_cli(prepared, model, out: Path, profile: Path, *, ranks: int, steps: int,
                       deepspeed: bool = False, timeout: int = 600) -> list[dict]:
    """Run the CLI stage and return its train log (one dict per step)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_BUILD_OPS="0", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    args = ["-m", "embedrl.cli", "train", "embedder", "--profile", str(profile), "--data", str(prepared),
            "--model", str(model), "--out", str(out), "--max-steps", str(steps)]
    if deepspeed:
        args += ["--deepspeed", str(REPO / "infra" / "deepspeed" / "zero2.json")]
    for _ in range(3):  # retry if the free port was taken in between
        launcher = [sys.executable] if ranks == 1 else torchrun(ranks)
        proc = subprocess.run(launcher + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 or "address already in use" not in (proc.stdout + proc.stderr).lower():
            break
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
