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

import torch

from embedrl.config import build_config
from embedrl.data.sides import MediaStore
from embedrl.eval.evaluator import load_task
from embedrl.eval.registry import tasks_for_data
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
model.eval()
processor.tokenizer.padding_side = "left"
prompt = cfg.reasoner_prompt()
task = next(t for t in tasks_for_data(dev) if t.name == "Moment-Flash")
data, store = load_task(dev, task), MediaStore(dev)
seen, asks = set(), []
for item in list(data.queries)[:60] + list(data.candidates):
    ref = item.ref
    if ref.media_path in seen:
        continue
    seen.add(ref.media_path)
    messages, images = reasoner_input(ref, "query", store, prompt)
    shown = flash_frame(ref.scene) is not None
    truth = f"#{ref.scene['event']['object'] + 1}" if shown else "none"
    kind = ("segment" if ref.scene.get("segment") else "clip") + (" with flash" if shown else " without")
    asks.append((kind, truth, _asked(messages, TRACK_WHICH_QUESTION, truth, images)))
    if len(seen) >= limit:
        break
counts = collections.Counter()
for start in range(0, len(asks), 64):
    chunk = asks[start:start + 64]
    texts = [processor.apply_chat_template(a[2]["prompt"], tokenize=False, add_generation_prompt=True) for a in chunk]
    batch = processor(text=texts, images=[im for a in chunk for im in a[2]["images"]], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    answers = processor.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    for (kind, truth, _), answer in zip(chunk, answers, strict=True):
        counts[(kind, "n")] += 1
        counts[(kind, "right")] += answer.strip() == truth
        counts[(kind, "none")] += answer.strip() == "none"
for kind in sorted({k for k, _ in counts}):
    print(name, kind, "right", counts[(kind, "right")], "said none", counts[(kind, "none")], "of", counts[(kind, "n")],
          flush=True)
