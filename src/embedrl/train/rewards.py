"""EG-RL rewards of the Reasoner: format, process (a judge names the positive) and outcome (the frozen Embedder).

Total reward (method.md, "EG-RL reward"): `R = alpha * format + beta * process + gamma * outcome`.

Layout of one step: B pairs, each with G query rollouts and G target rollouts. Rewards come as
[B, G] arrays, one for the query rollouts and one for the target rollouts; both sides are scored the
same way with the roles swapped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from embedrl.tcot import format_reward, parse
from embedrl.tcot.chat_teacher import ChatTeacher

log = logging.getLogger(__name__)

__all__ = [
    "JUDGES",
    "ChatJudge",
    "Judge",
    "LexicalJudge",
    "OutcomeDetails",
    "UnknownJudgeError",
    "combine_rewards",
    "format_reward_fn",
    "make_judge",
    "outcome_details",
    "outcome_rewards",
    "process_rewards",
    "register_judge",
]

ALPHA, BETA, GAMMA = 0.05, 0.8, 0.2  # paper weights (the public code swaps beta and gamma)
OUTCOME_TAU = 0.5

# ============================================================================================ outcome


@dataclass(frozen=True)
class OutcomeDetails:
    """Per-rollout parts of the outcome reward of one side, each [B, G]; `reward = acc * margin`."""

    acc: Any
    s_pos: Any
    s_neg: Any
    margin: Any
    reward: Any


def _check_embeddings(q: Any, t: Any, tau: float) -> None:
    if q.ndim != 3 or t.ndim != 3:
        raise ValueError(
            f"query and target embeddings must be [B, G, D], got shapes {tuple(q.shape)} and {tuple(t.shape)}"
        )
    if tuple(q.shape) != tuple(t.shape):
        raise ValueError(
            "query and target embeddings need the same [B, G, D] shape (G query and G target rollouts per"
            f" pair), got {tuple(q.shape)} and {tuple(t.shape)}"
        )
    batch, group, dim = q.shape
    if batch < 2:
        raise ValueError(
            f"the outcome reward needs at least 2 pairs per step (the other pairs give the negatives), got B={batch}"
        )
    if group < 1 or dim < 1:
        raise ValueError(f"embeddings need G >= 1 rollouts and D >= 1 dimensions, got shape {tuple(q.shape)}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def _side(anchors: torch.Tensor, others: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """Outcome parts of every anchor rollout; the other side's rollouts of its own pair are the positives.

    anchors, others: unit vectors [B, G, D]. Returns tensors [B, G].
    """
    batch, group, _ = anchors.shape
    cos = torch.einsum("bgd,chd->bgch", anchors, others)  # [B, G, B, G]: anchor (b, g) vs other (c, h)
    own = torch.arange(batch, device=anchors.device)
    positives = cos[own, :, own, :]  # [B, G, G]
    s_pos = positives.mean(dim=-1)

    flat = cos.reshape(batch, group, batch * group)
    is_negative = (own[:, None] != own[None, :]).repeat_interleave(group, dim=1)[:, None, :]  # [B, 1, B*G]
    logits = (flat / tau).masked_fill(~is_negative, float("-inf"))
    weights = torch.softmax(logits, dim=-1)  # exactly 0 on the positives
    s_neg = (weights * flat.masked_fill(~is_negative, 0.0)).sum(dim=-1)

    # Candidate list per anchor: the negatives (other pairs in order), then the positives. A stable
    # sort on -cos breaks ties by that position, so ties favour negatives: a collapsed Embedder
    # (all cosines equal) earns acc 0, not a free 1.
    pair_order = torch.argsort(torch.eye(batch, dtype=torch.int8, device=anchors.device), dim=1, stable=True)
    columns = (pair_order[:, :, None] * group + torch.arange(group, device=anchors.device)).reshape(batch, -1)
    candidates = torch.gather(flat, 2, columns[:, None, :].expand(batch, group, -1))
    top = torch.argsort(-candidates, dim=-1, stable=True)[..., :group]
    acc = (top >= (batch - 1) * group).sum(dim=-1).to(flat.dtype) / group

    margin = s_pos - s_neg
    reward = acc * margin + 0.0  # + 0.0 turns the -0.0 of acc 0 times a negative margin into 0.0
    return {"acc": acc, "s_pos": s_pos, "s_neg": s_neg, "margin": margin, "reward": reward}


def _outcome(q: Any, t: Any, tau: float) -> tuple[OutcomeDetails, OutcomeDetails]:
    is_numpy = not isinstance(q, torch.Tensor)
    if is_numpy != (not isinstance(t, torch.Tensor)):
        raise TypeError("pass query and target embeddings as the same kind: both numpy or both torch")
    if is_numpy:
        q_t = torch.as_tensor(np.asarray(q, dtype=np.float64))
        t_t = torch.as_tensor(np.asarray(t, dtype=np.float64))
    else:
        dtype = torch.promote_types(torch.promote_types(q.dtype, t.dtype), torch.float32)
        q_t, t_t = q.detach().to(dtype), t.detach().to(device=q.device, dtype=dtype)
    _check_embeddings(q_t, t_t, tau)
    for name, value in (("query", q_t), ("target", t_t)):
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} embeddings hold NaN or inf; the Embedder output is broken")
    with torch.no_grad():
        q_unit = torch.nn.functional.normalize(q_t, dim=-1)
        t_unit = torch.nn.functional.normalize(t_t, dim=-1)
        sides = _side(q_unit, t_unit, tau), _side(t_unit, q_unit, tau)

    def convert(parts: dict[str, torch.Tensor]) -> OutcomeDetails:
        if is_numpy:
            return OutcomeDetails(**{k: v.numpy() for k, v in parts.items()})
        return OutcomeDetails(**parts)

    return convert(sides[0]), convert(sides[1])


def outcome_details(q: Any, t: Any, *, tau: float = OUTCOME_TAU) -> tuple[OutcomeDetails, OutcomeDetails]:
    """(query side, target side) parts of the outcome reward: acc, s_pos, s_neg, margin, reward, each [B, G].

    Same inputs and rules as `outcome_rewards`.
    """
    return _outcome(q, t, tau)


def outcome_rewards(q: Any, t: Any, *, tau: float = OUTCOME_TAU) -> tuple[Any, Any]:
    """Embedder-guided outcome reward of every rollout: `(query_rewards, target_rewards)`, each [B, G].

    `q`, `t`: Embedder outputs of the query and target rollouts, [B, G, D], numpy or torch (the
    result is of the same kind). They are L2-normalised over D here; a zero vector stays zero (cos 0).
    For query rollout e of pair i, with positives P = the G target rollouts of pair i and negatives
    N = the (B-1)*G target rollouts of the other pairs:

    - s_pos = mean over P of cos(e, t)
    - s_neg = sum over N of w_t cos(e, t), w = softmax over N of cos(e, t) / tau
    - acc = |top-G of cos(e, .) over P and N, intersected with P| / G, ties ranked against the positive
    - reward = acc * (s_pos - s_neg)

    Target rollouts are scored the same way against the query rollouts. numpy is computed in float64;
    torch on the input's device in its dtype, at least float32 (half inputs give float32 rewards).
    Raises ValueError for B < 2: without other pairs there are no negatives.
    """
    query, target = _outcome(q, t, tau)
    return query.reward, target.reward


# ============================================================================================= format


def completion_text(completion: Any) -> str:
    """The text of one trl completion: a string, or a list of chat messages (the last one is the reply)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content", "")
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):  # multimodal content parts
            return "".join(
                part.get("text", "")
                for part in content
                if isinstance(part, Mapping) and part.get("type") == "text"
            )
    return ""


