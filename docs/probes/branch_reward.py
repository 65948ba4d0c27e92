"""Session 18. Usage: python docs/probes/branch_reward.py DIR SEED MODEL [GROUPS]
What EG-RL's reward tells a Reasoner's branch rollouts on the rl image sides with one dotted region, in the first
GROUPS (default 24) groups EG-RL trains on, split by whether the teacher sees the dot: the share of sides where
the dot's branch earns the highest outcome reward (ties count), the mean group-standardised advantage of the
dot's rollouts and of the rest, the regions explored per side. Branch rollouts as EG-RL makes them (recipe egrl
settings; BRANCH_MIN_P=x: egrl.branch_min_p, branches among the marks at least x times as likely as the best). rl split only."""
import json
import os
import sys
from pathlib import Path

import holdout
import numpy as np

from embedrl.config import build_config
from embedrl.experiment import _rl_sampling, ablation_recipe
from embedrl.tcot.regions import first_mark
from embedrl.tcot.teachers import sees_dot
from embedrl.train.egrl import EGRLStageConfig
from embedrl.train.exploration import explore_only_choices
from embedrl.train.perception import single_detail

root, seed, model_dir = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
n_groups = int(sys.argv[4]) if len(sys.argv) > 4 else 24
overrides, _ = ablation_recipe("tiny")
branch = {"branch_min_p": float(os.environ["BRANCH_MIN_P"])} if "BRANCH_MIN_P" in os.environ else {}
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir="/tmp/branch_reward",
                   **{**overrides["egrl"], **branch})
rows, sides, store, rewards, reasoner = _rl_sampling(root / "prepared", model_dir, root / f"seed-{seed}" / "embedder" /
                                                     "model", cfg, ".branch_reward.jsonl")
g, per_group = cfg.num_generations, 2 * cfg.pairs_per_step
branch_min_p = cfg.branch_threshold("image")  # which marks the image sides' branches take, as in train_egrl
explore_only_choices(reasoner.model, reasoner.processor.tokenizer, branch=True, group_size=g, min_p=branch_min_p)
stats = {"teacher_sees": [], "teacher_misses": []}
for index in range(n_groups):
    group = rows[index * per_group:(index + 1) * per_group]
    refs = [sides[r["side"]] for r in group]
    texts, outcome = holdout.branch_rollouts(reasoner, rewards, store, group, sides, cfg)
    for s, ref in enumerate(refs):
        found = single_detail(ref.scene or {}) if ref.media_kind == "image" else None
        if not found:
            continue
        marks = np.array([first_mark(t) or 0 for t in texts[s * g:(s + 1) * g]])
        r = outcome[s]
        adv = (r - r.mean()) / (r.std() + 1e-4)
        on_dot = marks == found[1]
        key = "teacher_sees" if sees_dot(ref.scene["objects"][found[1] - 1]) else "teacher_misses"
        stats[key].append({"explored": len(set(marks.tolist())), "dot_explored": bool(on_dot.any()),
                           "dot_best": bool(on_dot.any() and r[on_dot].max() >= r.max() - 1e-9),
                           "dot_strictly_best": bool(on_dot.any() and (~on_dot).any()
                                                     and r[on_dot].max() > r[~on_dot].max() + 1e-9),
                           "adv_dot": float(adv[on_dot].mean()) if on_dot.any() else None,
                           "adv_rest": float(adv[~on_dot].mean()) if (~on_dot).any() else None,
                           "spread": float(r.std())})
summary = holdout.summarize(stats, ("explored", "dot_explored", "dot_best", "dot_strictly_best", "adv_dot", "adv_rest", "spread"), model_dir)
(root / f"seed-{seed}" / f"branch_reward-{branch_min_p:g}.json").write_text(json.dumps({"model": model_dir, "groups": n_groups, "branch_min_p": branch_min_p,
                                                                      **summary}, indent=1))
