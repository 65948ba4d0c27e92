"""Session 21. Usage: python docs/probes/trace_diff.py DIR SEED OUT.json MODEL_A MODEL_B [JSON]
What changed between two Reasoners' greedy traces on the rl holdout (the last groups, as `rl_holdout` scores them):
per (group modality, role, media kind), how many sides changed their trace, which cue fields changed, and how
many sides' Hit@1 flipped each way; with the most common (before -> after) cues of the changed sides. The
Embedder is DIR/seed-SEED's; JSON: EG-RL config overrides (the holdout's groups follow max_steps). rl split only."""
import json
import sys
from collections import Counter
from pathlib import Path

from embedrl.config import build_config
from embedrl.experiment import rl_holdout
from embedrl.train.egrl import EGRLStageConfig

root, seed, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
models = sys.argv[4:6]
overrides = {"branch_min_p": 0.001, "max_steps": 170, **json.loads(sys.argv[6] if len(sys.argv) > 6 else "{}")}
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir="/tmp/unused", **overrides)
embedder = root / f"seed-{seed}" / "embedder" / "model"
runs = [rl_holdout(root / "prepared", Path(m), embedder, cfg, n_groups=None, per_side=True) for m in models]


stats: dict = {}
for a, b in zip(runs[0]["sides"], runs[1]["sides"], strict=True):
    key = f"{a['modality']}/{a['role']}/{a['media_kind'] or 'text'}"
    s = stats.setdefault(key, {"sides": 0, "hits_a": 0, "hits_b": 0, "changed": 0, "gained": 0, "lost": 0,
                               "fields": Counter(), "pairs": Counter()})
    s["sides"] += 1
    s["hits_a"] += a["hit"]
    s["hits_b"] += b["hit"]
    s["gained"] += b["hit"] and not a["hit"]
    s["lost"] += a["hit"] and not b["hit"]
    if a["trace"] == b["trace"]:
        continue
    s["changed"] += 1
    ca, cb = a["cue"], b["cue"]  # None: malformed, as rl_holdout's format rate counts it
    if ca is None or cb is None:
        s["fields"]["format"] += 1
        continue
    for name in sorted(set(ca) | set(cb)):
        if ca.get(name) != cb.get(name):
            s["fields"][name] += 1
            s["pairs"][f"{name}: {json.dumps(ca.get(name))} -> {json.dumps(cb.get(name))}"] += 1
report = {"models": models, "overrides": overrides, "hit_at_1": [r["hit_at_1"] for r in runs], "by_side": {}}
for key, s in sorted(stats.items()):
    report["by_side"][key] = {**{k: v for k, v in s.items() if k not in ("fields", "pairs")},
                              "fields": dict(s["fields"]), "top_changes": s["pairs"].most_common(6)}
    print(key, json.dumps(report["by_side"][key]), flush=True)
out.write_text(json.dumps(report, indent=1) + "\n")
