"""Session 19. Usage: python docs/probes/egrl_by_modality.py DIR NAME JSON SEED {video,image}
EG-RL from seed SEED's cold start and Embedder (recipe egrl settings under the JSON overrides) on one kind of RL
group only: `video` keeps the groups with a clip side, `image` the others, both from the groups the first
`max_steps` steps would train on (the last 64 stay held out), one step per kept group. Into DIR/seed-N/egrl-NAME,
then the rl holdout and binding as egrl_variant.py. Tells whether one modality's updates move the other's marks.
rl split only."""
import json
import sys
import time
from pathlib import Path

import holdout

import embedrl.train.egrl as egrl
from embedrl.config import build_config
from embedrl.experiment import ablation_recipe

root, name, extra, seed, kind = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
overrides, _ = ablation_recipe("tiny")
base, out = root / f"seed-{seed}", root / f"seed-{seed}" / f"egrl-{name}"
emb = base / "embedder" / "model"
cfg = build_config(egrl.EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out),
                   **{**overrides["egrl"], **extra})
all_rows, all_sides = egrl.egrl_dataset(root / "prepared", pairs_per_step=cfg.pairs_per_step,
                                        prompt=egrl.ReasonerPrompt.of_model(base / "sft" / "model"), seed=seed)
per_group = 2 * cfg.pairs_per_step
groups = [all_rows[i:i + per_group] for i in range(0, cfg.max_steps * per_group, per_group)]
kept = [g for g in groups if any(r["modality"] == "video" for r in g) == (kind == "video")]
cfg.max_steps = len(kept)
print(f"{kind}: {len(kept)} of the first {len(groups)} groups", flush=True)
full_dataset, egrl.egrl_dataset = egrl.egrl_dataset, lambda *args, **kwargs: ([r for g in kept for r in g], all_sides)
started = time.time()
egrl.train_egrl(root / "prepared", base / "sft" / "model", emb, out, cfg)
egrl.egrl_dataset = full_dataset
res = {"train_s": time.time() - started, "overrides": extra, "kind": kind, "groups": len(kept)}
holdout.score(res, seed, {name: out / "model"}, root / "prepared", emb, cfg)
(out / "probe.json").write_text(json.dumps(res, indent=1))
