"""EG-RL (Embedder-Guided RL) of the Reasoner: trl's GRPOTrainer with the frozen Embedder as reward model.

Each step takes one group of B pairs from one RL subset (pairs whose targets are near misses of each
other), and rolls out G T-CoTs for each query **and** each target. The reward (method.md) is
`alpha * format + beta * process + gamma * outcome`:
- format: 1 if the T-CoT parses and its cue fits the side's modality;
- outcome: every rollout is embedded by the frozen Embedder (with its evidence crops / frames; the media
  and text a side's G rollouts share run once, embedrl.models.prefix_cache); for a query rollout,
  acc x (s_pos - s_neg) against the G target rollouts of its own pair (positives) and the target
  rollouts of the other pairs (softmax-weighted negatives), and symmetrically for targets;
- process: a judge (pluggable) must pick the positive among m shuffled candidate T-CoTs.
A completion that does not parse gets 0 on every component (and is embedded raw for the others).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
import trl

from embedrl.data.sides import MediaStore, SideRef
from embedrl.models.embedder import Embedder, EmbedderInputs, inference_device, load_embedder
from embedrl.models.prefix_cache import embed_sides
from embedrl.models.reasoner import Reasoner, ReasonerPrompt, reasoner_input, resolve_completion
from embedrl.tcot import TCoT, TCoTFormatError, parse
from embedrl.tcot.format import MODALITIES as SIDE_MODALITIES
from embedrl.train.checkpoint import completion_marker, resume_point, train_from
from embedrl.train.embedder import build_side, load_pairs
from embedrl.train.exploration import (
    EXPLORATION_MODES,
    BranchExploration,
    ChoiceExploration,
    advantages_on_choices,
    explore_only_choices,
)
from embedrl.train.rewards import completion_text, make_judge, outcome_details, process_rewards

log = logging.getLogger(__name__)
REWARD_STATE = "egrl_rewards.json"


POLICY_GRADIENT_SIDES = ("all", "missed")
MISSED_SIDES = "missed_sides.json"


def _kl_coefficient(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"egrl.{name}={value!r}: expected a number") from None
    if not number >= 0.0:
        raise ValueError(f"egrl.{name}={value!r}: a KL coefficient is >= 0")
    return number


@dataclass
class EGRLStageConfig(trl.GRPOConfig):
    """trl's GRPOConfig plus the EG-RL reward and data settings (paper defaults)."""

    format_weight: float = field(default=0.05, metadata={"help": "alpha: weight of the format reward"})
    process_weight: float = field(default=0.8, metadata={"help": "beta: weight of the judge's process reward"})
    outcome_weight: float = field(default=0.2, metadata={"help": "gamma: weight of the Embedder's outcome reward"})
    outcome_tau: float = field(default=0.5, metadata={"help": "tau_r of the softmax over negatives"})
    judge: str = field(default="lexical", metadata={"help": "process-reward judge: lexical (local) or chat"})
    judge_url: str = field(default="", metadata={"help": "OpenAI-compatible endpoint of the chat judge"})
    judge_model: str = field(default="", metadata={"help": "model name of the chat judge"})
    process_candidates: int = field(default=4, metadata={"help": "m: candidates the judge chooses among"})
    pairs_per_step: int = field(default=4, metadata={"help": "B: pairs per step (queries and targets: 2B prompts)"})
    max_groups: int = field(default=0, metadata={"help": "train on the first N RL groups of the seeded order only "
                                                         "(0: all); with more steps than groups they repeat"})
    shared_prefix: bool = field(default=True, metadata={"help": "reward embedding: run the media and text shared by "
                                                             "a side's G rollouts once (same vectors, faster)"})
    exploration: str = field(default="all", metadata={
        "help": "what the rollouts sample: all (every token, trl's sampling), choices (only region marks and "
                "numbers, the rest greedy) or branch (the G rollouts of a side take its G most likely first region "
                "marks, then sample the later choices: embedrl.train.exploration)"})
    branch_min_p: float | None = field(default=None, metadata={
        "help": "with exploration=branch: the G rollouts of a side branch among the region marks at least this many "
                "times as likely as the best one (None: min_p, which also filters the choices sampled after the "
                "branch). Lower explores the regions the policy deems unlikely, which a cold start that copied its "
                "teacher's misses needs (docs/STATUS.md, issue 3, session 18)"})
    branch_modalities: list[str] | None = field(default=None, metadata={
        "help": "with branch_min_p: the side modalities (text, image, video) whose branches take it; the sides of "
                "the others branch at min_p (None: every side takes branch_min_p)"})
    sample_after_branch: bool = field(default=True, metadata={
        "help": "with exploration=branch: sample the choices after the first region mark (key frames, counts); "
                "false: greedy, so the rollouts of a side differ in their first mark only and the policy gradient "
                "falls on it alone (a tiny Reasoner that cannot see the key frame learns a frame prior from them: "
                "docs/STATUS.md, issue 3, session 19)"})
    claim_choices: bool = field(default=False, metadata={
        "help": "with exploration=choices or branch: the token after a region mark's number (what the trace says of "
                "the region: '#3 flashes' or '#3 moves') is a choice point too, sampled and credited; without it a "
                "cold start that names the right region with its teacher's wrong claim never tries the other "
                "(docs/STATUS.md, issue 3, session 26)"})
    policy_gradient_on: str = field(default="all", metadata={
        "help": "the sides whose rollouts get GRPO's policy-gradient term: all, or missed (only the sides on which "
                "the cold start's greedy trace misses its pair in the RL group under the frozen Embedder, found once "
                "before RL; the KL covers every side). The paper trains EG-RL on hard pairs; on the sides the cold "
                "start already gets right the sampled choices only add noise (docs/STATUS.md, issue 3, session 29)"})
    beta_by_modality: dict[str, float] | None = field(default=None, metadata={
        "help": "the KL coefficient of the rollouts of the sides of some modalities (text, image, video), e.g. "
                "{image: 0.04}; the others keep beta, which must be > 0 (trl computes the reference log-probs only "
                "then). A KL that keeps the clips' key frames where the cold start has them also holds the images' "
                "region pointer on the teacher's blind spots (docs/STATUS.md, issue 3, sessions 29-30)"})
    beta_missed: float | None = field(default=None, metadata={
        "help": "with policy_gradient_on=missed: the KL coefficient of the rollouts of the sides the cold start's "
                "greedy trace misses (None: their modality's, beta_by_modality or beta), so that the sides it gets "
                "right keep the leash while the missed ones move (docs/STATUS.md, issue 3, session 30)"})
    choice_advantages_only: bool = field(default=True, metadata={
        "help": "with exploration=choices or branch: GRPO's policy-gradient term on the choice tokens only (the "
                "others are greedy, not sampled; the KL covers all: embedrl.train.exploration)"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})

    def __post_init__(self) -> None:
        if self.exploration not in EXPLORATION_MODES:
            raise ValueError(f"egrl.exploration={self.exploration!r}: expected one of {EXPLORATION_MODES}")
        if self.branch_min_p is not None and not 0.0 <= self.branch_min_p <= 1.0:
            raise ValueError(f"egrl.branch_min_p={self.branch_min_p}: expected a ratio in [0, 1] (or null: min_p)")
        unknown = sorted(set(self.branch_modalities or ()) - set(SIDE_MODALITIES))
        if unknown:
            raise ValueError(f"egrl.branch_modalities: unknown modalities {unknown}; expected some of {SIDE_MODALITIES}")
        if self.policy_gradient_on not in POLICY_GRADIENT_SIDES:
            raise ValueError(f"egrl.policy_gradient_on={self.policy_gradient_on!r}: expected one of "
                             f"{POLICY_GRADIENT_SIDES}")
        self._check_kl_weights()
        if self.claim_choices and (self.exploration == "all"
                                   or (self.exploration == "branch" and not self.sample_after_branch)):
            raise ValueError("egrl.claim_choices: claims are choice points of exploration=choices, or of branch with "
                             "sample_after_branch (exploration=all samples every token already)")
        self.reward_weights = [self.format_weight, self.process_weight, self.outcome_weight]
        self.shuffle_dataset = False  # batches are whole groups, laid out in order by egrl_dataset
        self.remove_unused_columns = False
        self.logging_nan_inf_filter = False  # a NaN loss must stop the stage, not be averaged away
        prompts = 2 * self.pairs_per_step
        self.per_device_train_batch_size = prompts * self.num_generations
        self.steps_per_generation = 1
        super().__post_init__()

    def _check_kl_weights(self) -> None:
        """beta_by_modality and beta_missed: numbers >= 0 (text such as '4e-2' becomes a number), known modalities,
        the missed sides only where the policy gradient is on them; under either, beta > 0 and no liger loss."""
        if self.beta_by_modality is not None:
            if not isinstance(self.beta_by_modality, dict):
                raise ValueError(f"egrl.beta_by_modality={self.beta_by_modality!r}: expected a mapping of side "
                                 f"modality to KL coefficient, e.g. {{image: 0.04}}")
            unknown = sorted(set(self.beta_by_modality) - set(SIDE_MODALITIES))
            if unknown:
                raise ValueError(f"egrl.beta_by_modality: unknown modalities {unknown}; expected some of "
                                 f"{SIDE_MODALITIES}")
            self.beta_by_modality = {m: _kl_coefficient(f"beta_by_modality.{m}", v)
                                     for m, v in self.beta_by_modality.items()}
        if self.beta_missed is not None:
            if self.policy_gradient_on != "missed":
                raise ValueError("egrl.beta_missed is the KL coefficient of the missed sides: it needs "
                                 f"egrl.policy_gradient_on=missed (got {self.policy_gradient_on!r})")
            self.beta_missed = _kl_coefficient("beta_missed", self.beta_missed)
        if self.beta_by_modality is None and self.beta_missed is None:
            return
        if self.beta <= 0.0:
            raise ValueError(f"egrl.beta_by_modality / beta_missed need egrl.beta > 0 (got {self.beta}): trl computes "
                             "the reference log-probs only then; set beta to the coefficient of the other sides")
        if self.use_liger_kernel:
            raise ValueError("egrl.beta_by_modality / beta_missed: trl's liger loss takes one beta; use_liger_kernel "
                             "must be off")

    def kl_coefficients(self) -> dict[str, float] | None:
        """The KL coefficient of each side modality's rollouts, or None when every side takes `beta`."""
        if self.beta_by_modality is None:
            return None
        return {m: self.beta_by_modality.get(m, self.beta) for m in SIDE_MODALITIES}

    def kl_by_side(self, sides: list[SideRef], missed: np.ndarray | None) -> np.ndarray | None:
        """The KL coefficient of each side's rollouts (its modality's; `beta_missed` on the sides in `missed`, a 0/1
        weight per side), or None when every side takes `beta`."""
        by_modality = self.kl_coefficients()
        if by_modality is None and self.beta_missed is None:
            return None
        per_side = np.array([(by_modality or {}).get(side.modality, self.beta) for side in sides], dtype=float)
        if self.beta_missed is not None:
            per_side[np.asarray(missed, dtype=bool)] = self.beta_missed
        return per_side

    def branch_threshold(self, modality: str | None = None) -> float:
        """The ratio to the best mark's probability above which the branch rollouts of a side of `modality`
        take a region (modality None: the ratio of a side whose modality `branch_modalities` does not list)."""
        takes_own = self.branch_modalities is None or modality in self.branch_modalities
        if self.branch_min_p is not None and takes_own:
            return self.branch_min_p
        return self.min_p if self.min_p is not None else 0.1


