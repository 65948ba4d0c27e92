"""Session 21. Usage: python docs/probes/dev_video.py (after dev_eval.py wrote /tmp/dev7/traces-seed-{1,2}.json for
the seeds' cold start and EG-RL). Per dev video task: how often the query trace names the flashing object (its answer
equals the gold trace's) and the flash's key frame, before and after EG-RL, and what changed on the queries that lost
their hit. Text queries (T2V) never change. rl split models, dev data (data seed 7) only.
Session 22: `dev_video.py [EGRL_NAME [SEED...]]` compares the cold start with DIR/seed-N/EGRL_NAME (default egrl,
seeds 1 2), its traces from /tmp/dev7/seed-N.json or traces-seed-N.json, whichever kept them."""
import collections
import json
import sys
from pathlib import Path

from embedrl.tcot.format import TCoTFormatError, parse

gold = {}
for task in ("VidCLS-Flash", "Moment-Flash"):
    for line in open(f"/tmp/dev7/prepared/eval/video/{task}.jsonl"):
        record = json.loads(line)
        gold[record["id"]] = parse(record["qry_tcot_gold"])


def tcot(text):
    try:
        return parse(text)
    except (TCoTFormatError, TypeError):
        return None


def traced_runs(seed: int) -> dict:
    runs = {}
    for name in (f"traces-seed-{seed}.json", f"seed-{seed}.json"):
        path = Path("/tmp/dev7") / name
        if path.exists():
            runs.update({m: r for m, r in json.loads(path.read_text()).items() if "query_traces" in r})
    return runs


egrl_name = sys.argv[1] if len(sys.argv) > 1 else "egrl"
for seed in map(int, sys.argv[2:] or ["1", "2"]):
    report = traced_runs(seed)
    runs = {name: report[f"/tmp/abl19/seed-{seed}/{folder}/model"] for name, folder in (("sft", "sft"), ("egrl", egrl_name))}
    stats = collections.defaultdict(collections.Counter)
    for qid, want in gold.items():
        s = stats[qid.rsplit("-", 1)[0]]
        s["n"] += 1
        traces = {name: tcot(run["query_traces"].get(qid)) for name, run in runs.items()}
        for name, trace in traces.items():
            if trace is None:
                s[f"{name}_unparsed"] += 1
                continue
            s[f"{name}_object"] += trace.answer == want.answer
            s[f"{name}_frame"] += list(trace.key_frames) == list(want.key_frames)
            s[f"{name}_hit"] += runs[name]["hits"].get(qid, False)
        before, after = traces["sft"], traces["egrl"]
        if before and after:
            s["object_changed"] += before.answer != after.answer
            s["frame_changed"] += before.key_frames != after.key_frames
            if runs["sft"]["hits"].get(qid) and not runs["egrl"]["hits"].get(qid):
                s["lost"] += 1
                s["lost_object_changed"] += before.answer != after.answer
                s["lost_frame_changed"] += before.key_frames != after.key_frames
    for task, s in stats.items():
        print(seed, task, json.dumps(dict(s)), flush=True)
