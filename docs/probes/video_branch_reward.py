"""Session 19. Usage: python docs/probes/video_branch_reward.py DIR SEED MODEL JSON [GROUPS]
What EG-RL's reward tells a Reasoner's branch rollouts on the rl clip sides whose flash is in view, in the first
GROUPS (default 48) groups EG-RL trains on, split by whether the teacher sees the flash: the share of sides where
the flashing object's branch earns the highest outcome reward (ties count), the mean group-standardised advantage
of its rollouts and of the rest, the objects explored per side, and how often the rollouts' key frame is right.
Branch rollouts as EG-RL makes them on a clip side (recipe egrl settings under the JSON overrides, e.g.
'{"branch_min_p": 0.001, "sample_after_branch": false}'). The companion of branch_reward.py (image sides). rl split
only."""
import json
import re
import sys
from pathlib import Path

import holdout
import numpy as np

from embedrl.config import build_config
from embedrl.experiment import _rl_sampling, ablation_recipe
from embedrl.tcot.regions import first_mark
from embedrl.tcot.teachers import flash_frame, sees_flash
from embedrl.train.egrl import EGRLStageConfig
from embedrl.train.exploration import explore_only_choices

root, seed, model_dir, extra = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
n_groups = int(sys.argv[5]) if len(sys.argv) > 5 else 48
overrides, _ = ablation_recipe("tiny")
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir="/tmp/video_branch_reward",
                   **{**overrides["egrl"], **extra})
rows, sides, store, rewards, reasoner = _rl_sampling(root / "prepared", model_dir, root / f"seed-{seed}" / "embedder" /
                                                     "model", cfg, ".video_branch_reward.jsonl")
g, per_group = cfg.num_generations, 2 * cfg.pairs_per_step
explore_only_choices(reasoner.model, reasoner.processor.tokenizer, branch=True, group_size=g,
                     min_p=cfg.branch_threshold("video"), sample_after_branch=cfg.sample_after_branch)
stats = {"teacher_sees": [], "teacher_misses": []}
for index in range(n_groups):
    group = rows[index * per_group:(index + 1) * per_group]
    refs = [sides[r["side"]] for r in group]
    if not any(ref.media_kind == "video" for ref in refs):
        continue
    texts, outcome = holdout.branch_rollouts(reasoner, rewards, store, group, sides, cfg)
    for s, ref in enumerate(refs):
        if ref.media_kind != "video":
            continue
        scene, event = ref.scene, ref.scene["event"]
        frame_shown = flash_frame(scene)
        if frame_shown is None:
            continue
        side_texts = texts[s * g:(s + 1) * g]
        marks = np.array([first_mark(t) or 0 for t in side_texts])
        frames = [re.search(r"frame (\d+)", t) for t in side_texts]
        frame_ok = [bool(f) and int(f.group(1)) == frame_shown for f in frames]
        r = outcome[s]
        adv = (r - r.mean()) / (r.std() + 1e-4)
        on_object = marks == event["object"] + 1
        key = "teacher_sees" if sees_flash(scene["objects"][event["object"]]) else "teacher_misses"
        stats[key].append({"explored": len(set(marks.tolist())), "object_explored": bool(on_object.any()),
                           "object_best": bool(on_object.any() and r[on_object].max() >= r.max() - 1e-9),
                           "adv_object": float(adv[on_object].mean()) if on_object.any() else None,
                           "adv_rest": float(adv[~on_object].mean()) if (~on_object).any() else None,
                           "frame_ok": float(np.mean(frame_ok)),
                           "adv_frame_ok": float(adv[np.array(frame_ok)].mean()) if any(frame_ok) else None,
                           "spread": float(r.std())})
summary = holdout.summarize(stats, ("explored", "object_explored", "object_best", "adv_object", "adv_rest", "frame_ok", "adv_frame_ok", "spread"), model_dir)
name = "-".join(f"{k}={v}" for k, v in sorted(extra.items())) or "recipe"
(root / f"seed-{seed}" / f"video_branch_reward-{name}.json").write_text(
    json.dumps({"model": model_dir, "groups": n_groups, "overrides": extra, **summary}, indent=1) + "\n")
