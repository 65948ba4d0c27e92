"""Session 30. Usage: python docs/probes/seed_embedder.py DIR SEED
Seed SEED's initial models (when missing) and Embedder in an ablation DIR, as run_stages makes them (the tiny
profile and the ablation's recipe), resuming DIR/seed-N/embedder/checkpoints: a seed that an ablation stopped
before, or one it did not run, for the dev-set probes (sft_variant.py, egrl_variant.py, dev_eval.py)."""
import sys
import time
from pathlib import Path

from embedrl.experiment import ablation_recipe, init_seed_models, train_seed_embedder

root, seed = Path(sys.argv[1]), int(sys.argv[2])
out = root / f"seed-{seed}"
init_seed_models("tiny", out, seed)
started = time.time()
train_seed_embedder(root / "prepared", out, "tiny", seed, overrides=ablation_recipe("tiny")[0])
print("embedder", seed, "trained in", round(time.time() - started), "s", flush=True)