# -------------------------------------------------------------------------------------------- data
def egrl_dataset(data_root, *, pairs_per_step: int, prompt: ReasonerPrompt, seed: int, max_groups: int = 0):
    """Prompts laid out group by group: [q0, t0, q1, t1, ...] for B pairs of one RL group; the groups in a
    seeded order, the first `max_groups` of it when that is set."""
    store = MediaStore(data_root)
    groups: dict[str, list] = {}
    for subset_pairs in load_pairs(data_root, "rl").values():
        for pair in subset_pairs:
            groups.setdefault(pair.group or pair.subset, []).append(pair)
    full = [g[:pairs_per_step] for g in groups.values() if len(g) >= pairs_per_step]
    dropped = len(groups) - len(full)
    if dropped:
        log.info("EG-RL: %d of %d groups have fewer than %d pairs and are left out", dropped, len(groups), pairs_per_step)
    order = np.random.default_rng(seed).permutation(len(full))
    if max_groups > 0:
        order = order[:max_groups]
    rows, sides = [], []
    for g in order:
        for i, pair in enumerate(full[g]):
            for role, ref in (("query", pair.query), ("target", pair.positive)):
                messages, images = reasoner_input(ref, role, store, prompt)
                rows.append({"prompt": messages, "images": images, "side": len(sides), "pair_index": i, "role": role,
                             "modality": ref.modality})
                sides.append(ref)
    return rows, sides


