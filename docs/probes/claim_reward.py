"""Session 26. Usage: python docs/probes/claim_reward.py DIR SEED MODEL [GROUPS]
Does EG-RL's outcome reward care what a trace claims of the flashing object? On the rl clip sides (flash in view)
of the first GROUPS (default 300) RL groups of DIR/prepared whose greedy trace names no flash: the policy's
probability of " flashes" and of " moves" right after the greedy trace's first mark, and the outcome reward of the
side's greedy trace, of the gold-form flash trace on the flashing object ("The #k flashes white in frame f",
key frame f) and of that flash trace on the greedy mark, the group's other sides greedy; and of the flash trace on
both sides of the pair (its other side's too, when that is a clip side with its flash in view: the outcome of a
side is its rank against the other sides' traces, so a claim only the one side makes may be worth nothing). Split
by whether the greedy mark is the flashing object. Writes DIR/seed-SEED/claim_reward-MODELNAME.json. rl split only."""
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from embedrl.config import build_config
from embedrl.experiment import _rl_sampling, ablation_recipe
from embedrl.tcot.regions import first_mark
from embedrl.tcot.teachers import flash_frame, sees_flash
from embedrl.train.egrl import EGRLStageConfig

root, seed, model_dir = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
n_groups = int(sys.argv[4]) if len(sys.argv) > 4 else 300
overrides, _ = ablation_recipe("tiny")
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir="/tmp/claim_reward", **overrides["egrl"])
rows, sides, store, rewards, reasoner = _rl_sampling(root / "prepared", model_dir, root / f"seed-{seed}" / "embedder" /
                                                     "model", cfg, ".claim_reward.jsonl")
tokenizer = reasoner.processor.tokenizer
claim_ids = {w: tokenizer.encode(f" {w}", add_special_tokens=False)[0] for w in ("flashes", "moves")}
per_group = 2 * cfg.pairs_per_step


def flash_trace(mark: int, frame: int) -> str:
    return (f'<thinking>The #{mark} flashes white in frame {frame}. {{"key_frames": [{frame}]}}</thinking>\n'
            f"<rethink>Frame {frame} holds the flash.</rethink>\n<answer>the #= flashes</answer>")


def claim_probabilities(ref, role: str, prefix: str) -> dict:
    text, media = reasoner.chat_input(ref, role, store)
    batch = reasoner.processor(text=[text + prefix], images=media or None, return_tensors="pt")
    with torch.no_grad():
        probs = reasoner.model(**batch).logits[0, -1].softmax(-1)
    return {f"p_{w}": float(probs[i]) for w, i in claim_ids.items()}


found = defaultdict(list)
for index in range(n_groups):
    group = rows[index * per_group:(index + 1) * per_group]
    refs = [sides[r["side"]] for r in group]
    if not any(ref.media_kind == "video" for ref in refs):
        continue
    greedy = reasoner.generate(refs, [r["role"] for r in group], store, resolve=False)
    columns = {k: [r[k] for r in group] for k in ("side", "pair_index", "role")}
    base = rewards._compute(greedy, columns)["outcome"]
    for s, ref in enumerate(refs):
        if ref.media_kind != "video" or "flashes" in greedy[s] or not first_mark(greedy[s]):
            continue
        frame = flash_frame(ref.scene)
        if frame is None:
            continue
        flashing, mark = ref.scene["event"]["object"] + 1, first_mark(greedy[s])
        prefix = greedy[s][:greedy[s].index(f"#{mark}") + len(f"#{mark}")]
        row = {"teacher_sees": sees_flash(ref.scene["objects"][flashing - 1]), "base": base[s],
               **claim_probabilities(ref, group[s]["role"], prefix)}
        for name, k in (("flash_on_object", flashing), ("flash_on_greedy_mark", mark)):
            texts = list(greedy)
            texts[s] = flash_trace(k, frame)
            row[name] = rewards._compute(texts, columns)["outcome"][s]
        partner = next(j for j, r in enumerate(group) if r["pair_index"] == group[s]["pair_index"] and j != s)
        other = refs[partner]
        if other.media_kind == "video" and flash_frame(other.scene) is not None:
            texts = list(greedy)
            texts[s] = flash_trace(flashing, frame)
            texts[partner] = flash_trace(other.scene["event"]["object"] + 1, flash_frame(other.scene))
            row["flash_on_both_sides"] = rewards._compute(texts, columns)["outcome"][s]
        else:
            row["flash_on_both_sides"] = None
        found["greedy mark on the flashing object" if mark == flashing else "greedy mark elsewhere"].append(row)
summary = {}
for key, items in found.items():
    summary[key] = {"sides": len(items),
                    **{f: float(np.mean([i[f] for i in items if i[f] is not None] or [np.nan])) for f in items[0]},
                    "flash_on_object_beats_greedy": int(sum(i["flash_on_object"] > i["base"] + 1e-9 for i in items)),
                    "flash_on_both_sides_beats_greedy": int(sum(i["flash_on_both_sides"] is not None
                                                                and i["flash_on_both_sides"] > i["base"] + 1e-9
                                                                for i in items)),
                    "claim_sampled_at_min_p": int(sum(i["p_flashes"] >= cfg.min_p * i["p_moves"] for i in items))}
    print(model_dir, key, json.dumps(summary[key]), flush=True)
(root / f"seed-{seed}" / f"claim_reward-{Path(model_dir).parent.name}.json").write_text(
    json.dumps({"model": model_dir, "groups": n_groups, **summary}, indent=1) + "\n")
