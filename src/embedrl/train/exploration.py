"""Where EG-RL's rollouts explore: every token (trl's sampling) or only the trace's choices.

GRPO learns from the reward differences between the G rollouts of one side. Sampling every token at
temperature T explores the choice the reward is about (which region, which key frame) and, with it,
the wording and the tags. A paper-scale Reasoner keeps its format at T = 1; the tiny Reasoner, trained
from scratch in minutes, does not (about half of its rollouts at T = 1 fail the format and earn 0 on
every component), so most of a group's reward spread, and of GRPO's signal, is about the format.

`ChoiceExploration` samples only at the choice points of a grounded Reasoner's trace, and takes the
most likely token everywhere else:
- a region mark: the token after `#` (`#3`: which region the trace points at);
- a number: a position whose most likely token is a number (a key frame, a count);
- with `claims`, a region's claim: the token after a mark's number (`#3 flashes` or `#3 moves`: what the trace
  says of the region). A cold start that copied its teacher's misses picks the right region and then writes
  the teacher's claim about it ("moves" where the region flashes); without this choice the rollouts never
  try the other claim. (Measured: no gain on the dev set. A claim earns reward only when the partner side's
  rollouts make it too, since a side's outcome is its similarity to them: docs/STATUS.md, issue 3, session 26.)
The G rollouts of a side then differ in their choices only, so their reward spread is the choices'
effect, and the tokens the rollouts share (same token after the same prefix) get advantages that sum
to zero over the group: their gradients cancel, and the update falls on the choices. The sampled
distribution at a choice point is the policy's own (trl's temperature and min_p apply there).

With these rollouts the only stochastic actions are the choices: every other token is the argmax, not a
sample of the policy, so a policy gradient on it is not an estimate of anything (a rollout with a bad
choice would push down the well-formed greedy tokens that follow it). `ChoiceExploration.choice_mask`
marks the choice tokens of a completion, and EG-RL puts GRPO's policy-gradient term on them only, with
the KL to the reference on every token (`egrl.choice_advantages_only`). (Restricting the KL as well lets the
greedy tokens drift with nothing to hold them: held-out format 0.33 after 54 steps, 0.87 with the
loss on every token.)

`BranchExploration` (`egrl.exploration: branch`) makes the G rollouts of a side compare the alternatives
of its first region mark instead of sampling it: greedy up to that mark, where the j-th rollout of the
side takes the j-th most likely region (among those at least `min_p` times as likely as the best, taken
in turn when there are fewer than G; the ratio may differ by the side's modality), then choices sampled
as above. Sampled rollouts of a tiny
Reasoner gave GRPO a noise-dominated signal (the reward edge of a rollout naming the detail was +0.42
sigma, and each group is seen once: docs/STATUS.md, issue 3, session 9); branching removes the
sampling of that choice, so a side's reward spread is the difference its region choice makes, and the
update moves each alternative's logit by its group-relative advantage. The object count written before
the mark is greedy, no longer an explored choice. (Measured on the rl split: the Embedder's reward then
ranks the detailed region's branch first on 82% of image sides, yet EG-RL still moves the marks away from
it: docs/STATUS.md, issue 3, session 10. Session 11: repeated on six groups, GRPO over branch rollouts does not
fit even the groups it trains on; without the negative advantages of the enumerated alternatives it does.)
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList

EXPLORATION_MODES = ("all", "choices", "branch")


class ChoiceExploration(LogitsProcessor):
    """Greedy except at choice points (after the mark token, or where a number is most likely)."""

    def __init__(self, mark_token_id: int, number_token_ids: list[int], *, claims: bool = False):
        self.mark_token_id = mark_token_id
        self.number_token_ids = torch.tensor(sorted(set(number_token_ids)), dtype=torch.long)
        self.claims = claims

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best = scores.argmax(dim=-1)
        choice = (input_ids[:, -1] == self.mark_token_id) | torch.isin(best, self.number_token_ids.to(best.device))
        if self.claims:
            choice = choice | self.region_number(input_ids)[:, -1]
        return torch.where(choice[:, None], scores, _greedy(scores))

    def choice_mask(self, completion_ids: torch.Tensor) -> torch.Tensor:
        """1 at the tokens of completions [N, T] that were choices: the token after a mark, and every number
        (and with `claims` the token after a mark's number). (A number is only ever written where a number
        was most likely, a choice point; a non-number sampled at such a point is the one choice this cannot
        see, and min_p makes it rare.)"""
        numbers = torch.isin(completion_ids, self.number_token_ids.to(completion_ids.device))
        mask = self.after_mark(completion_ids) | numbers
        if self.claims:
            mask[:, 1:] |= self.region_number(completion_ids)[:, :-1] & ~numbers[:, 1:]
        return mask.long()

    def region_number(self, ids: torch.Tensor) -> torch.Tensor:
        """True at the digits of the region marks in ids [N, T] (`#3`: the 3; `#12`: the 1 and the 2); the
        token after a mark's last digit is the region's claim."""
        numbers = torch.isin(ids, self.number_token_ids.to(ids.device))
        first = self.after_mark(ids) & numbers
        second = torch.zeros_like(first)
        second[:, 1:] = first[:, :-1] & numbers[:, 1:]
        return first | second

    def after_mark(self, completion_ids: torch.Tensor) -> torch.Tensor:
        """True at the tokens of completions [N, T] that follow a mark token (the region choices)."""
        after = torch.zeros_like(completion_ids, dtype=torch.bool)
        after[:, 1:] = completion_ids[:, :-1] == self.mark_token_id
        return after


class BranchExploration(ChoiceExploration):
    """Greedy up to each rollout's first region mark; there the j-th copy of a prompt takes the j-th most
    likely region; after it, the choice points sampled as in `ChoiceExploration`. The rows of a generation
    batch come as blocks of `group_size` copies of one prompt (trl's layout: G rollouts per prompt, in a row);
    call `start(prompt_ids)` before each `generate` (`explore_only_choices` does): it numbers the copies.
    (Copies are told by position, not by content: two sides can share every prompt token and differ only
    in their images.) A side branches among the marks at least `min_p` times as likely as its best mark, or
    `min_p_by_modality[m]` times for a side of modality m; the trainer tells the rows' modalities with
    `plan(modalities)` before a generate (without it, every row takes `min_p`). With `sample_after` False the
    choices after the branch are greedy too: the copies differ in their first mark only, and `choice_mask`
    marks that token alone."""

    def __init__(self, mark_token_id: int, number_token_ids: list[int], *, group_size: int, min_p: float = 0.1,
                 min_p_by_modality: dict[str, float] | None = None, sample_after: bool = True,
                 claims: bool = False):
        if claims and not sample_after:
            raise ValueError("BranchExploration: claims are choices after the branch; they need sample_after")
        super().__init__(mark_token_id, number_token_ids, claims=claims)
        if group_size < 1:
            raise ValueError(f"BranchExploration: group_size must be >= 1, got {group_size}")
        self.group_size = group_size
        self.min_p = min_p
        self.sample_after = sample_after
        self.min_p_by_modality = dict(min_p_by_modality or {})
        self.copy_index = torch.zeros(0, dtype=torch.long)
        self.branched = torch.zeros(0, dtype=torch.bool)
        self.row_min_p = torch.zeros(0)
        self._planned: list[str] | None = None

    def plan(self, modalities: list[str]) -> None:
        """The modality of each row of the next `generate`, in its row order (trl's: G copies per prompt)."""
        self._planned = list(modalities)

    def start(self, prompt_ids: torch.Tensor) -> None:
        rows, g = prompt_ids.shape[0], self.group_size
        if rows % g:
            raise ValueError(f"BranchExploration: a batch of {rows} prompts is not whole groups of {g} copies")
        blocks = prompt_ids.reshape(rows // g, g, -1)
        differing = (blocks != blocks[:, :1]).any(dim=-1).any(dim=-1).nonzero().flatten().tolist()
        if differing:
            first = differing[0] * g
            raise ValueError(f"BranchExploration: rows {first}..{first + g - 1} are not {g} copies of one prompt")
        self.copy_index = torch.arange(rows, device=prompt_ids.device) % g
        self.branched = torch.zeros(rows, dtype=torch.bool, device=prompt_ids.device)
        planned, self._planned = self._planned, None
        if planned is not None and len(planned) != rows:
            raise ValueError(f"BranchExploration: planned {len(planned)} rows' modalities for a batch of {rows}")
        modalities = planned if planned is not None else [None] * rows
        ratios = [self.min_p_by_modality.get(m, self.min_p) for m in modalities]
        self.row_min_p = torch.tensor(ratios, dtype=torch.float32, device=prompt_ids.device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.copy_index.shape[0] != input_ids.shape[0]:
            raise RuntimeError("BranchExploration: call start(prompt_ids) before generating")
        after_mark = input_ids[:, -1] == self.mark_token_id
        branch_now = after_mark & ~self.branched
        after_branch = super().__call__(input_ids, scores) if self.sample_after else _greedy(scores)
        out = torch.where(self.branched[:, None], after_branch, _greedy(scores))
        if branch_now.any():
            probs = scores.softmax(dim=-1)
            threshold = self.row_min_p.to(probs.dtype)[:, None] * probs.max(dim=-1, keepdim=True).values
            plausible = (probs >= threshold).sum(dim=-1).clamp(min=1)
            ranked = scores.argsort(dim=-1, descending=True)
            pick = ranked.gather(1, (self.copy_index % plausible)[:, None])
            forced = torch.full_like(scores, float("-inf")).scatter_(1, pick, 0.0)
            out = torch.where(branch_now[:, None], forced, out)
            self.branched = self.branched | branch_now
        return out

    def choice_mask(self, completion_ids: torch.Tensor) -> torch.Tensor:
        """As `ChoiceExploration.choice_mask`; with `sample_after` False only the token after the first mark
        (the branch, the one choice the copies made)."""
        if self.sample_after:
            return super().choice_mask(completion_ids)
        after_mark = self.after_mark(completion_ids)
        return (after_mark & (after_mark.cumsum(dim=1) == 1)).long()


def _greedy(scores: torch.Tensor) -> torch.Tensor:
    """The scores with every token but the most likely one at -inf (sampling from them is greedy)."""
    best = scores.argmax(dim=-1, keepdim=True)
    return torch.full_like(scores, float("-inf")).scatter_(1, best, scores.gather(1, best))


def advantages_on_choices(batch: dict, choices: ChoiceExploration) -> dict:
    """A trl GRPO batch whose advantages ([N], one per completion) become per-token advantages ([N, T])
    that are zero except at the choice tokens: the policy-gradient term falls on the choices only, while
    the KL to the reference (and the loss's token count) still covers every token, which keeps the greedy
    rest of the trace where the reference has it. (trl's loss takes [N, T] advantages as they are.)"""
    advantages = batch["advantages"]
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    batch["advantages"] = advantages * choices.choice_mask(batch["completion_ids"]).to(advantages.dtype)
    return batch


def choice_exploration(tokenizer, *, claims: bool = False) -> ChoiceExploration:
    """The processor for a tokenizer: its `#` token and every token that is a number (digits only)."""
    mark = tokenizer.convert_tokens_to_ids("#")
    if mark is None or mark == tokenizer.unk_token_id:
        raise ValueError("egrl.exploration=choices: the Reasoner's tokenizer has no '#' token for region marks")
    numbers = [i for token, i in tokenizer.get_vocab().items()
               if tokenizer.convert_tokens_to_string([token]).strip().isdigit()]
    return ChoiceExploration(mark, numbers, claims=claims)


def explore_only_choices(model, tokenizer, *, branch: bool = False, group_size: int = 1,
                         min_p: float = 0.1, min_p_by_modality: dict[str, float] | None = None,
                         sample_after_branch: bool = True, claims: bool = False) -> ChoiceExploration:
    """Make the model's `generate` (as trl calls it) sample only at choice points, or with `branch` branch
    at the first region mark (`BranchExploration`, each prompt in `group_size` consecutive copies); returns
    the processor."""
    processor = choice_exploration(tokenizer, claims=claims)
    if branch:
        processor = BranchExploration(processor.mark_token_id, processor.number_token_ids.tolist(),
                                      group_size=group_size, min_p=min_p, min_p_by_modality=min_p_by_modality,
                                      sample_after=sample_after_branch, claims=claims)
    plain_generate = model.generate

    def generate(*args, **kwargs):
        if isinstance(processor, BranchExploration):
            processor.start(kwargs["input_ids"] if "input_ids" in kwargs else args[0])
        extra = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        extra.append(processor)
        return plain_generate(*args, logits_processor=extra, **kwargs)

    model.generate = generate
    return processor