def _per_sample(value: Any, count: int, name: str) -> list[Any]:
    if isinstance(value, list | tuple):
        if len(value) != count:
            raise ValueError(
                f"{name} has {len(value)} entries for {count} completions; give one per completion"
            )
        return list(value)
    return [value] * count


def _frame_count(value: Any) -> Any:
    """A dataset cell as format_reward wants it: numpy ints and integral floats become int, a null None."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):  # a null cell reads as NaN, an int column may read as float
        return int(value) if float(value).is_integer() else None
    return value


def format_reward_fn(
    prompts: Any, completions: Sequence[Any], *, modality: Any, num_frames: Any = None, **kwargs: Any
) -> list[float]:
    """trl reward function: 1.0 per completion that is a well-formed T-CoT fitting its modality, else 0.0.

    `modality` and `num_frames` are dataset columns (one entry per completion) or one value for all.
    A missing `num_frames` (None, NaN) is passed on as None.
    """
    modalities = _per_sample(modality, len(completions), "modality")
    frames = _per_sample(num_frames, len(completions), "num_frames")
    rewards = []
    for completion, sample_modality, sample_frames in zip(completions, modalities, frames, strict=True):
        sample_frames = _frame_count(sample_frames)
        rewards.append(
            format_reward(
                completion_text(completion), modality=str(sample_modality), num_frames=sample_frames
            )
        )
    return rewards


# ============================================================================================ process


@runtime_checkable
class Judge(Protocol):
    """Names which candidate T-CoT belongs with the anchor T-CoT."""

    def choose(self, anchor: str, candidates: list[str]) -> int | None:
        """Index into `candidates` of the positive; None when undecided (counts as wrong)."""
        ...


_TOKEN_RE = re.compile(r"[a-z]+|[0-9]+")
_TAG_RE = re.compile(r"</?(?:thinking|rethink|answer)>")
_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)
# Function words carry no content and would make every pair overlap.
_STOPWORDS = frozenset(
    "a an the of in on at to and or is are was were be it its this that with for from by as which what".split()
)


def _lexical_tokens(tcot_text: str) -> frozenset[str]:
    """Content tokens of the answer line and cue keywords; falls back to the raw text when it does not parse."""
    try:
        tcot = parse(tcot_text)
        text = " ".join([tcot.answer, *map(str, tcot.text_keywords)])
    except Exception:  # noqa: BLE001 - any unparseable rollout falls back to its text
        match = _ANSWER_RE.search(tcot_text) if isinstance(tcot_text, str) else None
        text = match.group(1) if match else _TAG_RE.sub(" ", str(tcot_text))
    return frozenset(t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOPWORDS)


class LexicalJudge:
    """The local judge: a deterministic stand-in for the paper's frozen Qwen3-VL-8B discriminator.

    It reads no media and understands nothing. It compares the `<answer>` line plus the
    `text_keywords` cue of the anchor T-CoT with those of each candidate by word overlap: lowercase
    words and numbers (regex `[a-z]+|[0-9]+`, a few function words dropped), scored as the Jaccard
    overlap of the two token sets. It picks the single highest overlap; a tie for the highest, or no
    overlap at all, is undecided (None). A T-CoT that does not parse is compared by its `<answer>`
    text if it has one, else by its whole text without the tags. Suited to closed-vocabulary data
    (MiniMMEB), where answer words identify the object; for real data use `ChatJudge`.
    """

    def choose(self, anchor: str, candidates: list[str]) -> int | None:
        anchor_tokens = _lexical_tokens(anchor)
        overlaps = []
        for candidate in candidates:
            tokens = _lexical_tokens(candidate)
            union = anchor_tokens | tokens
            overlaps.append(Fraction(len(anchor_tokens & tokens), len(union)) if union else Fraction(0))
        if not overlaps:
            return None
        best = max(overlaps)
        if best == 0 or overlaps.count(best) > 1:
            return None
        return overlaps.index(best)

    def __repr__(self) -> str:
        return "LexicalJudge()"


JUDGE_SYSTEM_PROMPT = (
    "You match reasoning traces. You get the trace of an anchor (a query or a retrieval target) and a"
    " numbered list of candidate traces. Exactly one candidate describes the item that belongs with the"
    " anchor; the others describe other items. Reply with the number of that candidate only."
)


def judge_user_text(anchor: str, candidates: Sequence[str]) -> str:
    """The user turn of ChatJudge: the anchor trace and the candidates numbered 1..m."""
    lines = [f"Anchor trace:\n{anchor}", "", "Candidate traces:"]
    for number, candidate in enumerate(candidates, start=1):
        lines += [f"[{number}]", candidate, ""]
    lines.append(
        f"Which candidate belongs with the anchor? Answer with one number from 1 to {len(candidates)}."
    )
    return "\n".join(lines)


_ONLY_NUMBER_RE = re.compile(r"^\W*(?:candidate\s*)?#?\[?(\d+)\]?\W*$", re.IGNORECASE)


def parse_choice(reply: str, num_candidates: int) -> int | None:
    """0-based index named by a judge reply, or None when the reply names no single valid candidate.

    Accepts a bare number with decoration ("3", "**3**", "[3]", "Candidate 3."); in a longer reply,
    only when exactly one distinct number in 1..m occurs.
    """
    match = _ONLY_NUMBER_RE.match(reply.strip())
    if match:
        numbers = {int(match.group(1))}
    else:
        numbers = {int(n) for n in re.findall(r"\d+", reply) if 1 <= int(n) <= num_candidates}
    if len(numbers) != 1:
        return None
    (number,) = numbers
    return number - 1 if 1 <= number <= num_candidates else None


class ChatJudge:
    """The paper's judge: a chat model behind an OpenAI-compatible endpoint (e.g. vLLM serving Qwen3-VL-8B).

    Sends the anchor T-CoT and the numbered candidates and reads back the number. A reply that names
    no single valid number gives None; endpoint errors raise (process_rewards counts them as wrong).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 16,
        teacher: ChatTeacher | None = None,
    ) -> None:
        self.teacher = teacher or ChatTeacher(
            base_url,
            model,
            api_key=api_key,
            temperature=0.0,
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
        )

    def choose(self, anchor: str, candidates: list[str]) -> int | None:
        messages = [
            {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
            {"role": "user", "content": judge_user_text(anchor, candidates)},
        ]
        reply = self.teacher.chat(messages)
        choice = parse_choice(reply, len(candidates))
        if choice is None:
            log.debug("judge reply names no single candidate in 1..%d: %r", len(candidates), reply[:200])
        return choice

    def __repr__(self) -> str:
        return f"ChatJudge({self.teacher!r})"


class UnknownJudgeError(KeyError):
    """No judge is registered under the name asked for; the message lists the ones that are."""

    def __str__(self) -> str:
        return str(self.args[0])


class _Registry(dict):
    def __missing__(self, name: str) -> Any:
        raise UnknownJudgeError(f"unknown judge {name!r}; known judges: {', '.join(sorted(self))}")


JUDGES: dict[str, Callable[..., Judge]] = _Registry(lexical=LexicalJudge, chat=ChatJudge)


def register_judge(name: str, factory: Callable[..., Judge]) -> None:
    """Add a judge factory under `name`; raises ValueError if the name is taken."""
    if name in JUDGES:
        raise ValueError(f"judge {name!r} is already registered ({JUDGES[name]!r}); pick another name")
    JUDGES[name] = factory


def make_judge(name: str, **kwargs: Any) -> Judge:
    """Build the judge registered as `name` (`lexical`, `chat`, ...) with `kwargs`."""
    return JUDGES[name](**kwargs)


@dataclass(frozen=True)
class _Trial:
    side: int  # 0: query rollout judged among target rollouts; 1: the reverse
    pair: int
    rollout: int
    anchor: str
    candidates: list[str]
    positive: int


def _check_tcots(query_tcots: Sequence[Sequence[str]], target_tcots: Sequence[Sequence[str]], m: int) -> int:
    batch = len(query_tcots)
    if len(target_tcots) != batch:
        raise ValueError(f"query_tcots has {batch} pairs but target_tcots has {len(target_tcots)}")
    if batch < 2:
        raise ValueError(
            f"process_rewards needs at least 2 pairs (negatives come from other pairs), got {batch}"
        )
    group = len(query_tcots[0])
    for name, nested in (("query_tcots", query_tcots), ("target_tcots", target_tcots)):
        for index, rollouts in enumerate(nested):
            if len(rollouts) != group or isinstance(rollouts, str):
                raise ValueError(
                    f"{name}[{index}] must be a list of {group} T-CoT strings, got {rollouts!r:.80}"
                )
    if group < 1:
        raise ValueError("each pair needs at least one rollout")
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise ValueError(f"m (candidates shown to the judge) must be an int >= 2, got {m!r}")
    return group


def _trials(
    anchors: Sequence[Sequence[str]],
    others: Sequence[Sequence[str]],
    side: int,
    m: int,
    rng: np.random.Generator,
) -> Iterator[_Trial]:
    batch, group = len(anchors), len(anchors[0])
    num_negatives = min(m - 1, (batch - 1) * group)
    for pair in range(batch):
        pool = [(j, h) for j in range(batch) if j != pair for h in range(group)]
        for rollout in range(group):
            positive = others[pair][int(rng.integers(group))]
            picks = rng.choice(len(pool), size=num_negatives, replace=False)
            candidates = [positive] + [others[pool[p][0]][pool[p][1]] for p in picks]
            order = rng.permutation(len(candidates))
            shuffled = [candidates[o] for o in order]
            yield _Trial(
                side, pair, rollout, anchors[pair][rollout], shuffled, int(np.flatnonzero(order == 0)[0])
            )


def process_rewards(
    query_tcots: Sequence[Sequence[str]],
    target_tcots: Sequence[Sequence[str]],
    judge: Judge,
    *,
    m: int = 4,
    rng: np.random.Generator,
    max_workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Judge-verified process reward: `(query_rewards, target_rewards)`, float64 arrays [B, G] of 0/1.

    For query rollout (i, e) the judge sees its T-CoT and m candidates, shuffled: one positive drawn
    uniformly from the G target rollouts of pair i, and m-1 negatives drawn without replacement from
    the target rollouts of the other pairs (all of them when there are fewer). Reward 1 if the judge
    names the positive. Target rollouts are judged the same way against the query rollouts. All
    draws come from `rng` before any judge call, so a seed fixes the trials whatever `max_workers`.
    A judge that raises, answers None or an index out of range gives 0; failures are counted and
    logged, never raised.
    """
    group = _check_tcots(query_tcots, target_tcots, m)
    batch = len(query_tcots)
    trials = list(_trials(query_tcots, target_tcots, 0, m, rng)) + list(
        _trials(target_tcots, query_tcots, 1, m, rng)
    )
    errors: list[str] = []

    def run(trial: _Trial) -> float:
        try:
            choice = judge.choose(trial.anchor, list(trial.candidates))
        except Exception as exc:  # noqa: BLE001 - by contract a failing judge costs reward, not the step
            errors.append(f"{type(exc).__name__}: {exc}")
            return 0.0
        return 1.0 if choice is not None and choice == trial.positive else 0.0

    if max_workers > 1:
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            scores = list(pool.map(run, trials))
    else:
        scores = [run(trial) for trial in trials]
    if errors:
        level = logging.ERROR if len(errors) == len(trials) else logging.WARNING
        log.log(
            level,
            "process reward: the judge failed on %d of %d trials (scored 0); first error: %s",
            len(errors),
            len(trials),
            errors[0],
        )
    rewards = np.zeros((2, batch, group), dtype=np.float64)
    for trial, score in zip(trials, scores, strict=True):
        rewards[trial.side, trial.pair, trial.rollout] = score
    return rewards[0], rewards[1]


# ============================================================================================ combine


def combine_rewards(
    format: Any, process: Any, outcome: Any, *, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA
) -> Any:
    """`alpha * format + beta * process + gamma * outcome`, elementwise (paper: 0.05, 0.8, 0.2).

    Parts are scalars or arrays of one shape (lists, numpy, torch); with any torch part the result
    is a torch tensor, else numpy (a Python float when all three are scalars).
    """
    parts = {"format": format, "process": process, "outcome": outcome}
    shapes = {
        name: tuple(np.shape(v) if not isinstance(v, torch.Tensor) else v.shape) for name, v in parts.items()
    }
    non_scalar = {name: shape for name, shape in shapes.items() if shape != ()}
    if len(set(non_scalar.values())) > 1:
        raise ValueError(f"reward parts must have one shape, got {non_scalar}")
    tensors = [v for v in parts.values() if isinstance(v, torch.Tensor)]
    if tensors:
        dtype = torch.float32
        for tensor in tensors:
            dtype = torch.promote_types(dtype, tensor.dtype)
        f, p, o = (torch.as_tensor(v, dtype=dtype, device=tensors[0].device) for v in parts.values())
        return alpha * f + beta * p + gamma * o
    if not non_scalar:
        return float(alpha * format + beta * process + gamma * outcome)
    f, p, o = (np.asarray(v, dtype=np.float64) for v in parts.values())
    return alpha * f + beta * p + gamma * o
