"""Session 20. Usage: python docs/probes/update_direction.py DIR SEED JSON KINDS STEPS
Does EG-RL's update move each side's first region mark the way its advantages say? From seed SEED's cold start,
EG-RL (recipe egrl settings under the JSON overrides) on the first STEPS groups of the given kinds among those EG-RL
trains on (KINDS: `all`, or a comma-separated list of group modalities as the rl holdout reports them: `image`,
`video`, `visdoc`), into a fresh /tmp/update_direction-KINDS-STEPS, recording every rollout's first mark and its
advantage there. Before and after, on the cold start's greedy prefix up to each side's first `#`: the
log-probability of every region digit. Per (side, region) the rollouts took: the summed advantage of those rollouts
against the change of the region's log-probability (`video`: clip sides, `image`: every other side); a policy
gradient that works raises the regions with positive advantage against the rest. On the sides where one region is
right (a clip's flashing object in view, an image's one dotted region): its mean probability before and after, on
the trained sides and on the held-out ones (the last 64 groups), a continuous view of the rl holdout's pointer.
Into DIR/seed-SEED/update_direction-KINDS-STEPS-<overrides>.json. rl split only."""
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import embedrl.train.egrl as egrl
from embedrl.config import build_config
from embedrl.data.sides import MediaStore
from embedrl.experiment import _group_modality, ablation_recipe
from embedrl.models.reasoner import Reasoner
from embedrl.tcot.teachers import flash_frame
from embedrl.train.perception import single_detail

root, seed, extra, kind, steps = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5])
overrides, _ = ablation_recipe("tiny")
base = root / f"seed-{seed}"
out = Path(f"/tmp/update_direction-{kind}-{steps}")
shutil.rmtree(out, ignore_errors=True)  # a finished run there would be resumed, not trained again
cfg = build_config(egrl.EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out), **{**overrides["egrl"], **extra})
cold = base / "sft" / "model"
rows, sides = egrl.egrl_dataset(root / "prepared", pairs_per_step=cfg.pairs_per_step,
                                prompt=egrl.ReasonerPrompt.of_model(cold), seed=seed)
per_group = 2 * cfg.pairs_per_step
groups = [rows[i:i + per_group] for i in range(0, len(rows), per_group)]
held_out = [r for g in groups[-64:] for r in g if sides[r["side"]].media_kind in ("video", "image")]
kinds = {"image", "video", "visdoc"} if kind == "all" else set(kind.split(","))
kept = [g for g in groups[:-64] if _group_modality([sides[r["side"]] for r in g]) in kinds][:steps]
trained = [r for g in kept for r in g]
store = MediaStore(root / "prepared")


def mark_logprobs(model_dir, probe_rows, prefixes=None):
    """Per row: the greedy prefix up to the first '#' (the cold start's when given) and log p(region digit k)."""
    reasoner = Reasoner.load(model_dir, max_new_tokens=cfg.max_completion_length)
    reasoner.model.eval()
    refs, roles = [sides[r["side"]] for r in probe_rows], [r["role"] for r in probe_rows]
    if prefixes is None:
        texts = reasoner.generate(refs, roles, store, batch_size=64, resolve=False)
        prefixes = [t[:t.index("#") + 1] if "#" in t else None for t in texts]
    tok = reasoner.processor.tokenizer
    digits = [tok.convert_tokens_to_ids(str(k)) for k in range(1, 10)]
    result = []
    for ref, role, prefix in zip(refs, roles, prefixes, strict=True):
        if prefix is None:
            result.append(None)
            continue
        prompt, media = reasoner.chat_input(ref, role, store)
        batch = reasoner.processor(text=[prompt + prefix], images=media or None, return_tensors="pt")
        with torch.no_grad():
            logits = reasoner.model(**batch).logits[0, -1]
        result.append(logits.log_softmax(-1)[digits].tolist())
    return prefixes, result


prefixes, before = mark_logprobs(cold, trained)
held_prefixes, held_before = mark_logprobs(cold, held_out)

recorded = []
plain = egrl.ChoiceGRPOTrainer._generate_and_score_completions


