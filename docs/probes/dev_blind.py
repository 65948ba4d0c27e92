"""Session 29. Usage: python docs/probes/dev_blind.py DEV_PREPARED RESULT.json
From a dev_eval.py result (it keeps each query's trace): per model, on the dev image queries with one dotted object,
how often the trace's first box is the dotted object's, and the hits, split by whether the stored teacher trace boxes
it (the teacher's blind spots: dark or small objects). Dev set only, never the eval split."""
import glob
import json
import re
import sys

FIRST_BOX = re.compile(r'"bbox_2d": \[\[(\d+), (\d+), (\d+), (\d+)\]')


def first_box(trace: str) -> list[int] | None:
    found = FIRST_BOX.search(trace or "")
    return [int(x) for x in found.groups()] if found else None


prepared, results = sys.argv[1], json.load(open(sys.argv[2]))
rows = {}
for path in glob.glob(f"{prepared}/eval/image/*.jsonl"):
    for line in open(path):
        row = json.loads(line)
        rows[row["id"]] = row
for model, result in results.items():
    counts = {}
    for qid, trace in result["query_traces"].items():
        row = rows.get(qid)
        scene = json.loads(row["scene"])["query"] if row else {}
        if scene.get("type") != "image" or scene.get("marked") is None:
            continue
        dotted = scene["objects"][scene["marked"]]["bbox_2d"]
        kind = "teacher sees the dot" if first_box(row["qry_tcot"]) == dotted else "teacher blind"
        on, hits, sides = counts.get(kind, (0, 0, 0))
        counts[kind] = (on + (first_box(trace) == dotted), hits + bool(result["hits"][qid]), sides + 1)
    for kind, (on, hits, sides) in sorted(counts.items(), reverse=True):
        print(f"{model} {kind}: first box on the dot {on} of {sides} ({100 * on / sides:.0f}%), hits {hits}")
