"""EG-RL exploration at the trace's choice points only (embedrl.train.exploration)."""

from __future__ import annotations

import math

import pytest
import torch

from embedrl.train.exploration import ChoiceExploration, choice_exploration, explore_only_choices

MARK, DIGIT, WORD = 5, 7, 3


def _scores(*rows):
    return torch.tensor(rows, dtype=torch.float)


def test_only_choice_points_keep_their_distribution():
    processor = ChoiceExploration(MARK, [DIGIT, DIGIT + 1])
    previous = torch.tensor([[1, MARK], [1, WORD], [1, WORD]])  # after '#', after a word, after a word
    scores = _scores([0.1, 0.3, 0.2, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0],  # a mark: sampled as is
                     [0.1, 0.3, 0.2, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0],  # a number is most likely: sampled as is
                     [0.1, 0.3, 0.2, 3.0, 0.0, 0.0, 0.0, 2.0, 1.0])  # a word is most likely: greedy
    out = processor(previous, scores.clone())
    assert torch.equal(out[0], scores[0]) and torch.equal(out[1], scores[1])
    assert out[2, WORD] == 3.0
    assert all(math.isinf(v) and v < 0 for i, v in enumerate(out[2].tolist()) if i != WORD)


def test_choice_exploration_of_the_project_tokenizer_finds_the_mark_and_the_digits():
    from embedrl.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    processor = choice_exploration(tokenizer)
    assert tokenizer.convert_ids_to_tokens(processor.mark_token_id) == "#"
    decoded = {tokenizer.decode([int(i)]).strip() for i in processor.number_token_ids}
    assert set("0123456789") <= decoded and all(d.isdigit() for d in decoded)


def test_exploration_mode_is_validated():
    from embedrl.train.egrl import EGRLStageConfig

    with pytest.raises(ValueError, match="exploration"):
        EGRLStageConfig(output_dir="unused", exploration="everything", use_cpu=True)


def test_branch_min_p_sets_which_marks_the_branches_take():
    """egrl.branch_min_p decides the branches' threshold (unset: min_p, the sampling filter); at 0.001 the
    copies of a side also take the marks the policy deems unlikely, which min_p = 0.1 leaves out."""
    from embedrl.train.egrl import EGRLStageConfig
    from embedrl.train.exploration import BranchExploration

    def config(**kwargs):
        return EGRLStageConfig(output_dir="unused", exploration="branch", use_cpu=True, **kwargs)

    assert config(min_p=0.1).branch_threshold() == 0.1
    assert config(min_p=0.1, branch_min_p=0.001).branch_threshold() == 0.001
    assert config().branch_threshold() == 0.1
    with pytest.raises(ValueError, match="branch_min_p"):
        config(branch_min_p=1.5)
    scores = _scores([-5.0, -5.0, -5.0, -5.0, -5.0, -5.0, -5.0, 2.0, 1.0, -2.0]).repeat(4, 1)  # p: .72 .26 .02
    picks = {}
    for threshold in (0.1, 0.001):
        processor = BranchExploration(MARK, [DIGIT, DIGIT + 1, DIGIT + 2], group_size=4, min_p=threshold)
        processor.start(torch.tensor([[1, 2]] * 4))
        picks[threshold] = [int(row.argmax()) for row in processor(torch.tensor([[WORD, MARK]] * 4), scores.clone())]
    assert picks[0.1] == [DIGIT, DIGIT + 1, DIGIT, DIGIT + 1]
    assert picks[0.001] == [DIGIT, DIGIT + 1, DIGIT + 2, DIGIT]


