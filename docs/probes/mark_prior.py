"""Session 18. Usage: python docs/probes/mark_prior.py DIR SEED MODEL...
Where a Reasoner's first region mark puts its probability, on the rl image sides with one dotted region: the
groups EG-RL trains on (the first max_steps of its order) and the held-out ones, split by whether the teacher
sees the dot (`sees_dot`). Per split: sides, greedy first mark on the dot, mean p(dot) at the first mark, and
how often the dot is among the marks branch rollouts take (p >= the branch threshold of image sides x the best one's; with G = 8 rollouts).
Written next to each model (its parent directory, mark_prior.json). rl split only."""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from embedrl.config import build_config
from embedrl.data.sides import MediaStore
from embedrl.experiment import ablation_recipe
from embedrl.models.reasoner import Reasoner, ReasonerPrompt
from embedrl.tcot.teachers import sees_dot
from embedrl.train.egrl import EGRLStageConfig, egrl_dataset
from embedrl.train.perception import single_detail


class FirstMarkRecorder(LogitsProcessor):
    """Keeps each row's next-token distribution right after its first '#' (the first mark's number)."""

    def __init__(self, mark_id: int):
        self.mark_id, self.probs = mark_id, None

    def __call__(self, input_ids, scores):
        if self.probs is None:
            self.probs = torch.full_like(scores, float("nan"))
        now = (input_ids[:, -1] == self.mark_id) & self.probs[:, 0].isnan()
        self.probs[now] = scores[now].float().softmax(-1)
        return scores


root, seed = Path(sys.argv[1]), int(sys.argv[2])
prepared = root / "prepared"
overrides, _ = ablation_recipe("tiny")
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir="/tmp/mark_prior", **overrides["egrl"])
store = MediaStore(prepared)
for model_dir in sys.argv[3:]:
    reasoner = Reasoner.load(model_dir, max_new_tokens=cfg.max_completion_length)
    tok = reasoner.processor.tokenizer
    prompt = ReasonerPrompt.of_model(model_dir)
    rows, sides = egrl_dataset(prepared, pairs_per_step=cfg.pairs_per_step, prompt=prompt, seed=cfg.seed)
    per_group = 2 * cfg.pairs_per_step
    total = len(rows) // per_group
    splits = {"train": rows[:cfg.max_steps * per_group], "holdout": rows[(total - 64) * per_group:total * per_group]}
    mark_id = tok.convert_tokens_to_ids("#")
    digit = {k: tok.encode(f"#{k}", add_special_tokens=False)[-1] for k in range(1, 10)}
    res = {}
    for split, split_rows in splits.items():
        picked = []
        for r in split_rows:
            ref = sides[r["side"]]
            found = single_detail(ref.scene or {}) if ref.media_kind == "image" else None
            if found:
                picked.append((r, ref, found[1], sees_dot(ref.scene["objects"][found[1] - 1])))
        probs = []
        for start in range(0, len(picked), 64):
            chunk = picked[start:start + 64]
            recorder = FirstMarkRecorder(mark_id)
            plain = reasoner.model.generate

            def generate(*args, _plain=plain, _rec=recorder, **kwargs):
                extra = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
                extra.append(_rec)
                return _plain(*args, logits_processor=extra, **kwargs)

            reasoner.model.generate = generate
            reasoner.generate([p[1] for p in chunk], [p[0]["role"] for p in chunk], store, batch_size=64, resolve=False)
            reasoner.model.generate = plain
            probs.append(recorder.probs.cpu().numpy())
        probs = np.concatenate(probs)
        for label, keep in (("teacher_sees", True), ("teacher_misses", False), ("all", None)):
            idx = [i for i, p in enumerate(picked) if keep is None or p[3] == keep]
            if not idx:
                continue
            dot_p, greedy_dot, in_branch, n_regions = [], [], [], []
            for i in idx:
                p, mark = probs[i], picked[i][2]
                regions = len(picked[i][1].scene["objects"])
                marks = np.array([p[digit[k]] for k in range(1, regions + 1)])
                dot_p.append(marks[mark - 1])
                greedy_dot.append(int(marks.argmax()) + 1 == mark)
                plausible = np.flatnonzero(marks >= cfg.branch_threshold("image") * marks.max())
                in_branch.append(mark - 1 in plausible[np.argsort(-marks[plausible])][:cfg.num_generations])
                n_regions.append(regions)
            res[f"{split}/{label}"] = {"sides": len(idx), "greedy_dot": float(np.mean(greedy_dot)),
                                       "p_dot": float(np.mean(dot_p)), "dot_in_branches": float(np.mean(in_branch)),
                                       "regions": float(np.mean(n_regions))}
            print(model_dir, split, label, json.dumps(res[f"{split}/{label}"]), flush=True)
    (Path(model_dir).parent / "mark_prior.json").write_text(json.dumps(res, indent=1))
