"""Session 14. Usage: python docs/probes/frame112.py DIR SEED FRAME_SIZE [egrl] [video]
A cold start of seed SEED of an ablation DIR whose Reasoner sees each video frame at FRAME_SIZE px (the recipe:
56; the clip is stored at 112), from a copy of DIR's perception warm-up (image-only with grounding_video off, so
the frame size does not change it); rl holdout by modality against the ablation's SFT of that seed, and
optionally EG-RL (the recipe) from it. With `video`: sft.grounding_video on, whose warm-up is trained afresh at that
frame size (DIR/perception-base-frameN-video). rl split only."""
import json
import shutil
import sys
import time
from pathlib import Path

import holdout

from embedrl.config import build_config
from embedrl.experiment import ablation_recipe
from embedrl.train.egrl import EGRLStageConfig, train_egrl
from embedrl.train.sft import SFTStageConfig, train_sft

root, seed, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with_egrl, video = "egrl" in sys.argv[4:], "video" in sys.argv[4:]
tag = f"frame{size}" + ("-video" if video else "")
prepared, base = root / "prepared", root / f"seed-{seed}"
out = root / f"probe-{tag}" / f"seed-{seed}"
overrides, pseeds = ablation_recipe("tiny")
warmup = root / f"perception-base-{tag}"
if not video and not warmup.exists():
    shutil.copytree(root / "perception-base", warmup)
    marker = warmup / "model" / "embedrl-perception.json"
    done = json.loads(marker.read_text())
    assert not done["settings"]["grounding_video"], "a video warm-up depends on the frame size"
    done["settings"]["reasoner_prompt"]["frame_size"] = size
    marker.write_text(json.dumps(done))
sft = {**overrides["sft"], "reasoner_frame_size": size, "perception_dir": str(warmup), "grounding_video": video,
       "perception_data": ",".join(str(root / "perception-data" / f"seed-{s}") for s in pseeds)}
sft_cfg = build_config(SFTStageConfig, "tiny", "sft", seed=seed, output_dir=str(out / "sft"), **sft)
emb = base / "embedder" / "model"
res = {}
t0 = time.time()
if not (out / "sft" / "model" / "embedrl.json").exists():
    train_sft(prepared, base / "init" / "reasoner", out / "sft", sft_cfg)
res["sft_s"] = time.time() - t0
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out / "egrl"), **overrides["egrl"])


def score(models: dict) -> None:
    holdout.score(res, seed, models, prepared, emb, cfg)


score({"sft56": base / "sft" / "model", f"sft{size}": out / "sft" / "model"})
if with_egrl:
    t0 = time.time()
    train_egrl(prepared, out / "sft" / "model", emb, out / "egrl", cfg)
    res["egrl_s"] = time.time() - t0
    score({"egrl56": base / "egrl" / "model", f"egrl{size}": out / "egrl" / "model"})
(out / "probe.json").write_text(json.dumps(res, indent=1))
print("done", json.dumps({k: v for k, v in res.items() if k.endswith("_s")}), flush=True)