def test_branch_modalities_give_each_side_its_modality_threshold():
    """egrl.branch_modalities: the listed modalities' sides branch at branch_min_p, the others at min_p; the
    trainer plans each row's modality before a generate, and the rows of one generate take their own."""
    from embedrl.train.egrl import EGRLStageConfig
    from embedrl.train.exploration import BranchExploration

    config = EGRLStageConfig(output_dir="unused", exploration="branch", use_cpu=True, min_p=0.1,
                             branch_min_p=0.001, branch_modalities=["image"])
    assert [config.branch_threshold(m) for m in ("text", "image", "video")] == [0.1, 0.001, 0.1]
    assert config.branch_threshold() == 0.1
    assert EGRLStageConfig(output_dir="unused", use_cpu=True, min_p=0.1,
                           branch_min_p=0.001).branch_threshold("video") == 0.001  # unset: every modality
    with pytest.raises(ValueError, match="branch_modalities.*'audio'"):
        EGRLStageConfig(output_dir="unused", use_cpu=True, branch_min_p=0.001, branch_modalities=["audio"])

    processor = BranchExploration(MARK, [DIGIT, DIGIT + 1, DIGIT + 2], group_size=4, min_p=0.1,
                                  min_p_by_modality={m: config.branch_threshold(m) for m in ("image", "video")})
    processor.plan(["video"] * 4 + ["image"] * 4)
    processor.start(torch.tensor([[1, 2]] * 8))
    scores = _scores([-5.0, -5.0, -5.0, -5.0, -5.0, -5.0, -5.0, 2.0, 1.0, -2.0]).repeat(8, 1)  # p: .72 .26 .02
    picks = [int(row.argmax()) for row in processor(torch.tensor([[WORD, MARK]] * 8), scores)]
    assert picks == [DIGIT, DIGIT + 1, DIGIT, DIGIT + 1] + [DIGIT, DIGIT + 1, DIGIT + 2, DIGIT]
    processor.start(torch.tensor([[1, 2]] * 4))  # a plan serves one generate: unplanned rows take min_p
    assert processor.row_min_p.tolist() == pytest.approx([0.1] * 4)
    processor.plan(["image"] * 4)
    with pytest.raises(ValueError, match="4 rows' modalities for a batch of 8"):
        processor.start(torch.tensor([[1, 2]] * 8))


def test_sampled_rollouts_of_one_prompt_first_differ_at_a_choice_point(prepared_small, sft_reasoner):
    """With choice exploration the rollouts of one prompt are the greedy trace except where they choose:
    two rollouts agree token for token up to a region mark or a number, and differ first there."""
    from embedrl.data.sides import MediaStore
    from embedrl.models.reasoner import Reasoner
    from embedrl.train.embedder import load_pairs

    reasoner = Reasoner.load(sft_reasoner.out_dir / "model", max_new_tokens=96)
    tokenizer = reasoner.processor.tokenizer
    tokenizer.padding_side = "left"
    explore_only_choices(reasoner.model, tokenizer)
    processor = choice_exploration(tokenizer)
    store = MediaStore(prepared_small)
    sides = [p.positive for p in load_pairs(prepared_small)["T2I-Marked"][:4]]
    torch.manual_seed(0)
    compared = differing = 0
    for ref in sides:
        text, images = reasoner.chat_input(ref, "target", store)
        batch = reasoner.processor(text=[text] * 6, images=images * 6, return_tensors="pt", padding=True)
        out = reasoner.model.generate(**batch, max_new_tokens=96, do_sample=True, temperature=2.0, top_p=None,
                                      top_k=None, pad_token_id=tokenizer.pad_token_id)
        prompt_len = batch["input_ids"].shape[1]
        for other in out[1:]:
            compared += 1
            diff = (out[0] != other).nonzero()
            if len(diff) == 0:
                continue
            differing += 1
            at = int(diff[0])
            assert at >= prompt_len
            assert _is_choice_point(reasoner, processor, text, images, out[0][prompt_len:at]), (
                f"rollouts diverge at a non-choice token: {tokenizer.decode(out[0][prompt_len:at + 1])!r}")
    assert compared == 20 and differing > 0  # at temperature 2 some rollouts choose differently


def _is_choice_point(reasoner, processor, text, images, completion_prefix) -> bool:
    """After the mark token, or where the model's most likely next token is a number."""
    if len(completion_prefix) and int(completion_prefix[-1]) == processor.mark_token_id:
        return True
    batch = reasoner.processor(text=[text], images=images, return_tensors="pt")
    batch["input_ids"] = torch.cat([batch["input_ids"], completion_prefix[None]], dim=1)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    if "mm_token_type_ids" in batch:
        batch["mm_token_type_ids"] = torch.cat(
            [batch["mm_token_type_ids"], torch.zeros_like(completion_prefix)[None]], dim=1)
    with torch.no_grad():
        best = int(reasoner.model(**batch).logits[0, -1].argmax())
    return best in set(processor.number_token_ids.tolist())


def test_choice_mask_marks_the_token_after_a_mark_and_every_number():
    processor = ChoiceExploration(MARK, [DIGIT, DIGIT + 1])
    completions = torch.tensor([[WORD, MARK, DIGIT, WORD, MARK, WORD, DIGIT + 1, 0],
                                [MARK, MARK, WORD, WORD, WORD, WORD, WORD, WORD]])
    assert processor.choice_mask(completions).tolist() == [[0, 0, 1, 0, 0, 1, 1, 0],
                                                           [0, 1, 1, 0, 0, 0, 0, 0]]


