"""Session 17. Usage: python docs/probes/reference_holdout.py DIR SEED
The rl holdout of the gold and the teacher traces, scored by ablation DIR's Embedder of seed SEED (the recipe's
egrl settings): the ceiling and the floor that a cold start and EG-RL sit between. rl split only."""
import json
import sys
from pathlib import Path

from embedrl.config import build_config
from embedrl.experiment import ablation_recipe, rl_holdout
from embedrl.train.egrl import EGRLStageConfig

root, seed = Path(sys.argv[1]), int(sys.argv[2])
overrides, _ = ablation_recipe("tiny")
config = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(root / f"seed-{seed}" / "reference"),
                      **overrides["egrl"])
for source in ("gold", "teacher"):
    result = rl_holdout(root / "prepared", None, root / f"seed-{seed}" / "embedder" / "model", config, n_groups=None,
                        source=source)
    print(seed, source, json.dumps(result), flush=True)
