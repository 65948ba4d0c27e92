"""What every benchmark result carries: the machine, the versions, the command, then the numbers."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "peft", "kfp", "mlflow")


def environment(threads: int | None = None) -> dict:
    """The machine and the versions a result was measured with."""
    import importlib.metadata as md

    import torch

    cuda = torch.cuda.is_available()
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})",
            "cpu_count": os.cpu_count(), "threads": threads or torch.get_num_threads(),
            "platform": platform.platform(), "versions": versions}


def command_line() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])


def write_result(path: str | Path | None, benchmark: str, results: dict, *, threads: int | None = None) -> dict:
    """The result with its provenance, printed and (with `path`) written as JSON."""
    payload = {"benchmark": benchmark, "command": command_line(),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": environment(threads), "results": results}
    text = json.dumps(payload, indent=1, default=float)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")
    return payload
