"""Session 17. Usage: python docs/probes/ablation_seed.py DIR SEED [SECTION.FIELD=VALUE ...]
One seed of `embedrl experiment ablation --profile tiny --data-seed 0 --out DIR` under the given overrides (the
ablation's `--set`), in the ablation's own layout: data, the shared perception warm-up (DIR/perception-base),
the Embedder, the cold start and EG-RL of DIR/seed-SEED, each scored on the rl holdout with its marks' binding
(DIR/seed-SEED/probe.json). Nothing is evaluated on the eval split, so settings can be tuned with it; the
ablation run afterwards on the same DIR and overrides reuses everything it trained. rl split only."""
import json
import sys
import time
from pathlib import Path

import holdout

from embedrl.cli import ROLE_SEED_OFFSET, _set_overrides
from embedrl.config import build_config
from embedrl.data.minimmeb import generate
from embedrl.data.prepare import prepare
from embedrl.experiment import ablation_recipe
from embedrl.models.factory import init_model_dir
from embedrl.models.spec import load_model_specs
from embedrl.train.egrl import EGRLStageConfig, train_egrl
from embedrl.train.embedder import EmbedderTrainConfig, train_embedder
from embedrl.train.sft import SFTStageConfig, train_sft

root, seed = Path(sys.argv[1]), int(sys.argv[2])
overrides, pseeds = ablation_recipe("tiny", _set_overrides(sys.argv[3:]))
res: dict = {"overrides": sys.argv[3:]}
timings = res.setdefault("timings", {})


def timed(name, fn, *args, **kwargs):
    t0 = time.time()
    out = fn(*args, **kwargs)
    timings[name] = round(time.time() - t0, 1)
    print("timing", name, timings[name], flush=True)
    return out


prepared = root / "prepared"
if not (prepared / "manifest.json").exists():
    generate(root / "data", seed=0, progress=False)
    prepare(root / "data", prepared)
roots = [root / "perception-data" / f"seed-{s}" for s in pseeds]
for s, data in zip(pseeds, roots, strict=True):
    if not (data / "manifest.json").exists():
        generate(data, seed=s, progress=False)
sft = {"perception_dir": str(root / "perception-base"), **overrides["sft"],
       "perception_data": ",".join(map(str, roots))}
base = root / f"seed-{seed}"
specs = load_model_specs("tiny")
for role in ("embedder", "reasoner"):
    if not (base / "init" / role / "embedrl.json").exists():
        init_model_dir(specs[role], base / "init" / role, seed=seed + ROLE_SEED_OFFSET[role])
lora = specs["embedder"].to_dict() if specs["embedder"].lora_r > 0 else None
emb_cfg = build_config(EmbedderTrainConfig, "tiny", "embedder", seed=seed, **overrides.get("embedder", {}))
timed("embedder", train_embedder, prepared, base / "init" / "embedder", base / "embedder", emb_cfg, lora=lora,
      progress=False)
sft_cfg = build_config(SFTStageConfig, "tiny", "sft", seed=seed, output_dir=str(base / "sft"), **sft)
timed("sft", train_sft, prepared, base / "init" / "reasoner", base / "sft", sft_cfg)
egrl_cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(base / "egrl"),
                        **overrides["egrl"])
emb = base / "embedder" / "model"
holdout.score(res, seed, {"sft": base / "sft" / "model"}, prepared, emb, egrl_cfg)
timed("egrl", train_egrl, prepared, base / "sft" / "model", emb, base / "egrl", egrl_cfg)
holdout.score(res, seed, {"egrl": base / "egrl" / "model"}, prepared, emb, egrl_cfg)
(base / "probe.json").write_text(json.dumps(res, indent=1) + "\n")
print("done", json.dumps(timings), flush=True)
