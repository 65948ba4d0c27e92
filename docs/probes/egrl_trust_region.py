"""Session 13. Usage: python docs/probes/egrl_trust_region.py DIR SEED...
Per seed of an ablation DIR: rl holdout (by modality) and marks' binding of its SFT and EG-RL, and of
EG-RL with a trust region (num_iterations 2, lr 5e-5, 108 steps = the same 54 generations) from the same
cold start and Embedder. rl split only."""
import json, sys, time
from pathlib import Path
from embedrl.config import build_config
from embedrl.experiment import ablation_recipe, rl_holdout, mark_binding
from embedrl.train.egrl import EGRLStageConfig, train_egrl

root = Path(sys.argv[1]); seeds = [int(s) for s in sys.argv[2:]]
prepared = root / "prepared"
overrides, _ = ablation_recipe("tiny")
extra = {"num_iterations": 2, "learning_rate": 5e-5, "max_steps": 108}
for seed in seeds:
    base = root / f"seed-{seed}"
    emb = base / "embedder" / "model"
    cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(base / "x"), **overrides["egrl"])
    res = {}
    out = base / "egrl-tr"
    t0 = time.time()
    tr_cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out), **{**overrides["egrl"], **extra})
    train_egrl(prepared, base / "sft" / "model", emb, out, tr_cfg)
    res["tr_train_s"] = time.time() - t0
    for name, model in (("sft", base / "sft" / "model"), ("egrl", base / "egrl" / "model"), ("egrl_tr", out / "model")):
        res[name] = rl_holdout(prepared, model, emb, cfg, n_groups=None)
        res[name]["binding"] = mark_binding(prepared, model, cfg, n_groups=None)["binding_rate"]
        print(seed, name, json.dumps(res[name]), flush=True)
    (base / "tr_probe.json").write_text(json.dumps(res, indent=1))
    print("seed", seed, "done", flush=True)
