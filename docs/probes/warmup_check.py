"""Session 27. Usage: python docs/probes/warmup_check.py DIR SEED OUT.json MODEL...
Each Reasoner (a warm-up's model or a cold start) on 64 rl groups past the first four (never the eval split):
Hit@1 by modality with its greedy traces (DIR/seed-SEED's Embedder) and the image marks' binding (first mark on
the dotted region). Shows whether a warm-up kept its pointer before an ablation spends its seeds on it."""
import json
import sys
from pathlib import Path

from embedrl.config import build_config
from embedrl.experiment import mark_binding, rl_holdout
from embedrl.train.egrl import EGRLStageConfig

root, seed, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out.parent / "unused"),
                   max_steps=1, gradient_accumulation_steps=4)
report = json.loads(out.read_text()) if out.exists() else {}
for model in sys.argv[4:]:
    if model not in report:
        result = rl_holdout(root / "prepared", model, root / f"seed-{seed}" / "embedder" / "model", cfg, n_groups=64)
        result["binding"] = mark_binding(root / "prepared", model, cfg, n_groups=64)
        report[model] = result
        out.write_text(json.dumps(report, indent=1) + "\n")
    print(model, json.dumps(report[model]), flush=True)
