"""Session 31. Usage: python docs/probes/egrl_epochs.py DIR NAME JSON SEED FROM EPOCHS {image,all}
EG-RL from DIR/seed-N/FROM/model (e.g. sft-strip) on the RL groups without a clip side only (`image`) or on all of
them (`all`), EPOCHS passes over them (each pass in its own seeded order), with the recipe's egrl settings under the
JSON overrides; max_steps = the groups / gradient_accumulation_steps. Into DIR/seed-N/egrl-NAME; trains only
(dev_eval.py scores it). Tells how far the image pointer on the teacher's blind spots moves with several times the
image updates of one mixed epoch, and what video loses when no clip rollout holds it. rl split only."""
import json
import sys
import time
from pathlib import Path

import numpy as np

import embedrl.train.egrl as egrl
from embedrl.config import build_config
from embedrl.experiment import ablation_recipe

root, name, extra, seed = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
cold_start, epochs, kind = sys.argv[5], int(sys.argv[6]), sys.argv[7]
base, out = root / f"seed-{seed}", root / f"seed-{seed}" / f"egrl-{name}"
cfg = build_config(egrl.EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out),
                   **{**ablation_recipe("tiny")[0]["egrl"], **extra})
model = base / cold_start / "model"
rows, sides = egrl.egrl_dataset(root / "prepared", pairs_per_step=cfg.pairs_per_step,
                                prompt=egrl.ReasonerPrompt.of_model(model), seed=seed)
per_group = 2 * cfg.pairs_per_step
groups = [rows[i:i + per_group] for i in range(0, len(rows), per_group)]
kept = [g for g in groups if kind == "all" or all(r["modality"] != "video" for r in g)]
rng = np.random.default_rng(seed)
laid_out = [row for _ in range(epochs) for i in rng.permutation(len(kept)) for row in kept[i]]
cfg.max_steps = epochs * len(kept) // cfg.gradient_accumulation_steps
cfg.warmup_steps = max(1, cfg.max_steps // 10)
print(f"{len(kept)} of {len(groups)} groups ({kind}), {epochs} passes, {cfg.max_steps} updates", flush=True)
full_dataset, egrl.egrl_dataset = egrl.egrl_dataset, lambda *args, **kwargs: (laid_out, sides)
started = time.time()
egrl.train_egrl(root / "prepared", model, base / "embedder" / "model", out, cfg)
egrl.egrl_dataset = full_dataset
res = {"train_s": time.time() - started, "overrides": extra, "from": cold_start, "epochs": epochs, "kind": kind,
       "groups": len(kept), "updates": cfg.max_steps}
(out / "probe.json").write_text(json.dumps(res, indent=1))
print(seed, name, "trained in", round(res["train_s"]), "s", flush=True)