# ----------------------------------------------------------------------------------------- rewards
class EGRLRewards:
    """Computes all three reward components once per generation batch (one RL group: B pairs x G rollouts;
    with gradient_accumulation_steps an optimizer step takes several); trl calls one function each. The reward
    log has a row per generation batch."""

    def __init__(self, sides: list[SideRef], store: MediaStore, embedder: Embedder, inputs: EmbedderInputs,
                 config: EGRLStageConfig, log_path: Path, prompt: ReasonerPrompt | None = None):
        self.sides, self.store, self.embedder, self.inputs, self.config = sides, store, embedder, inputs, config
        self.prompt = prompt or ReasonerPrompt()  # the Reasoner's: a grounded one writes marks, resolved here
        self.judge = make_judge(config.judge, **({"base_url": config.judge_url, "model": config.judge_model}
                                                 if config.judge == "chat" else {}))
        self.rng = np.random.default_rng(config.seed)
        self._cache_key: tuple | None = None
        self._cache: dict[str, list[float]] = {}
        self.history: list[dict] = []
        self.log_path = log_path
        self.trainer = None  # set once the GRPOTrainer exists

    def functions(self):
        def format_reward(prompts, completions, **columns):
            return self._component("format", completions, columns)

        def process_reward(prompts, completions, **columns):
            return self._component("process", completions, columns)

        def outcome_reward(prompts, completions, **columns):
            return self._component("outcome", completions, columns)

        return [format_reward, process_reward, outcome_reward]

    def _component(self, name: str, completions, columns) -> list[float]:
        texts = [completion_text(c) for c in completions]
        key = (tuple(texts), tuple(columns["side"]))
        if key != self._cache_key:
            self._cache = self._compute(texts, columns)
            self._cache_key = key
        return self._cache[name]

    @torch.no_grad()
    def _compute(self, texts: list[str], columns) -> dict[str, list[float]]:
        started = time.perf_counter()
        n = len(texts)
        refs = [self.sides[s] for s in columns["side"]]
        texts = [resolve_completion(r, t, self.prompt) for r, t in zip(refs, texts, strict=True)]
        traces = [_parse(t, r, self.store) for t, r in zip(texts, refs, strict=True)]
        ok = np.array([t is not None for t in traces])
        vectors = self._embed(refs, traces)
        roles, pairs = np.array(columns["role"]), np.array(columns["pair_index"])
        b = int(pairs.max()) + 1
        g = n // (2 * b)
        q_idx = np.stack([np.flatnonzero((roles == "query") & (pairs == i)) for i in range(b)])  # [B, G]
        t_idx = np.stack([np.flatnonzero((roles == "target") & (pairs == i)) for i in range(b)])
        if q_idx.shape != (b, g) or t_idx.shape != (b, g):
            raise RuntimeError(f"EG-RL batch is not B={b} pairs x G={g} rollouts per side: check the batch layout")
        q_det, t_det = outcome_details(vectors[q_idx], vectors[t_idx], tau=self.config.outcome_tau)
        outcome = np.zeros(n)
        outcome[q_idx], outcome[t_idx] = q_det.reward, t_det.reward
        texts_arr = np.array(texts, dtype=object)
        q_proc, t_proc = process_rewards(texts_arr[q_idx].tolist(), texts_arr[t_idx].tolist(), self.judge,
                                         m=self.config.process_candidates, rng=self.rng)
        process = np.zeros(n)
        process[q_idx], process[t_idx] = q_proc, t_proc
        fmt = ok.astype(float)
        outcome, process = np.where(ok, outcome, 0.0), np.where(ok, process, 0.0)
        acc = np.zeros(n)
        acc[q_idx], acc[t_idx] = q_det.acc, t_det.acc
        margin = np.zeros(n)
        margin[q_idx], margin[t_idx] = q_det.margin, t_det.margin
        stats = {"format_rate": float(fmt.mean()), "outcome": float(outcome.mean()), "process": float(process.mean()),
                 "acc": float(acc[ok].mean()) if ok.any() else 0.0, "margin": float(margin[ok].mean()) if ok.any() else 0.0,
                 "completion_chars": float(np.mean([len(t) for t in texts])),
                 "reward_seconds": time.perf_counter() - started}
        self.history.append(stats)
        self._publish(stats)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": len(self.history), **stats}) + "\n")
        return {"format": fmt.tolist(), "process": process.tolist(), "outcome": outcome.tolist()}

    def save_state(self, checkpoint: Path) -> None:
        """Into a Trainer checkpoint: the reward history so far and the judge's sampling RNG."""
        state = {"history": self.history, "rng": self.rng.bit_generator.state}
        (checkpoint / REWARD_STATE).write_text(json.dumps(state) + "\n", encoding="utf-8")

    def restore(self, checkpoint: Path | None) -> None:
        """Back to the state saved in `checkpoint` (None: a fresh start); rewrites the reward log to match."""
        if checkpoint is not None:
            state = json.loads((checkpoint / REWARD_STATE).read_text(encoding="utf-8"))
            self.history = state["history"]
            self.rng.bit_generator.state = state["rng"]
        self.log_path.write_text("".join(json.dumps({"step": i + 1, **h}) + "\n" for i, h in enumerate(self.history)),
                                 encoding="utf-8")

    def _publish(self, stats: dict[str, float]) -> None:
        """Hand the step's statistics to trl's metric buffer, so they reach its logs (and MLflow)."""
        metrics = getattr(self.trainer, "_metrics", None) if self.trainer is not None else None
        if metrics is not None and "train" in metrics:
            for name, value in stats.items():
                metrics["train"][f"egrl/{name}"].append(value)

    def _embed(self, refs: list[SideRef], traces: list[TCoT | None]) -> np.ndarray:
        sides = [build_side(r, self.store, t) for r, t in zip(refs, traces, strict=True)]
        return embed_sides(self.embedder, self.inputs, sides, shared_prefix=self.config.shared_prefix)


