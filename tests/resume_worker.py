"""Runs one training stage in its own process, so that a test can SIGKILL it and run it again.

usage: python tests/resume_worker.py STAGE SPEC_JSON
SPEC_JSON: {"profile", "data", "model" (or "reasoner" and "embedder"), "out", "overrides": {...}}
"""

import json
import logging
import sys


def main(stage: str, spec: dict) -> None:
    from embedrl.config import EmbedderTrainConfig, build_config

    overrides = spec.get("overrides", {})
    if stage == "embedder":
        from embedrl.train.embedder import train_embedder

        config = build_config(EmbedderTrainConfig, spec["profile"], "embedder", **overrides)
        train_embedder(spec["data"], spec["model"], spec["out"], config, progress=False)
    elif stage == "sft":
        from embedrl.train.sft import SFTStageConfig, train_sft

        config = build_config(SFTStageConfig, spec["profile"], "sft", output_dir=spec["out"], **overrides)
        train_sft(spec["data"], spec["model"], spec["out"], config)
    elif stage == "egrl":
        from embedrl.train.egrl import EGRLStageConfig, train_egrl

        config = build_config(EGRLStageConfig, spec["profile"], "egrl", output_dir=spec["out"], **overrides)
        train_egrl(spec["data"], spec["reasoner"], spec["embedder"], spec["out"], config)
    else:
        raise SystemExit(f"unknown stage {stage!r}: embedder, sft or egrl")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    main(sys.argv[1], json.loads(sys.argv[2]))
