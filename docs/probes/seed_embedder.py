"""Session 30. Usage: python docs/probes/seed_embedder.py DIR SEED
Seed SEED's initial models (when missing) and Embedder in an ablation DIR, as run_stages makes them (the tiny
profile and the ablation's recipe), resuming DIR/seed-N/embedder/checkpoints: a seed that an ablation stopped
before, or one it did not run, for the dev-set probes (sft_variant.py, egrl_variant.py, dev_eval.py)."""
import sys
import time
from pathlib import Path

from embedrl.cli import ROLE_SEED_OFFSET
from embedrl.config import EmbedderTrainConfig, build_config
from embedrl.experiment import ablation_recipe
from embedrl.models.factory import init_model_dir
from embedrl.models.spec import load_model_specs
from embedrl.train.embedder import train_embedder

root, seed = Path(sys.argv[1]), int(sys.argv[2])
overrides, _ = ablation_recipe("tiny")
specs = load_model_specs("tiny")
lora = specs["embedder"].to_dict() if specs["embedder"].lora_r > 0 else None
cfg = build_config(EmbedderTrainConfig, "tiny", "embedder", seed=seed, **overrides.get("embedder", {}))
out = root / f"seed-{seed}"
for role in ("embedder", "reasoner"):
    if not (out / "init" / role / "embedrl.json").exists():
        init_model_dir(specs[role], out / "init" / role, seed=seed + ROLE_SEED_OFFSET[role])
started = time.time()
train_embedder(root / "prepared", out / "init" / "embedder", out / "embedder", cfg, lora=lora, progress=False)
print("embedder", seed, "trained in", round(time.time() - started), "s", flush=True)