def test_the_policy_gradient_falls_on_the_choices_and_the_kl_on_every_token():
    """Per-token advantages: each completion's advantage at its choice tokens, 0 elsewhere; the completion
    mask (KL and the loss's token count) is left as it is."""
    from embedrl.train.exploration import advantages_on_choices

    processor = ChoiceExploration(MARK, [DIGIT])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    batch = {"completion_ids": torch.tensor([[MARK, DIGIT, WORD, DIGIT], [WORD, MARK, WORD, 0]]),
             "completion_mask": mask.clone(), "advantages": torch.tensor([0.5, -2.0])}
    out = advantages_on_choices(batch, processor)
    assert out["advantages"].tolist() == [[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, -2.0, 0.0]]
    assert torch.equal(out["completion_mask"], mask) and "tool_mask" not in out


def test_branch_rollouts_take_the_ranked_alternatives_at_the_first_mark_only():
    """Copies of one prompt are greedy up to their first mark (a number before it too), take the 1st, 2nd,
    ... most likely plausible region there (in turn when fewer are plausible), and sample choices after."""
    from embedrl.train.exploration import BranchExploration

    processor = BranchExploration(MARK, [DIGIT, DIGIT + 1, DIGIT + 2], group_size=4, min_p=0.1)
    processor.start(torch.tensor([[1, 2]] * 4))  # four copies of one prompt
    assert processor.copy_index.tolist() == [0, 1, 2, 3]
    number_first = _scores([-5.0, -5.0, -5.0, -5.0, -5.0, -5.0, -5.0, 2.0, 1.0, -9.0])
    out = processor(torch.tensor([[2, WORD]] * 4), number_first.repeat(4, 1).clone())
    assert all(int(row.argmax()) == DIGIT and torch.isinf(row).sum() == 9 for row in out)  # a count: greedy
    # At the first mark: ranks 0, 1 -> DIGIT, DIGIT + 1, then in turn again (DIGIT + 2 is implausible).
    at_mark = number_first.repeat(4, 1)
    out = processor(torch.tensor([[WORD, MARK]] * 4), at_mark.clone())
    picks = [int(row.argmax()) for row in out]
    assert picks == [DIGIT, DIGIT + 1, DIGIT, DIGIT + 1]
    assert all(torch.isinf(row).sum() == 9 for row in out)  # forced: one token left
    # After the branch a later choice point keeps its distribution; other tokens stay greedy.
    out = processor(torch.tensor([[DIGIT, MARK]] * 4), at_mark.clone())
    assert torch.equal(out, at_mark)
    word_first = _scores([-5.0, -5.0, -5.0, 3.0, -5.0, -5.0, -5.0, 2.0, 1.0, -5.0]).repeat(4, 1)
    out = processor(torch.tensor([[MARK, DIGIT]] * 4), word_first.clone())
    assert all(int(row.argmax()) == WORD and torch.isinf(row).sum() == 9 for row in out)


def test_branch_then_greedy_explores_and_credits_the_first_mark_only():
    """sample_after=False (egrl.sample_after_branch): after the branch every token is greedy, a later choice
    point too, and the policy gradient's mask holds the first mark's region token alone."""
    from embedrl.train.exploration import BranchExploration

    processor = BranchExploration(MARK, [DIGIT, DIGIT + 1, DIGIT + 2], group_size=2, min_p=0.1, sample_after=False)
    processor.start(torch.tensor([[1, 2]] * 2))
    at_mark = _scores([-5.0, -5.0, -5.0, -5.0, -5.0, -5.0, -5.0, 2.0, 1.0, -9.0]).repeat(2, 1)
    picks = [int(row.argmax()) for row in processor(torch.tensor([[WORD, MARK]] * 2), at_mark.clone())]
    assert picks == [DIGIT, DIGIT + 1]
    out = processor(torch.tensor([[DIGIT, MARK]] * 2), at_mark.clone())  # a later mark: greedy now
    assert all(int(row.argmax()) == DIGIT and torch.isinf(row).sum() == 9 for row in out)
    completions = torch.tensor([[WORD, MARK, DIGIT + 1, WORD, DIGIT, MARK, DIGIT],
                                [DIGIT, WORD, WORD, MARK, DIGIT, WORD, WORD]])
    assert processor.choice_mask(completions).tolist() == [[0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0]]
    sampled = BranchExploration(MARK, [DIGIT, DIGIT + 1, DIGIT + 2], group_size=2)  # default: numbers too
    assert sampled.choice_mask(completions).tolist() == [[0, 0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 1, 0, 0]]