def recording(self, inputs):
    batch = plain(self, inputs)
    mark = self.choices.mark_token_id
    for row, ids, adv in zip(inputs, batch["completion_ids"].cpu(), batch["advantages"].cpu(), strict=True):
        at = (ids[:-1] == mark).nonzero()
        if len(at):
            pos = int(at[0]) + 1
            region = self.processing_class.tokenizer.decode([int(ids[pos])]).strip()
            a = float(adv[pos]) if adv.dim() else float(adv)
            recorded.append({"side": row["side"], "region": int(region) if region.isdigit() else None, "adv": a})
    return batch


egrl.ChoiceGRPOTrainer._generate_and_score_completions = recording
cfg.max_steps = len(kept)
full_dataset, egrl.egrl_dataset = egrl.egrl_dataset, lambda *args, **kwargs: (trained, sides)
egrl.train_egrl(root / "prepared", cold, base / "embedder" / "model", out, cfg)
egrl.egrl_dataset = full_dataset
_, after = mark_logprobs(out / "model", trained, prefixes)
_, held_after = mark_logprobs(out / "model", held_out, held_prefixes)

by_side = defaultdict(lambda: defaultdict(float))
for r in recorded:
    if r["region"] is not None and 1 <= r["region"] <= 9:
        by_side[r["side"]][r["region"]] += r["adv"]
index = {r["side"]: i for i, r in enumerate(trained)}
pairs = {"video": [], "image": []}
for side, regions in by_side.items():
    i = index[side]
    if before[i] is None or len(regions) < 2:
        continue
    for k, adv in regions.items():
        pairs["video" if sides[side].media_kind == "video" else "image"].append(
            (adv, after[i][k - 1] - before[i][k - 1]))


def right_region(ref):
    """The region a first mark should name: a clip's flashing object when the flash is in view, an image's one
    dotted region; None otherwise."""
    if ref.media_kind == "video":
        return ref.scene["event"]["object"] + 1 if flash_frame(ref.scene) is not None else None
    found = single_detail(ref.scene or {}) if ref.media_kind == "image" else None
    return found[1] if found else None


def right_prob(probe_rows, lp_before, lp_after):
    """Per modality: the mean probability of the right region before and after, over the sides that have one."""
    moves = defaultdict(list)
    for r, b, a in zip(probe_rows, lp_before, lp_after, strict=True):
        ref = sides[r["side"]]
        k = right_region(ref)
        if b is not None and k is not None and k <= 9:
            moves[ref.media_kind].append((float(np.exp(b[k - 1])), float(np.exp(a[k - 1]))))
    return {m: {"sides": len(v), "p_before": float(np.mean([x[0] for x in v])), "p_after": float(np.mean([x[1] for x in v]))}
            for m, v in moves.items()}


summary = {"overrides": extra, "kind": kind, "steps": len(kept), "rollouts": len(recorded)}
for modality, items in pairs.items():
    if not items:
        continue
    adv, delta = np.array(items).T
    pos, neg = delta[adv > 0], delta[adv < 0]
    summary[modality] = {"regions": len(items), "corr": float(np.corrcoef(adv, delta)[0, 1]),
                         "dlogp_adv_pos": float(pos.mean()) if len(pos) else None,
                         "dlogp_adv_neg": float(neg.mean()) if len(neg) else None,
                         "sign_agrees": float(np.mean(np.sign(delta - delta.mean()) == np.sign(adv)))}
summary["right_region_trained"] = right_prob(trained, before, after)
summary["right_region_held_out"] = right_prob(held_out, held_before, held_after)
for name, lps in (("held_out_digits_before", held_before), ("held_out_digits_after", held_after)):
    video = [np.exp(lp) for r, lp in zip(held_out, lps, strict=True) if lp is not None and sides[r["side"]].media_kind == "video"]
    summary[name] = np.round(np.mean(video, axis=0), 3).tolist()
positive = [r["region"] for r in recorded if r["adv"] > 0 and r["region"]]
summary["positive_regions"] = np.bincount(positive, minlength=10)[1:].tolist()
print(json.dumps(summary, indent=1))
name = "-".join(f"{k}={v}" for k, v in sorted(extra.items())).replace(" ", "")
(base / f"update_direction-{kind}-{steps}-{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
