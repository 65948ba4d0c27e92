"""Session 25. Usage: python docs/probes/hop_reading.py DEV_PREPARED MODEL PROMPT_MODEL [LIMIT]
The hop from a mark to its strip on the dev set's Moment-Flash sides (60 whole clips, then candidate segments, LIMIT
distinct sides): per object, the side's own grounded prompt asked "Which frame does #k flash in?" (the track
phase's prompt form); right rate by side kind (segment with / without the flash, whole clip) and by whether the
object is the flashing one. MODEL as in strip_reading.py."""
import collections
import sys
from pathlib import Path

import torch

from embedrl.data.sides import MediaStore
from embedrl.eval.evaluator import load_task
from embedrl.eval.registry import tasks_for_data
from embedrl.models.factory import load_model
from embedrl.models.reasoner import ReasonerPrompt, reasoner_input
from embedrl.tcot.regions import MAX_REGIONS
from embedrl.tcot.teachers import flash_frame
from embedrl.train.perception import TRACK_MARK_QUESTION, _asked

dev, model_dir, prompt_dir = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
limit = int(sys.argv[4]) if len(sys.argv) > 4 else 300
prompt = ReasonerPrompt.of_model(prompt_dir)
model, proc = load_model(model_dir)
model.eval()
proc.tokenizer.padding_side = "left"
task = next(t for t in tasks_for_data(dev) if t.name == "Moment-Flash")
data, store = load_task(dev, task), MediaStore(dev)
seen, asks = set(), []
items = list(data.queries)[:60] + list(data.candidates)
for item in items:
    ref = item.ref
    if ref.media_path in seen:
        continue
    seen.add(ref.media_path)
    messages, images = reasoner_input(ref, "query", store, prompt)
    f, fl = flash_frame(ref.scene), ref.scene["event"]["object"]
    kind = ("segment" if ref.scene.get("segment") else "clip") + (" with flash" if f else " without")
    for i in range(min(len(ref.scene["objects"]), MAX_REGIONS)):
        truth = f"frame {f}" if (f and i == fl) else "none"
        ex = _asked(messages, TRACK_MARK_QUESTION.format(mark=i + 1), truth, images)
        asks.append((kind, "flashing object" if truth != "none" else "other object", truth, ex))
    if len(seen) >= limit:
        break
c = collections.Counter()
for start in range(0, len(asks), 64):
    chunk = asks[start:start + 64]
    texts = [proc.apply_chat_template(a[3]["prompt"], tokenize=False, add_generation_prompt=True) for a in chunk]
    batch = proc(text=texts, images=[im for a in chunk for im in a[3]["images"]], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=proc.tokenizer.pad_token_id)
    for a, o in zip(chunk, proc.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True), strict=True):
        c[(a[0], a[1], "n")] += 1
        c[(a[0], a[1], "right")] += o.strip() == a[2]
        c[(a[0], a[1], "said none")] += o.strip() == "none"
for k in sorted({k[:2] for k in c}):
    print(model_dir.split('/tmp/abl19/')[-1], k, "right", c[k + ("right",)], "said none", c[k + ("said none",)], "of", c[k + ("n",)], flush=True)
