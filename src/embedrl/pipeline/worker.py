"""One node of a distributed training stage (see embedrl.pipeline.distributed).

Run under torchrun: `torchrun -m embedrl.pipeline.worker --staging PREFIX`. Every rank downloads the
stage's inputs and runs the same stage function (the training code joins the process group from the
torchrun environment); rank 0 uploads the model and its metrics to PREFIX/outputs/model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from embedrl.pipeline.distributed import download_dir, upload_dir
from embedrl.pipeline.steps import Tracking, load_profile, train_egrl_step, train_embedder_step


def run_worker(prefix: str, workdir: str | Path) -> dict:
    workdir = Path(workdir)
    spec = yaml.safe_load((download_dir(f"{prefix}/spec", workdir / "spec") / "stage.yaml").read_text())
    inputs = {name: str(download_dir(f"{prefix}/inputs/{name}", workdir / "inputs" / name))
              for name in spec["inputs"]}
    out = workdir / "model"
    rank = int(os.environ.get("RANK", "0"))
    tracking = Tracking(**spec["tracking"]) if rank == 0 else Tracking()  # one MLflow run per stage
    config = dict(spec["config"]) or load_profile(spec["profile"])
    if spec["stage"] == "embedder":
        if spec.get("deepspeed_config"):
            config.setdefault("embedder", {})["deepspeed"] = spec["deepspeed_config"]
        metrics = train_embedder_step(inputs["data"], out, profile=spec["profile"], config=config,
                                      seed=spec["seed"], tracking=tracking)
    elif spec["stage"] == "egrl":
        metrics = train_egrl_step(inputs["data"], inputs["reasoner"], inputs["embedder"], out,
                                  profile=spec["profile"], config=config, seed=spec["seed"], tracking=tracking)
    else:
        raise ValueError(f"{prefix}/spec/stage.yaml: unknown stage {spec['stage']!r}")
    if rank == 0:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (out / "logs" / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
        upload_dir(out, f"{prefix}/outputs/model")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedrl.pipeline.worker", description=__doc__)
    parser.add_argument("--staging", required=True, help="the stage's staging prefix (s3://... or a path)")
    parser.add_argument("--workdir", default=None, help="local scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.workdir:
        run_worker(args.staging, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="embedrl-worker-") as tmp:
            run_worker(args.staging, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
