"""Session 15. Usage: [GROUNDING=N] [TRACES=teacher] python docs/probes/tracks.py DIR SEED TRACK_SIZE TRACK_STEPS [egrl]
A cold start of seed SEED of an ablation DIR whose Reasoner's clip prompts carry each object's track strip
(`sft.reasoner_track_size`), with the clips' gold traces among the grounding examples (`sft.grounding_video`).
Its warm-up continues DIR's one-crop detail phase (perception-base/detail, step 600: the recipe's first phase,
which the strips do not change) with TRACK_STEPS steps of the strip question (the dot replayed) and the
grounding phase: the recipe's steps, or N with GROUNDING=N (the strip phase then copied from the run without
GROUNDING when it exists); TRACES=teacher: the grounding examples' traces are the teacher's where it names the
evidence (`sft.grounding_traces`, session 16). Warm-up in DIR/perception-base-tracksSIZE-STEPS[-gN][-teacher]. Prints the rl holdout and
binding against the ablation's cold start (and EG-RL with `egrl`); video_diag.py gives the object and frame
rates. rl split only."""
import json
import os
import shutil
import sys
import time
from pathlib import Path

import holdout

from embedrl.config import build_config
from embedrl.experiment import ablation_recipe
from embedrl.models.factory import load_model
from embedrl.train.egrl import EGRLStageConfig, train_egrl
from embedrl.train.sft import PERCEPTION_DONE, SFTStageConfig, _perception_warmup, train_sft

root, seed, size, track_steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with_egrl = "egrl" in sys.argv[5:]
prepared, base = root / "prepared", root / f"seed-{seed}"
grounding = int(os.environ.get("GROUNDING", "0"))
traces = os.environ.get("TRACES", "gold")
tag = f"tracks{size}-{track_steps}" + (f"-g{grounding}" if grounding else "") + ("" if traces == "gold" else f"-{traces}")
warmup, first_warmup = root / f"perception-base-{tag}", root / f"perception-base-tracks{size}-{track_steps}"
out = root / f"probe-{tag}" / f"seed-{seed}"
overrides, pseeds = ablation_recipe("tiny")
if grounding:
    overrides["sft"] = {**overrides["sft"], "grounding_steps": grounding}
if warmup != first_warmup and (first_warmup / "track").exists() and not (warmup / "track").exists():
    shutil.copytree(first_warmup / "track", warmup / "track")  # resumed from its last checkpoint
sft = {**overrides["sft"], "reasoner_track_size": size, "track_steps": track_steps, "grounding_video": True,
       "grounding_traces": traces,
       "perception_dir": str(warmup),
       "perception_data": ",".join(str(root / "perception-data" / f"seed-{s}") for s in pseeds)}
sft_cfg = build_config(SFTStageConfig, "tiny", "sft", seed=seed, output_dir=str(out / "sft"), **sft)
res = {}
t0 = time.time()
if not (warmup / "model" / PERCEPTION_DONE).exists():
    detail = root / "perception-base" / "detail" / "checkpoints" / "checkpoint-600"
    model, processor = load_model(detail)
    rest = build_config(SFTStageConfig, "tiny", "sft", seed=0, output_dir=str(warmup),
                        **{**sft, "perception_steps": 0})
    _perception_warmup(model, processor, prepared, warmup, rest)
    marker = warmup / "model" / PERCEPTION_DONE
    done = json.loads(marker.read_text())
    done["settings"]["perception_steps"] = sft_cfg.perception_steps  # the detail phase it continues
    marker.write_text(json.dumps(done))
    res["warmup_s"] = time.time() - t0
t0 = time.time()
if not (out / "sft" / "model" / "embedrl.json").exists():
    train_sft(prepared, base / "init" / "reasoner", out / "sft", sft_cfg)
res["sft_s"] = time.time() - t0
print("timings", res, flush=True)
emb = base / "embedder" / "model"
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out / "egrl"),
                   **overrides["egrl"])


def score(models: dict) -> None:
    holdout.score(res, seed, models, prepared, emb, cfg)


score({"sft": base / "sft" / "model", "sft_tracks": out / "sft" / "model"})
if with_egrl:
    t0 = time.time()
    train_egrl(prepared, out / "sft" / "model", emb, out / "egrl", cfg)
    res["egrl_s"] = time.time() - t0
    score({"egrl": base / "egrl" / "model", "egrl_tracks": out / "egrl" / "model"})
(out / "probe.json").write_text(json.dumps(res, indent=1))
print("done", json.dumps({k: v for k, v in res.items() if k.endswith("_s")}), flush=True)
