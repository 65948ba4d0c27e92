"""Session 24. Usage: python docs/probes/absent_recount.py DIR
Trace statistics (evidence, names something absent) of an ablation DIR's variants, recounted from its trace cache
over the eval sides of its first 50 queries per task, each side once (a side missing from the cache is generated)."""
import json
import sys
from pathlib import Path

from embedrl.data.sides import MediaStore
from embedrl.eval.evaluator import ReasonerTrace, StoredTrace, _truncate, load_task, trace_statistics
from embedrl.eval.registry import tasks_for_data
from embedrl.models.reasoner import Reasoner

root = Path(sys.argv[1])
prepared = root / "prepared"
store = MediaStore(prepared)
loaded = [_truncate(load_task(prepared, t), 50) for t in tasks_for_data(prepared)]
items = list({i.key: i for d in loaded for i in d.queries + d.candidates}.values())
sources = [("teacher_cot", StoredTrace("teacher", "teacher")), ("oracle_cot", StoredTrace("gold", "gold"))]
sources += [(f"{v}_cot-seed{s}", ReasonerTrace(Reasoner.load(str(root / f"seed-{s}" / v / "model"), max_new_tokens=128),
                                                v, batch_size=128, cache_dir=str(root / "eval-cache")))
            for s in (0, 1, 2) for v in ("sft", "egrl")]
out = {}
for name, source in sources:
    out[name] = trace_statistics(items, source.traces(items, store))
    print(name, {k: round(v, 3) for k, v in out[name].items()}, flush=True)
(root / "absent_recount.json").write_text(json.dumps(out, indent=1) + "\n")
