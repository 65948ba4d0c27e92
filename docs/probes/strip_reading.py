"""Session 25. Usage: python docs/probes/strip_reading.py DEV_PREPARED MODEL PROMPT_MODEL [LIMIT]
The strip question alone on the dev set's Moment-Flash sides (candidate segments first, then whole clips, LIMIT
distinct sides): each object's track strip, "Which frame flashes?"; right rate by side kind and by whether the
object is the flashing one. MODEL: a warm-up checkpoint (e.g. DIR/perception-base/track/checkpoints/checkpoint-1200);
PROMPT_MODEL: a saved Reasoner whose prompt settings (track size) to use."""
import collections
import sys

from flash_questions import greedy_answers, probe_inputs

from embedrl.tcot.regions import MAX_REGIONS, track_strips
from embedrl.tcot.teachers import flash_frame
from embedrl.train.perception import TRACK_QUESTION, _example

model_dir, model, processor, prompt, sides, store = probe_inputs(sys.argv, 400, clips_first=0)
asks, examples = [], []
for ref in sides:
    strips = track_strips(store.load(ref), ref.scene, prompt.track_size)
    frame, flashing = flash_frame(ref.scene), ref.scene["event"]["object"]
    kind = ("seg" if ref.scene.get("segment") else "clip") + ("+flash" if frame else "-noflash")
    for index, strip in enumerate(strips[:MAX_REGIONS]):
        truth = f"frame {frame}" if frame and index == flashing else "none"
        asks.append((kind, "flasher" if truth != "none" else "other", truth))
        examples.append(_example([{"type": "image"}], TRACK_QUESTION, truth, [strip]))
counts = collections.Counter()
for (kind, role, truth), answer in zip(asks, greedy_answers(model, processor, examples), strict=True):
    counts[(kind, role, "n")] += 1
    counts[(kind, role, "right")] += answer == truth
for key in sorted({k[:2] for k in counts}):
    print(key, counts[key + ("right",)], "/", counts[key + ("n",)])
