"""Session 26. Usage: python docs/probes/clip_marks.py DIR SEED MODEL... [--limit N]
The greedy traces of Reasoners on the rl split's clip sides with the flash in view (the first N unique sides in
EG-RL's group order, default 400): how often the first mark is the flashing object and how often the trace names a
flash, by role and by whether the teacher sees the flash. Does EG-RL hold the clips it trains on? rl split only."""
import collections
import json
import sys
from pathlib import Path

from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import Reasoner, ReasonerPrompt
from embedrl.tcot.regions import first_mark
from embedrl.tcot.teachers import flash_frame, sees_flash
from embedrl.train.egrl import egrl_dataset

args = sys.argv[1:]
limit = int(args[args.index("--limit") + 1]) if "--limit" in args else 400
args = args[:args.index("--limit")] if "--limit" in args else args
root, seed, models = Path(args[0]), int(args[1]), args[2:]
prepared = root / "prepared"
rows, sides = egrl_dataset(prepared, pairs_per_step=4, prompt=ReasonerPrompt.of_model(models[0]), seed=seed)
store = MediaStore(prepared)
picked, seen = [], set()
for row in rows:
    ref = sides[row["side"]]
    if ref.media_kind == "video" and row["side"] not in seen and flash_frame(ref.scene) is not None:
        seen.add(row["side"])
        picked.append((row["role"], ref))
picked = picked[:limit]
for model in models:
    texts = Reasoner.load(model, max_new_tokens=128).generate([r for _, r in picked], [role for role, _ in picked],
                                                               store, batch_size=128, resolve=False)
    counts = collections.Counter()
    for (role, ref), text in zip(picked, texts, strict=True):
        flashing = ref.scene["event"]["object"]
        key = f"{role}, teacher {'sees' if sees_flash(ref.scene['objects'][flashing]) else 'misses'}"
        counts[(key, "sides")] += 1
        counts[(key, "first mark on the flashing object")] += first_mark(text) == flashing + 1
        counts[(key, "names a flash")] += "flashes" in text
    print(model, json.dumps({f"{k} | {f}": v for (k, f), v in sorted(counts.items())}), flush=True)
