"""Session 14. Usage: python docs/probes/egrl_variant.py DIR NAME JSON SEED...
Per seed of an ablation DIR: EG-RL from its cold start and Embedder with the recipe's egrl settings under the
JSON overrides (e.g. '{"max_steps": 108}'), into DIR/seed-N/egrl-NAME; rl holdout (by modality) and marks'
binding of it, next to the cold start's and the ablation's EG-RL (their scores taken from DIR/seed-N/probe.json when
ablation_seed.py wrote one). Session 18: '{"branch_min_p": 0.001}' makes branch rollouts take the marks at least
0.001 times as likely as the best (egrl.branch_min_p). rl split only.
Session 22: with --train-only first, EG-RL is trained and nothing scored (dev_eval.py scores it on the dev set).
Session 25: --from SFT (after --train-only) starts from DIR/seed-N/SFT/model instead of the ablation's cold start
(e.g. sft-flashless, written by sft_variant.py)."""
import json
import sys
import time
from pathlib import Path

import holdout

from embedrl.config import build_config
from embedrl.experiment import ablation_recipe
from embedrl.train.egrl import EGRLStageConfig, train_egrl

args = sys.argv[1:]
train_only = args[:1] == ["--train-only"]
args = args[1:] if train_only else args
cold_start = "sft"
if args[:1] == ["--from"]:
    cold_start, args = args[1], args[2:]
root, name, extra = Path(args[0]), args[1], json.loads(args[2])
overrides, _ = ablation_recipe("tiny")
for seed in map(int, args[3:]):
    base, out = root / f"seed-{seed}", root / f"seed-{seed}" / f"egrl-{name}"
    emb = base / "embedder" / "model"
    cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out), **{**overrides["egrl"], **extra})
    started = time.time()
    train_egrl(root / "prepared", base / cold_start / "model", emb, out, cfg)
    res = {"train_s": time.time() - started, "overrides": extra}
    if train_only:
        (out / "probe.json").write_text(json.dumps(res, indent=1))
        print(seed, name, "trained in", round(res["train_s"]), "s", flush=True)
        continue
    scored = json.loads((base / "probe.json").read_text()) if (base / "probe.json").exists() else {}
    for label, model in (("sft", base / "sft" / "model"), ("egrl", base / "egrl" / "model"), (name, out / "model")):
        if label in scored:
            res[label] = scored[label]
            print(seed, label, "(ablation_seed.py)", json.dumps(res[label]), flush=True)
            continue
        holdout.score(res, seed, {label: model}, root / "prepared", emb, cfg)
    (out / "probe.json").write_text(json.dumps(res, indent=1))
