"""Session 17. Usage: python docs/probes/ablation_seed.py DIR SEED [SECTION.FIELD=VALUE ...]
One seed of `embedrl experiment ablation --profile tiny --data-seed 0 --out DIR` under the given overrides (the
ablation's `--set`), in the ablation's own layout: data, the shared perception warm-up (DIR/perception-base),
the Embedder, the cold start and EG-RL of DIR/seed-SEED (`run_stages`, as the ablation runs them), each scored on the rl holdout with its marks' binding
(DIR/seed-SEED/probe.json). Nothing is evaluated on the eval split, so settings can be tuned with it; the
ablation run afterwards on the same DIR and overrides reuses everything it trained. rl split only."""
import json
import sys
from pathlib import Path

import holdout

from embedrl.cli import _set_overrides
from embedrl.config import build_config
from embedrl.data.minimmeb import generate
from embedrl.data.prepare import prepare
from embedrl.experiment import ablation_recipe, run_stages
from embedrl.train.egrl import EGRLStageConfig

root, seed = Path(sys.argv[1]), int(sys.argv[2])
overrides, pseeds = ablation_recipe("tiny", _set_overrides(sys.argv[3:]))
res: dict = {"overrides": sys.argv[3:]}

prepared = root / "prepared"
if not (prepared / "manifest.json").exists():
    generate(root / "data", seed=0, progress=False)
    prepare(root / "data", prepared)
roots = [root / "perception-data" / f"seed-{s}" for s in pseeds]
for s, data in zip(pseeds, roots, strict=True):
    if not (data / "manifest.json").exists():
        generate(data, seed=s, progress=False)
sft = {"perception_dir": str(root / "perception-base"), **overrides["sft"],
       "perception_data": ",".join(map(str, roots))}
base = root / f"seed-{seed}"
run = run_stages(prepared, base, "tiny", seed, overrides={**overrides, "sft": sft})  # what the ablation runs
res["timings"] = run.timings
egrl_cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(base / "egrl"),
                        **overrides["egrl"])
holdout.score(res, seed, {"sft": run.sft, "egrl": run.egrl}, prepared, run.embedder, egrl_cfg)
(base / "probe.json").write_text(json.dumps(res, indent=1) + "\n")
print("done", json.dumps(run.timings), flush=True)
