"""Session 29. Usage: python docs/probes/kl_by_modality.py DIR NAME JSON KL_JSON SEED
EG-RL from DIR/seed-SEED/sft-strip (the strip cold start) with the recipe's egrl settings under JSON, and a KL
coefficient per side modality: KL_JSON maps text / image / video to the beta of that side's rollouts (e.g.
'{"text": 0.4, "image": 0.04, "video": 0.4}': the image pointer free, the clips and keywords leashed); JSON's "beta"
must be nonzero (trl computes the reference log-probs only then) and is replaced row by row. Into
DIR/seed-N/egrl-NAME; score it with dev_eval.py. A probe of the per-row KL weight before it is built into
ChoiceGRPOTrainer: trl's loss multiplies the per-token KL by `self.beta` once, and a float that multiplies a
tensor row by row stands in for it during the loss. rl split only (training)."""
import json
import sys
import time
from pathlib import Path

import torch

import embedrl.train.egrl as egrl
from embedrl.config import build_config
from embedrl.experiment import ablation_recipe


class RowBeta(float):
    """Compares as the run's beta (trl's `beta != 0` checks), multiplies a [N, T] tensor by a beta per row."""

    def __new__(cls, value: float, rows: torch.Tensor):
        made = super().__new__(cls, value)
        made.rows = rows
        return made

    def __mul__(self, other):
        return self.rows.to(other.dtype) * other if isinstance(other, torch.Tensor) else float(self) * other

    __rmul__ = __mul__


class KLByModality(egrl.ChoiceGRPOTrainer):
    betas: dict[str, float] = {}

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        batch["kl_rows"] = torch.tensor([[self.betas[row["modality"]]] for row in inputs])
        return batch

    def _compute_loss(self, model, inputs):
        plain = self.beta
        self.beta = RowBeta(plain, inputs["kl_rows"].to(inputs["completion_ids"].device))
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self.beta = plain


root, name, extra, betas, seed = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), \
    int(sys.argv[5])
KLByModality.betas = betas
egrl.ChoiceGRPOTrainer = KLByModality
overrides, _ = ablation_recipe("tiny")
base, out = root / f"seed-{seed}", root / f"seed-{seed}" / f"egrl-{name}"
cfg = build_config(egrl.EGRLStageConfig, "tiny", "egrl", seed=seed, output_dir=str(out), **{**overrides["egrl"], **extra})
started = time.time()
egrl.train_egrl(root / "prepared", base / "sft-strip" / "model", base / "embedder" / "model", out, cfg)
(out / "probe.json").write_text(json.dumps({"train_s": time.time() - started, "overrides": extra, "kl": betas}, indent=1))
print(seed, name, "trained in", round(time.time() - started), "s", flush=True)
