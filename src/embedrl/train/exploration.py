"""Where EG-RL's rollouts explore: every token (trl's sampling) or only the trace's choices.

GRPO learns from the reward differences between the G rollouts of one side. Sampling every token at
temperature T explores the choice the reward is about (which region, which key frame) and, with it,
the wording and the tags. A paper-scale Reasoner keeps its format at T = 1; the tiny Reasoner, trained
from scratch in minutes, does not (about half of its rollouts at T = 1 fail the format and earn 0 on
every component), so most of a group's reward spread, and of GRPO's signal, is about the format.

`ChoiceExploration` samples only at the choice points of a grounded Reasoner's trace, and takes the
most likely token everywhere else:
- a region mark: the token after `#` (`#3`: which region the trace points at);
- a number: a position whose most likely token is a number (a key frame, a count).
The G rollouts of a side then differ in their choices only, so their reward spread is the choices'
effect, and the tokens the rollouts share (same token after the same prefix) get advantages that sum
to zero over the group: their gradients cancel, and the update falls on the choices. The sampled
distribution at a choice point is the policy's own (trl's temperature and min_p apply there).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList

EXPLORATION_MODES = ("all", "choices")


class ChoiceExploration(LogitsProcessor):
    """Greedy except at choice points (after the mark token, or where a number is most likely)."""

    def __init__(self, mark_token_id: int, number_token_ids: list[int]):
        self.mark_token_id = mark_token_id
        self.number_token_ids = torch.tensor(sorted(set(number_token_ids)), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best = scores.argmax(dim=-1)
        choice = (input_ids[:, -1] == self.mark_token_id) | torch.isin(best, self.number_token_ids.to(best.device))
        greedy = torch.full_like(scores, float("-inf"))
        greedy.scatter_(1, best[:, None], scores.gather(1, best[:, None]))
        return torch.where(choice[:, None], scores, greedy)


def choice_exploration(tokenizer) -> ChoiceExploration:
    """The processor for a tokenizer: its `#` token and every token that is a number (digits only)."""
    mark = tokenizer.convert_tokens_to_ids("#")
    if mark is None or mark == tokenizer.unk_token_id:
        raise ValueError("egrl.exploration=choices: the Reasoner's tokenizer has no '#' token for region marks")
    numbers = [i for token, i in tokenizer.get_vocab().items()
               if tokenizer.convert_tokens_to_string([token]).strip().isdigit()]
    return ChoiceExploration(mark, numbers)


def explore_only_choices(model, tokenizer) -> None:
    """Make the model's `generate` (as trl calls it) sample only at choice points."""
    processor = choice_exploration(tokenizer)
    plain_generate = model.generate

    def generate(*args, **kwargs):
        extra = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        extra.append(processor)
        return plain_generate(*args, logits_processor=extra, **kwargs)

    model.generate = generate