class ChoiceGRPOTrainer(trl.GRPOTrainer):
    """trl's GRPO with rollouts that explore the trace's choices only (`egrl.exploration: choices` or
    `branch`): tells branch rollouts the modality of each side, and with `advantages_only` puts the
    policy-gradient term on the choice tokens of each completion only, the tokens the rollouts sampled
    (the KL to the reference stays on every token). `pg_sides` (a 0/1 weight per side index, or None for
    all) keeps the policy-gradient term on some sides only (`egrl.policy_gradient_on: missed`). `kl_sides` (a KL
    coefficient per side index, or None for trl's one `beta`) weighs each completion's KL term by its side's
    coefficient (`egrl.beta_by_modality`, `egrl.beta_missed`)."""

    def __init__(self, *args, choices: ChoiceExploration | None = None, advantages_only: bool = True,
                 pg_sides: np.ndarray | None = None, kl_sides: np.ndarray | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.choices = choices
        self.advantages_only = advantages_only and choices is not None
        self.pg_sides = pg_sides
        self.kl_sides = kl_sides

    def _generate_and_score_completions(self, inputs):
        if isinstance(self.choices, BranchExploration):
            self.choices.plan([row["modality"] for row in inputs])
        batch = super()._generate_and_score_completions(inputs)
        sides = [row["side"] for row in inputs]
        if self.advantages_only:
            batch = advantages_on_choices(batch, self.choices)
        if self.pg_sides is not None:
            batch["advantages"] = on_sides(batch["advantages"], self.pg_sides[sides])
        if self.kl_sides is not None:  # a tensor, so that trl's shuffling and splitting keep it row for row
            batch[KL_WEIGHTS] = torch.tensor(self.kl_sides[sides], dtype=torch.float32)[:, None]
        return batch

    def _compute_loss(self, model, inputs):
        if self.kl_sides is None:
            return super()._compute_loss(model, inputs)
        one_beta = self.beta
        self.beta = RowCoefficients(one_beta, inputs[KL_WEIGHTS].to(inputs["completion_ids"].device))
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self.beta = one_beta


KL_WEIGHTS = "kl_weights"


class RowCoefficients(float):
    """trl's GRPO loss adds `self.beta * per_token_kl` ([N, T]) in one place and otherwise only tests `beta != 0`.
    Standing in for `beta` during the loss, this float is the run's beta to those tests, and multiplies a tensor
    by one coefficient per row ([N, 1]): the KL term of each completion then takes its side's coefficient,
    without a copy of trl's loss. tests/test_stages.py checks the loss against trl's with one beta."""

    rows: torch.Tensor

    def __new__(cls, value: float, rows: torch.Tensor):
        made = super().__new__(cls, value)
        made.rows = rows
        return made

    def __mul__(self, other):
        if isinstance(other, torch.Tensor):
            return self.rows.to(other.dtype) * other
        return float(self) * other

    __rmul__ = __mul__


def on_sides(advantages: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    """GRPO advantages ([N] or [N, T], one row per completion) with the rows of the sides not kept set to 0."""
    weight = torch.as_tensor(keep, dtype=advantages.dtype, device=advantages.device)
    return advantages * (weight if advantages.dim() == 1 else weight[:, None])


class StepTimes(transformers.TrainerCallback):
    """Wall seconds of every GRPO step split into generation (the Reasoner's `generate` calls), reward
    (`EGRLRewards`, the frozen Embedder and the judge) and update (the rest: log-probs, loss, backward,
    optimizer), one JSON line per step in `path`."""

    def __init__(self, model, rewards: EGRLRewards, path: Path):
        self.rewards, self.path = rewards, path
        self.generation = 0.0
        self._started = 0.0
        self._reward_mark = 0.0
        plain_generate = model.generate

        def timed_generate(*args, **kwargs):
            begun = time.perf_counter()
            try:
                return plain_generate(*args, **kwargs)
            finally:
                self.generation += time.perf_counter() - begun

        model.generate = timed_generate

    def _reward_seconds(self) -> float:
        return sum(h["reward_seconds"] for h in self.rewards.history)

    def on_step_begin(self, args, state, control, **kwargs):
        self.generation, self._started, self._reward_mark = 0.0, time.perf_counter(), self._reward_seconds()

    def on_step_end(self, args, state, control, **kwargs):
        total = time.perf_counter() - self._started
        reward = self._reward_seconds() - self._reward_mark
        row = {"step": state.global_step, "seconds": total, "generation_seconds": self.generation,
               "reward_seconds": reward, "update_seconds": max(0.0, total - self.generation - reward)}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def _parse(text: str, ref: SideRef, store: MediaStore) -> TCoT | None:
    try:
        return parse(text.strip(), modality=ref.modality, num_frames=store.num_frames(ref))
    except (TCoTFormatError, ValueError, TypeError):
        return None


# -------------------------------------------------------------------------------- hard sides
def greedy_misses(rows: list[dict], sides: list[SideRef], reasoner: Reasoner, store: MediaStore,
                  embedder: Embedder, inputs: EmbedderInputs, config: EGRLStageConfig) -> np.ndarray:
    """Per side index: does the Reasoner's greedy trace miss its pair in the RL group (the frozen Embedder
    ranks the pair's other side below another pair's; acc < 1 with one rollout per side)? A trace that does not
    parse counts as a miss. `rows` are laid out as egrl_dataset writes them, one group after another."""
    refs = [sides[r["side"]] for r in rows]
    reasoner.model.to(inference_device())  # where the trainer would put it; generation on the host is slow
    texts = reasoner.generate(refs, [r["role"] for r in rows], store, batch_size=128)
    ranked = rank_in_groups(refs, texts, store, embedder, inputs, config)
    missed = np.zeros(len(sides), dtype=bool)
    for row, trace, acc in zip(rows, ranked.traces, ranked.acc, strict=True):
        missed[row["side"]] = acc < 1.0 or trace is None
    return missed


@dataclass
class GroupRanking:
    """One trace per row of whole RL groups (rows q0, t0, q1, t1, ...), ranked by the frozen Embedder within
    its group as the outcome reward ranks one rollout per side: per row its parsed trace (None: malformed),
    acc (1: its pair's other side ranked first) and outcome reward."""

    traces: list[TCoT | None]
    acc: np.ndarray
    outcome: np.ndarray


def rank_in_groups(refs: list[SideRef], texts: list[str], store: MediaStore, embedder: Embedder,
                   inputs: EmbedderInputs, config: EGRLStageConfig) -> GroupRanking:
    traces = [_parse(t, r, store) for t, r in zip(texts, refs, strict=True)]
    vectors = embed_sides(embedder, inputs, [build_side(r, store, t) for r, t in zip(refs, traces, strict=True)],
                          shared_prefix=config.shared_prefix)
    acc, outcome = np.zeros(len(refs)), np.zeros(len(refs))
    per_group = 2 * config.pairs_per_step
    for start in range(0, len(refs), per_group):
        group = vectors[start:start + per_group].reshape(config.pairs_per_step, 2, -1)
        q_det, t_det = outcome_details(group[:, None, 0], group[:, None, 1], tau=config.outcome_tau)
        acc[start:start + per_group:2], acc[start + 1:start + per_group:2] = q_det.acc.ravel(), t_det.acc.ravel()
        outcome[start:start + per_group:2] = q_det.reward.ravel()
        outcome[start + 1:start + per_group:2] = t_det.reward.ravel()
    return GroupRanking(traces, acc, outcome)


def _policy_gradient_sides(config: EGRLStageConfig, rows, sides, reasoner: Reasoner, store, embedder, inputs,
                           out: Path) -> np.ndarray | None:
    """None (every side) or the 0/1 weight per side of `egrl.policy_gradient_on: missed`, kept in
    `out/missed_sides.json` so that a resumed run trains on the same sides. `reasoner` wraps the cold start
    that RL then trains (loaded once)."""
    if config.policy_gradient_on == "all":
        return None
    path = out / MISSED_SIDES
    if path.exists():
        missed = np.array(json.loads(path.read_text(encoding="utf-8"))["missed"], dtype=bool)
        if len(missed) != len(sides):
            raise ValueError(f"{path}: {len(missed)} sides, but the RL data has {len(sides)}: it was written for "
                             "other data; remove it to find the missed sides again")
    else:
        missed = greedy_misses(rows, sides, reasoner, store, embedder, inputs, config)
        path.write_text(json.dumps({"sides": len(missed), "missed_count": int(missed.sum()),
                                    "missed": missed.tolist()}) + "\n", encoding="utf-8")
    log.info("EG-RL: policy gradient on the %d of %d sides the cold start's greedy traces miss",
             int(missed.sum()), len(missed))
    return missed.astype(float)


# ------------------------------------------------------------------------------------------- train
@dataclass
class EGRLResult:
    out_dir: Path
    history: list[dict]
    seconds: float


def train_egrl(data_root: str | Path, reasoner_dir: str | Path, embedder_dir: str | Path, out_dir: str | Path,
               config: EGRLStageConfig) -> EGRLResult:
    import datasets

    from embedrl.models.factory import load_model

    started = time.perf_counter()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompt = ReasonerPrompt.of_model(reasoner_dir)
    rows, sides = egrl_dataset(data_root, pairs_per_step=config.pairs_per_step, prompt=prompt, seed=config.seed,
                               max_groups=config.max_groups)
    dataset = datasets.Dataset.from_list(rows)

    embedder, inputs = load_embedder(embedder_dir)
    for p in embedder.parameters():
        p.requires_grad_(False)
    rewards = EGRLRewards(sides, MediaStore(data_root), embedder, inputs, config, out / "reward_log.jsonl", prompt)
    config.output_dir = str(out / "checkpoints")
    resume = resume_point(config.output_dir)
    rewards.restore(resume)

    model, processor = load_model(reasoner_dir)
    cold_start = Reasoner(model, processor, prompt=prompt,  # sets left padding, as trl generates
                          max_new_tokens=config.max_completion_length)
    pg_sides = _policy_gradient_sides(config, rows, sides, cold_start, rewards.store, embedder, inputs, out)
    kl_sides = config.kl_by_side(sides, pg_sides)
    trainer_class, choice_kwargs = trl.GRPOTrainer, {}
    if pg_sides is not None or kl_sides is not None:
        trainer_class, choice_kwargs = ChoiceGRPOTrainer, {"pg_sides": pg_sides, "kl_sides": kl_sides}
    if config.exploration in ("choices", "branch"):
        choices = explore_only_choices(model, processor.tokenizer, branch=config.exploration == "branch",
                                       group_size=config.num_generations, min_p=config.branch_threshold(),
                                       min_p_by_modality={m: config.branch_threshold(m) for m in SIDE_MODALITIES},
                                       sample_after_branch=config.sample_after_branch, claims=config.claim_choices)
        trainer_class = ChoiceGRPOTrainer
        choice_kwargs.update(choices=choices, advantages_only=config.choice_advantages_only)
    timer = StepTimes(model, rewards, out / "step_times.jsonl")
    trainer = trainer_class(model=model, reward_funcs=rewards.functions(), args=config, train_dataset=dataset,
                            processing_class=processor,
                            callbacks=[completion_marker("eg_rl", rewards.save_state, train_log=out / "train_log.jsonl"),
                                       timer], **choice_kwargs)
    rewards.trainer = trainer
    train_from(trainer, resume)
    final = out / "model"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    meta_path = Path(reasoner_dir) / "embedrl.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["stage"] = {"name": "eg_rl", "base_model": str(reasoner_dir), "embedder": str(embedder_dir),
                     "reward_weights": config.reward_weights, "judge": config.judge,
                     "exploration": config.exploration,
                     **({"branch_min_p": choices.min_p_by_modality, "sample_after_branch": choices.sample_after}
                        if config.exploration == "branch" else {}),
                     "choice_advantages_only": config.exploration != "all" and config.choice_advantages_only,
                     "claim_choices": config.claim_choices, "policy_gradient_on": config.policy_gradient_on,
                     "beta": config.beta, "beta_by_modality": config.kl_coefficients(),
                     "beta_missed": config.beta_missed}
    (final / "embedrl.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out / "trainer_log.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
    return EGRLResult(out, rewards.history, time.perf_counter() - started)
