"""Session 24. Usage: python docs/probes/frame_counterfactual.py DEV_PREPARED DIR SEED OUT.json
How much of the video gap to the oracle is the key frame? Scores the cold start's (DIR/seed-SEED/sft) traces on
the dev set's video tasks three ways, with the seed's Embedder: as written; with each clip side's key frame
set to the gold trace's (the frame number in the text too; the object the Reasoner named kept); with the key
frames left out (text and cue). And the gold traces. The Reasoner's texts come from the trace cache dev_eval.py
filled. Reading only: nothing here is trained."""
import dataclasses
import json
import re
import sys
from pathlib import Path

from embedrl.eval.evaluator import ReasonerTrace, StoredTrace, _parse_or_none, evaluate
from embedrl.eval.registry import tasks_for_data
from embedrl.models.reasoner import Reasoner

dev, root, seed, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
embedder = root / f"seed-{seed}" / "embedder" / "model"
cache = dev.parent / "eval-cache"
video = [t for t in tasks_for_data(dev) if t.modality == "video"]
FRAME = re.compile(r"([Ff]rame) (\d+)")


def with_frames(tcot, frames):
    """The trace with its key frames replaced (`frames` None: left out, with the words naming them)."""
    if tcot is None or not tcot.key_frames:
        return tcot
    if frames is None:
        def edit(s):
            return re.sub(r"Frame \d+ holds the flash\.", "The clip holds the flash.", re.sub(r" in frame \d+", "", s))
    else:
        def edit(s):
            return FRAME.sub(lambda m: f"{m.group(1)} {frames[0]}", s)
    return dataclasses.replace(tcot, thinking=edit(tcot.thinking), rethink=edit(tcot.rethink),
                               key_frames=list(frames or []))


class Edited:
    def __init__(self, base, mode):
        self.base, self.mode, self.name = base, mode, f"sft-{mode}"

    def traces(self, items, store):
        written = self.base.traces(items, store)
        out = []
        for item, tcot in zip(items, written, strict=True):
            gold = item.stored.get("gold")
            gold = _parse_or_none(gold, item, store) if gold else None
            if self.mode == "gold_frame":
                out.append(with_frames(tcot, gold.key_frames) if gold is not None and gold.key_frames else tcot)
            else:
                out.append(with_frames(tcot, None))
        return out


report = json.loads(out.read_text()) if out.exists() else {}
reasoner = ReasonerTrace(Reasoner.load(str(root / f"seed-{seed}" / "sft" / "model"), max_new_tokens=128), "sft",
                         batch_size=128, cache_dir=str(cache))
for name, source in (("sft", reasoner), ("sft_gold_frame", Edited(reasoner, "gold_frame")),
                     ("sft_no_frame", Edited(reasoner, "no_frame")), ("gold", StoredTrace("gold", "gold"))):
    if name not in report:
        result = evaluate(dev, embedder, source, tasks=video, batch_size=64, cache_dir=str(cache))
        report[name] = {"by_task": {t: v["score"] for t, v in result["tasks"].items()}, "video": result["overall"]}
        out.write_text(json.dumps(report, indent=1) + "\n")
    print(seed, f"{name:15s}", f"video {report[name]['video']:.1f}",
          " ".join(f"{t} {v:.1f}" for t, v in report[name]["by_task"].items()), flush=True)
