"""Session 24. Usage: python docs/probes/moment_candidates.py DEV_PREPARED MODEL
The Moment-Flash sides of the dev set: how often a Reasoner's trace (read from dev_eval.py's trace cache, written
there when missing) names what the gold trace names, on the queries and on the
candidate clip segments, split by whether the segment shows a flash; the teacher's traces beside it."""
import collections
import sys
from pathlib import Path

from embedrl.data.sides import MediaStore
from embedrl.eval.evaluator import ReasonerTrace, _parse_or_none, load_task
from embedrl.eval.registry import tasks_for_data
from embedrl.models.reasoner import Reasoner

dev, model = Path(sys.argv[1]), sys.argv[2]
task = next(t for t in tasks_for_data(dev) if t.name == "Moment-Flash")
data, store = load_task(dev, task), MediaStore(dev)
source = ReasonerTrace(Reasoner.load(model, max_new_tokens=128), "probe", batch_size=128,
                       cache_dir=str(dev.parent / "eval-cache"))
for role, items in (("query", data.queries), ("candidate", data.candidates)):
    counts = collections.Counter()
    for item, trace in zip(items, source.traces(items, store), strict=True):
        gold = _parse_or_none(item.stored["gold"], item, store)
        teacher = _parse_or_none(item.stored["teacher"], item, store)
        shown = "flash shown" if "flashes" in gold.answer else "no flash"
        counts[(shown, "sides")] += 1
        counts[(shown, "reasoner right")] += trace is not None and trace.answer == gold.answer
        counts[(shown, "reasoner names a flash")] += trace is not None and "flashes" in trace.answer
        counts[(shown, "reasoner frame right")] += trace is not None and trace.key_frames == gold.key_frames
        counts[(shown, "teacher right")] += teacher.answer == gold.answer
    print(role, " | ".join(f"{s} {k}: {v}" for (s, k), v in sorted(counts.items())), flush=True)