def test_branch_copies_are_numbered_by_position_not_by_prompt_text():
    """Two sides can share every prompt token and differ only in their images: each block of G rows is one
    side's copies, numbered 0..G-1 (numbering by content gave the second side ranks G..2G-1, and greedy
    first marks of distinct sides with equal prompts took the 2nd, 3rd... most likely region)."""
    from embedrl.train.exploration import BranchExploration

    processor = BranchExploration(MARK, [DIGIT, DIGIT + 1], group_size=2)
    processor.start(torch.tensor([[1, 2]] * 4))  # sides A and B: same prompt tokens, other images
    assert processor.copy_index.tolist() == [0, 1, 0, 1]
    greedy = BranchExploration(MARK, [DIGIT, DIGIT + 1], group_size=1)
    greedy.start(torch.tensor([[1, 2]] * 3))
    out = greedy(torch.tensor([[WORD, MARK]] * 3), _scores([-5.0] * 7 + [2.0, 1.0]).repeat(3, 1))
    assert [int(row.argmax()) for row in out] == [DIGIT] * 3
    with pytest.raises(ValueError, match="whole groups"):
        processor.start(torch.tensor([[1, 2]] * 3))
    with pytest.raises(ValueError, match="rows 2..3"):
        processor.start(torch.tensor([[1, 2], [1, 2], [1, 2], [4, 4]]))


def test_branch_exploration_refuses_to_run_without_numbered_copies():
    from embedrl.train.exploration import BranchExploration

    processor = BranchExploration(MARK, [DIGIT], group_size=1)
    with pytest.raises(RuntimeError, match="start"):
        processor(torch.tensor([[1, MARK]]), _scores([0.0] * 9))



def test_claim_choices_sample_and_credit_the_token_after_a_region_mark():
    """egrl.claim_choices: what the trace says of a region (`#3 flashes` / `#3 moves`) is a choice point too,
    after a one- or two-digit mark; not after a back-reference (`#=`), and not without the option."""
    claims = ChoiceExploration(MARK, [DIGIT, DIGIT + 1], claims=True)
    word_first = _scores([0.1, 0.3, 0.2, 3.0, 0.0, 0.0, 0.0, 2.0, 1.0])
    previous = torch.tensor([[WORD, MARK, DIGIT], [MARK, DIGIT, DIGIT + 1], [WORD, MARK, WORD], [MARK, DIGIT, WORD]])
    out = claims(previous, word_first.repeat(4, 1))
    assert torch.equal(out[0], word_first[0]) and torch.equal(out[1], word_first[0])  # a claim: sampled as is
    assert all(torch.isinf(row).sum() == 8 for row in out[2:])  # after '#=' and after the claim: greedy
    plain = ChoiceExploration(MARK, [DIGIT, DIGIT + 1])
    assert torch.isinf(plain(previous[:1], word_first.clone())).sum() == 8
    completions = torch.tensor([[MARK, DIGIT, WORD, WORD, DIGIT, WORD],
                                [MARK, DIGIT, DIGIT + 1, WORD, WORD, WORD],
                                [WORD, MARK, WORD, WORD, WORD, WORD]])
    assert claims.choice_mask(completions).tolist() == [[0, 1, 1, 0, 1, 0], [0, 1, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]]
    assert plain.choice_mask(completions).tolist() == [[0, 1, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0]]


def test_claim_choices_come_after_the_branch_and_need_its_sampling():
    from embedrl.train.egrl import EGRLStageConfig
    from embedrl.train.exploration import BranchExploration

    processor = BranchExploration(MARK, [DIGIT, DIGIT + 1], group_size=2, claims=True)
    processor.start(torch.tensor([[1, 2]] * 2))
    at_mark = _scores([-5.0, -5.0, -5.0, -5.0, -5.0, -5.0, -5.0, 2.0, 1.0]).repeat(2, 1)
    assert [int(row.argmax()) for row in processor(torch.tensor([[WORD, MARK]] * 2), at_mark)] == [DIGIT, DIGIT + 1]
    word_first = _scores([0.1, 0.3, 0.2, 3.0, 0.0, 0.0, 0.0, 2.0, 1.0]).repeat(2, 1)
    out = processor(torch.tensor([[MARK, DIGIT], [MARK, DIGIT + 1]]), word_first.clone())
    assert torch.equal(out, word_first)  # the branched region's claim: sampled
    with pytest.raises(ValueError, match="sample_after"):
        BranchExploration(MARK, [DIGIT], group_size=2, claims=True, sample_after=False)
    with pytest.raises(ValueError, match="claim_choices"):
        EGRLStageConfig(output_dir="unused", exploration="branch", sample_after_branch=False, claim_choices=True,
                        use_cpu=True)
    with pytest.raises(ValueError, match="claim_choices"):
        EGRLStageConfig(output_dir="unused", exploration="all", claim_choices=True, use_cpu=True)
