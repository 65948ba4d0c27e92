"""Session 24. Usage: python docs/probes/sft_variant.py DIR NAME SETS_JSON EXTRA_JSON SEED...
Per seed of an ablation DIR: the SFT cold start again, from the seed's init Reasoner and the ablation's shared
perception warm-up (DIR/perception-base, reused: its settings must match), with the ablation's sft settings
(the profile's recipe, then SETS_JSON: the `--set sft.*` values the ablation ran with), then EXTRA_JSON (the
variant, e.g. '{"negative_sides": true}'), into DIR/seed-N/sft-NAME. dev_eval.py scores it."""
import json
import sys
import time
from pathlib import Path

from embedrl.config import build_config
from embedrl.experiment import ablation_recipe
from embedrl.train.sft import SFTStageConfig, train_sft

root, name, sets, extra = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
overrides, perception_seeds = ablation_recipe("tiny", {"sft": sets})
sft = dict(overrides["sft"])
if perception_seeds:  # as run_ablation sets them
    sft["perception_data"] = ",".join(str(root / "perception-data" / f"seed-{s}") for s in perception_seeds)
sft = {"perception_dir": str(root / "perception-base"), **sft, **extra}
for seed in map(int, sys.argv[5:]):
    base, out = root / f"seed-{seed}", root / f"seed-{seed}" / f"sft-{name}"
    cfg = build_config(SFTStageConfig, "tiny", "sft", seed=seed, output_dir=str(out), **sft)
    started = time.time()
    result = train_sft(root / "prepared", base / "init" / "reasoner", out, cfg)
    print(seed, name, f"trained in {time.time() - started:.0f} s, loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}",
          flush=True)
