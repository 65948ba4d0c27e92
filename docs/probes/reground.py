"""Session 27. Usage: python docs/probes/reground.py DIR OUT SEED SETS_JSON EXTRA_JSON [REUSE]
The warm-up of an ablation DIR again with the phases named in REUSE (default "detail,track") copied from
DIR/perception-base into OUT and the others (the grounding phase at least) retrained under training seed SEED
(another data order), with the ablation's sft settings (SETS_JSON, as sft_variant.py) and EXTRA_JSON; the warm-up
goes to OUT/model with the prompt record of DIR/seed-0's cold start, so that warmup_check.py and first_marks.py can
score its marks' binding."""
import json
import shutil
import sys
from pathlib import Path

from embedrl.config import build_config
from embedrl.experiment import ablation_recipe
from embedrl.models.factory import load_model
from embedrl.train.sft import SFTStageConfig, _perception_warmup

root, out, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
sets, extra = json.loads(sys.argv[4]), json.loads(sys.argv[5])
overrides, perception_seeds = ablation_recipe("tiny", {"sft": sets})
sft = dict(overrides["sft"])
if perception_seeds:
    sft["perception_data"] = ",".join(str(root / "perception-data" / f"seed-{s}") for s in perception_seeds)
sft = {**sft, **extra}
for phase in (sys.argv[6] if len(sys.argv) > 6 else "detail,track").split(","):
    if not (out / phase).exists():
        shutil.copytree(root / "perception-base" / phase, out / phase)
cfg = build_config(SFTStageConfig, "tiny", "sft", seed=seed, output_dir=str(out / "unused"), **sft)
model, processor = load_model(root / "seed-0" / "init" / "reasoner")
_perception_warmup(model, processor, root / "prepared", out, cfg)
shutil.copy(root / "seed-0" / "sft" / "model" / "embedrl.json", out / "model" / "embedrl.json")
print("warm-up in", out / "model", flush=True)
