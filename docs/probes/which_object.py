"""Session 25. Usage: python docs/probes/which_object.py DIR DEV_PREPARED OUT_NAME SETS_JSON EXTRA_JSON [LIMIT]
The warm-up of an ablation DIR up to its track phase only (no grounding, no cold start), in DIR/OUT_NAME (copy
DIR/perception-base/detail there first to reuse the detail phase), with the ablation's sft settings (SETS_JSON, as
sft_variant.py) and EXTRA_JSON (e.g. '{"track_form": "which", "flashless_clips": true}'); then asks it "Which object
flashes?" in each dev Moment-Flash side's own prompt (60 whole clips, then candidate segments, LIMIT sides): right
rate by side kind, against "#k" of the flashing object or "none"."""
import collections
import json
import sys
from pathlib import Path

from flash_questions import greedy_answers, moment_sides

from embedrl.config import build_config
from embedrl.experiment import ablation_recipe
from embedrl.models.factory import load_model
from embedrl.models.reasoner import reasoner_input
from embedrl.tcot.teachers import flash_frame
from embedrl.train.perception import TRACK_WHICH_QUESTION, _asked
from embedrl.train.sft import SFTStageConfig, _perception_warmup

root, dev, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
sets, extra = json.loads(sys.argv[4]), json.loads(sys.argv[5])
limit = int(sys.argv[6]) if len(sys.argv) > 6 else 300
overrides, perception_seeds = ablation_recipe("tiny", {"sft": sets})
sft = dict(overrides["sft"])
if perception_seeds:
    sft["perception_data"] = ",".join(str(root / "perception-data" / f"seed-{s}") for s in perception_seeds)
sft = {**sft, "grounding_steps": 0, "grounding_copies": 0, **extra}
cfg = build_config(SFTStageConfig, "tiny", "sft", seed=1, output_dir=str(root / name / "unused"), **sft)
model, processor = load_model(root / "seed-1" / "init" / "reasoner")
model = _perception_warmup(model, processor, root / "prepared", root / name, cfg)
prompt = cfg.reasoner_prompt()
sides, store = moment_sides(dev, limit, clips_first=60)
asks, examples = [], []
for ref in sides:
    messages, images = reasoner_input(ref, "query", store, prompt)
    shown = flash_frame(ref.scene) is not None
    truth = f"#{ref.scene['event']['object'] + 1}" if shown else "none"
    asks.append((("segment" if ref.scene.get("segment") else "clip") + (" with flash" if shown else " without"), truth))
    examples.append(_asked(messages, TRACK_WHICH_QUESTION, truth, images))
counts = collections.Counter()
for (kind, truth), answer in zip(asks, greedy_answers(model, processor, examples, max_new_tokens=4), strict=True):
    counts[(kind, "n")] += 1
    counts[(kind, "right")] += answer == truth
    counts[(kind, "none")] += answer == "none"
for kind in sorted({k for k, _ in counts}):
    print(name, kind, "right", counts[(kind, "right")], "said none", counts[(kind, "none")], "of", counts[(kind, "n")],
          flush=True)
