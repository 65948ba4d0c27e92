"""Session 25. Usage: python docs/probes/hop_reading.py DEV_PREPARED MODEL PROMPT_MODEL [LIMIT]
The hop from a mark to its strip on the dev set's Moment-Flash sides (60 whole clips, then candidate segments, LIMIT
distinct sides): per object, the side's own grounded prompt asked "Which frame does #k flash in?" (the track
phase's prompt form); right rate by side kind (segment with / without the flash, whole clip) and by whether the
object is the flashing one. MODEL as in strip_reading.py."""
import collections
import sys

from flash_questions import greedy_answers, probe_inputs

from embedrl.models.reasoner import reasoner_input
from embedrl.tcot.regions import MAX_REGIONS
from embedrl.tcot.teachers import flash_frame
from embedrl.train.perception import TRACK_MARK_QUESTION, _asked

model_dir, model, processor, prompt, sides, store = probe_inputs(sys.argv, 300, clips_first=60)
asks, examples = [], []
for ref in sides:
    messages, images = reasoner_input(ref, "query", store, prompt)
    frame, flashing = flash_frame(ref.scene), ref.scene["event"]["object"]
    kind = ("segment" if ref.scene.get("segment") else "clip") + (" with flash" if frame else " without")
    for index in range(min(len(ref.scene["objects"]), MAX_REGIONS)):
        truth = f"frame {frame}" if frame and index == flashing else "none"
        asks.append((kind, "flashing object" if truth != "none" else "other object", truth))
        examples.append(_asked(messages, TRACK_MARK_QUESTION.format(mark=index + 1), truth, images))
counts = collections.Counter()
for (kind, role, truth), answer in zip(asks, greedy_answers(model, processor, examples), strict=True):
    counts[(kind, role, "n")] += 1
    counts[(kind, role, "right")] += answer == truth
    counts[(kind, role, "said none")] += answer == "none"
for key in sorted({k[:2] for k in counts}):
    print(model_dir, key, "right", counts[key + ("right",)], "said none", counts[key + ("said none",)], "of",
          counts[key + ("n",)], flush=True)
