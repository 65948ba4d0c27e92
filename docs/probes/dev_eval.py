"""Session 21. Usage: python docs/probes/dev_eval.py DEV_PREPARED DIR SEED OUT.json MODEL...
Scores Reasoners on a development set: the eval split of another generated data set (another data seed, never
the ablation's own), every query, with DIR/seed-SEED's Embedder, each paired against the first MODEL (the cold
start): overall and per-modality difference and how many queries flip each way. What the 64-group rl holdout
cannot resolve (effects of 1-2 points), 1,610 queries paired can."""
import json
import sys
from pathlib import Path

from embedrl.eval.evaluator import ReasonerTrace, evaluate
from embedrl.models.reasoner import Reasoner

dev, root, seed, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
embedder = root / f"seed-{seed}" / "embedder" / "model"
cache = dev.parent / "eval-cache"
report = json.loads(out.read_text()) if out.exists() else {}
for model in sys.argv[5:]:
    if model in report:
        continue
    source = ReasonerTrace(Reasoner.load(model, max_new_tokens=128), Path(model).parent.name, batch_size=128,
                           cache_dir=str(cache))
    result = evaluate(dev, embedder, source, batch_size=64, cache_dir=str(cache))
    hits = {p["id"]: bool(p["hit@1"]) for p in result["predictions"] if p.get("hit@1") is not None}
    report[model] = {"overall": result["overall"], "by_modality": result["by_modality"],
                     "by_task": {t: v["score"] for t, v in result["tasks"].items()}, "hits": hits,
                     "query_traces": {p["id"]: p.get("query_trace") for p in result["predictions"]}}
    out.write_text(json.dumps(report) + "\n")
base = report[sys.argv[5]]
for model in sys.argv[5:]:
    r = report[model]
    gained = sum(h and not base["hits"].get(i, False) for i, h in r["hits"].items())
    lost = sum(base["hits"].get(i, False) and not h for i, h in r["hits"].items())
    print(f"{model}: overall {r['overall']:.2f} ({r['overall'] - base['overall']:+.2f}) "
          + " ".join(f"{m} {v:.1f} ({v - base['by_modality'][m]:+.1f})" for m, v in r["by_modality"].items())
          + f" | hit@1 queries gained {gained} lost {lost}", flush=True)
