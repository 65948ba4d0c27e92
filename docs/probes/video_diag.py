"""What Reasoners write on rl-split video sides: flash or motion, which object, which frame (session 13).
Usage: python docs/probes/video_diag.py PREPARED MODEL..."""
import json, re, sys
from collections import Counter
from pathlib import Path
from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import Reasoner
from embedrl.tcot.teachers import flash_frame, sees_flash
from embedrl.train.embedder import load_pairs

prepared = Path(sys.argv[1])  # prepared data of data seed 0, e.g. an ablation DIR/prepared
store = MediaStore(prepared)
refs, roles = [], []
seen = set()
for name, pairs in load_pairs(prepared, "rl").items():
    for p in pairs:
        for ref, role in ((p.query, "query"), (p.positive, "target")):
            if ref.media_kind == "video" and ref.media_path not in seen:
                seen.add(ref.media_path); refs.append(ref); roles.append(role)
refs, roles = refs[:240], roles[:240]
print("video sides", len(refs))
for model in sys.argv[2:]:
    texts = Reasoner.load(model, max_new_tokens=128).generate(refs, roles, store, batch_size=64, resolve=False)
    stats = Counter()
    for ref, text in zip(refs, texts):
        scene = ref.scene; ev = scene["event"]
        frame_shown = flash_frame(scene)
        in_view = frame_shown is not None
        flashing = scene["objects"][ev["object"]]
        teacher_sees = in_view and sees_flash(flashing)
        m = re.search(r"#(\d+)", text); mark = int(m.group(1)) if m else None
        f = re.search(r"frame (\d+)", text); frame = int(f.group(1)) if f else None
        kind = "flash" if "flashes" in text.split("</thinking>")[0] else ("move" if "moves" in text else "other")
        key = f"{'tsees' if teacher_sees else ('tmiss' if in_view else 'noview')}"
        stats[key] += 1
        stats[f"{key}_{kind}"] += 1
        if mark == ev["object"] + 1: stats[f"{key}_obj_ok"] += 1
        if kind == "flash" and frame == frame_shown: stats[f"{key}_frame_ok"] += 1
    print(model, json.dumps(dict(sorted(stats.items()))))
    print("  e.g.", [t[:90] for t in texts[:3]])
