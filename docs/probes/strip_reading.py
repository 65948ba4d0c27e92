"""Session 25. Usage: python docs/probes/strip_reading.py DEV_PREPARED MODEL PROMPT_MODEL [LIMIT]
The strip question alone on the dev set's Moment-Flash sides (candidate segments first, then whole clips, LIMIT
distinct sides): each object's track strip, "Which frame flashes?"; right rate by side kind and by whether the
object is the flashing one. MODEL: a warm-up checkpoint (e.g. DIR/perception-base/track/checkpoints/checkpoint-1200);
PROMPT_MODEL: a saved Reasoner whose prompt settings (track size) to use."""
import collections
import sys
from pathlib import Path

import torch

from embedrl.data.sides import MediaStore
from embedrl.eval.evaluator import load_task
from embedrl.eval.registry import tasks_for_data
from embedrl.models.factory import load_model
from embedrl.models.reasoner import ReasonerPrompt
from embedrl.tcot.regions import MAX_REGIONS, track_strips
from embedrl.tcot.teachers import flash_frame
from embedrl.train.perception import TRACK_QUESTION, _example

dev, model_dir, prompt_dir = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
limit = int(sys.argv[4]) if len(sys.argv) > 4 else 400
prompt = ReasonerPrompt.of_model(prompt_dir)
model, proc = load_model(model_dir)
model.eval()
proc.tokenizer.padding_side = "left"
task = next(t for t in tasks_for_data(dev) if t.name == "Moment-Flash")
data, store = load_task(dev, task), MediaStore(dev)
seen, asks = set(), []
for item in list(data.candidates) + list(data.queries):
    ref = item.ref
    if ref.media_path in seen:
        continue
    seen.add(ref.media_path)
    frames = store.load(ref)
    strips = track_strips(frames, ref.scene, prompt.track_size)
    f, fl = flash_frame(ref.scene), ref.scene["event"]["object"]
    kind = ("seg" if ref.scene.get("segment") else "clip") + ("+flash" if f else "-noflash")
    for i, s in enumerate(strips[:MAX_REGIONS]):
        truth = f"frame {f}" if (f and i == fl) else "none"
        asks.append((kind, "flasher" if truth != "none" else "other", truth, s))
    if len(seen) >= limit:
        break
c = collections.Counter()
for start in range(0, len(asks), 128):
    chunk = asks[start:start+128]
    texts = [proc.apply_chat_template(_example([{"type": "image"}], TRACK_QUESTION, "", [])["prompt"], tokenize=False, add_generation_prompt=True) for _ in chunk]
    batch = proc(text=texts, images=[a[3] for a in chunk], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=proc.tokenizer.pad_token_id)
    for a, o in zip(chunk, proc.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True), strict=True):
        c[(a[0], a[1], "n")] += 1
        c[(a[0], a[1], "right")] += o.strip() == a[2]
for k in sorted({k[:2] for k in c}):
    print(k, c[k + ("right",)], "/", c[k + ("n",)])
