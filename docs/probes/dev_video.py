"""Session 21. Usage: python docs/probes/dev_video.py (after dev_eval.py wrote /tmp/dev7/traces-seed-{1,2}.json for
the seeds' cold start and EG-RL). Per dev video task: how often the query trace names the flashing object (its answer
equals the gold trace's) and the flash's key frame, before and after EG-RL, and what changed on the queries that lost
their hit. Text queries (T2V) never change. rl split models, dev data (data seed 7) only."""
import collections
import json

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


for seed in (1, 2):
    report = json.load(open(f"/tmp/dev7/traces-seed-{seed}.json"))
    runs = {name: report[f"/tmp/abl19/seed-{seed}/{name}/model"] for name in ("sft", "egrl")}
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
