"""EG-RL rewards: outcome (against a plain-loop reference), format, process with judges, and the weighted sum."""

from __future__ import annotations

import json
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embedrl.train import rewards
from embedrl.train.rewards import (
    JUDGES,
    ChatJudge,
    Judge,
    LexicalJudge,
    UnknownJudgeError,
    combine_rewards,
    format_reward_fn,
    make_judge,
    outcome_details,
    outcome_rewards,
    parse_choice,
    process_rewards,
    register_judge,
)

IMAGE_TCOT = (
    "<thinking>The question asks what lies on the table. A red cup sits at the left of the table. "
    '{"bbox_2d": [[100, 200, 300, 400]]}</thinking>'
    "<rethink>The box covers the cup and nothing else on the table.</rethink>"
    "<answer>a red cup</answer>"
)
VIDEO_TCOT = (
    '<thinking>The ball rolls to the right over the clip. {"key_frames": [1, 3]}</thinking>'
    "<rethink>Frames 1 and 3 show the start and end of the motion.</rethink>"
    "<answer>a ball rolling right</answer>"
)


def tcot(answer: str, keywords: tuple[str, ...] = ("shape",)) -> str:
    cue = json.dumps({"text_keywords": list(keywords)})
    return (
        f"<thinking>I look at the scene. {cue}</thinking><rethink>It fits.</rethink><answer>{answer}</answer>"
    )


# ============================================================================= outcome: reference
def reference_side(anchors: np.ndarray, others: np.ndarray, tau: float):
    """Outcome parts with explicit loops, read straight off method.md."""
    batch, group, _ = anchors.shape
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    out = {name: np.zeros((batch, group)) for name in ("acc", "s_pos", "s_neg", "reward")}
    for i in range(batch):
        for e in range(group):
            anchor = unit(anchors[i, e])
            positives = [float(anchor @ unit(others[i, h])) for h in range(group)]
            negatives = [
                float(anchor @ unit(others[j, h])) for j in range(batch) if j != i for h in range(group)
            ]
            s_pos = sum(positives) / len(positives)
            top = max(negatives)
            weights = [math.exp((c - top) / tau) for c in negatives]
            s_neg = sum(w * c for w, c in zip(weights, negatives, strict=True)) / sum(weights)
            # Rank everything; on equal cosine a negative goes first (ties count against the rollout).
            pool = [(c, 0) for c in negatives] + [(c, 1) for c in positives]
            ranked = sorted(pool, key=lambda item: (-item[0], item[1]))
            acc = sum(is_positive for _, is_positive in ranked[:group]) / group
            out["acc"][i, e], out["s_pos"][i, e], out["s_neg"][i, e] = acc, s_pos, s_neg
            out["reward"][i, e] = acc * (s_pos - s_neg)
    return out


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(2, 5),
    group=st.integers(1, 4),
    dim=st.integers(1, 6),
    tau=st.sampled_from([0.05, 0.5, 2.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_outcome_matches_the_loop_reference(batch, group, dim, tau, seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(batch, group, dim))
    t = rng.normal(size=(batch, group, dim))
    q_details, t_details = outcome_details(q, t, tau=tau)
    for details, (anchors, others) in ((q_details, (q, t)), (t_details, (t, q))):
        expected = reference_side(anchors, others, tau)
        for name in ("acc", "s_pos", "s_neg", "reward"):
            np.testing.assert_allclose(getattr(details, name), expected[name], atol=1e-12, err_msg=name)
        np.testing.assert_allclose(details.margin, details.s_pos - details.s_neg, atol=1e-15)
    q_rewards, t_rewards = outcome_rewards(q, t, tau=tau)
    np.testing.assert_array_equal(q_rewards, q_details.reward)
    np.testing.assert_array_equal(t_rewards, t_details.reward)


def test_outcome_by_hand_weights_negatives_by_softmax():
    # B=3, G=1, D=2: query 0 is [1, 0]; its target [1, 0]; the others' targets [0, 1] (cos 0), [-1, 0] (cos -1).
    q = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]])
    t = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]])
    query, _ = outcome_details(q, t, tau=0.5)
    w_far = math.exp(-2) / (1 + math.exp(-2))  # softmax([0, -1] / 0.5)
    assert query.s_pos[0, 0] == pytest.approx(1.0)
    assert query.s_neg[0, 0] == pytest.approx(-w_far)
    assert query.acc[0, 0] == 1.0
    assert query.reward[0, 0] == pytest.approx(1.0 + w_far)
    # Plain mean over negatives would give -0.5: the softmax leans toward the hardest negative.
    assert query.s_neg[0, 0] != pytest.approx(-0.5)


def test_ties_count_against_the_rollout():
    # Query 0 is [1, 0]. Its targets: [1, 0] (cos 1), [0, 1] (cos 0). Pair 1's targets both cos 1.
    q = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    t = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    query, _ = outcome_details(q, t)
    assert query.acc[0, 0] == 0.0  # top-2 of {1 (pos), 0 (pos), 1 (neg), 1 (neg)}: the negatives win the tie


def test_collapsed_embedder_earns_nothing():
    q = np.ones((3, 4, 8))
    query_rewards, target_rewards = outcome_rewards(q, 5.0 * q)
    details, _ = outcome_details(q, q)
    assert (details.acc == 0).all()
    assert (query_rewards == 0).all() and (target_rewards == 0).all()
    assert not np.signbit(query_rewards).any()  # 0.0, not -0.0


def test_perfect_separation_gives_full_accuracy_and_positive_reward():
    batch, group, dim = 4, 3, 6
    rng = np.random.default_rng(0)
    directions = np.eye(dim)[:batch]  # one orthogonal direction per pair
    q = directions[:, None, :] + 0.05 * rng.normal(size=(batch, group, dim))
    t = directions[:, None, :] + 0.05 * rng.normal(size=(batch, group, dim))
    for details in outcome_details(q, t):
        assert (details.acc == 1.0).all()
        assert (details.reward > 0.8).all()
    exact, _ = outcome_rewards(
        np.repeat(directions[:, None, :], group, 1), np.repeat(directions[:, None, :], group, 1)
    )
    np.testing.assert_allclose(exact, 1.0)  # s_pos = 1, s_neg = 0, acc = 1


def test_outcome_is_invariant_to_scaling_each_vector():
    rng = np.random.default_rng(1)
    q, t = rng.normal(size=(2, 3, 2, 5))
    scale_q = rng.uniform(0.01, 100.0, size=(3, 2, 1))
    scale_t = rng.uniform(0.01, 100.0, size=(3, 2, 1))
    for got, want in zip(outcome_rewards(q * scale_q, t * scale_t), outcome_rewards(q, t), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_swapping_roles_swaps_the_rewards():
    rng = np.random.default_rng(2)
    q, t = rng.normal(size=(2, 3, 4, 7))
    q_rewards, t_rewards = outcome_rewards(q, t)
    swapped_q, swapped_t = outcome_rewards(t, q)
    np.testing.assert_array_equal(swapped_q, t_rewards)
    np.testing.assert_array_equal(swapped_t, q_rewards)
    assert not np.allclose(q_rewards, t_rewards)  # the two sides are really scored apart


def test_torch_and_numpy_agree_and_keep_their_kind():
    rng = np.random.default_rng(3)
    q, t = rng.normal(size=(2, 4, 3, 16))
    numpy_q, numpy_t = outcome_rewards(q, t)
    assert isinstance(numpy_q, np.ndarray) and numpy_q.dtype == np.float64 and numpy_q.shape == (4, 3)
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        torch_q, torch_t = outcome_rewards(torch.tensor(q, dtype=dtype), torch.tensor(t, dtype=dtype))
        assert isinstance(torch_q, torch.Tensor) and torch_q.dtype == dtype and not torch_q.requires_grad
        np.testing.assert_allclose(torch_q.numpy(), numpy_q, atol=atol)
        np.testing.assert_allclose(torch_t.numpy(), numpy_t, atol=atol)
    half_q, _ = outcome_rewards(torch.tensor(q, dtype=torch.bfloat16), torch.tensor(t, dtype=torch.bfloat16))
    assert half_q.dtype == torch.float32
    grad_q = torch.tensor(q, requires_grad=True)
    assert not outcome_rewards(grad_q, torch.tensor(t))[0].requires_grad


def test_softmax_weighting_lies_between_mean_and_max_of_negatives():
    rng = np.random.default_rng(4)
    q, t = rng.normal(size=(2, 5, 2, 4))
    query, _ = outcome_details(q, t, tau=0.5)
    reference = reference_side(q, t, 0.5)
    np.testing.assert_allclose(query.s_neg, reference["s_neg"], atol=1e-12)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    cos = np.einsum("bgd,chd->bgch", unit(q), unit(t))
    for i in range(5):
        negatives = np.delete(cos[i], i, axis=1).reshape(2, -1)
        assert (query.s_neg[i] >= negatives.mean(axis=1) - 1e-12).all()
        assert (query.s_neg[i] <= negatives.max(axis=1) + 1e-12).all()


@pytest.mark.parametrize(
    ("q_shape", "t_shape", "tau", "message"),
    [
        ((1, 4, 8), (1, 4, 8), 0.5, "at least 2 pairs"),
        ((2, 4, 8), (2, 3, 8), 0.5, "same"),
        ((2, 8), (2, 8), 0.5, r"\[B, G, D\]"),
        ((2, 4, 8), (2, 4, 8), 0.0, "tau"),
    ],
)
def test_outcome_rejects_bad_inputs(q_shape, t_shape, tau, message):
    with pytest.raises(ValueError, match=message):
        outcome_rewards(np.ones(q_shape), np.ones(t_shape), tau=tau)


def test_outcome_rejects_nan_and_mixed_kinds():
    q = np.ones((2, 2, 3))
    bad = q.copy()
    bad[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        outcome_rewards(q, bad)
    with pytest.raises(TypeError, match="same kind"):
        outcome_rewards(q, torch.ones(2, 2, 3))


# ====================================================================================== format
def test_format_reward_fn_reads_strings_messages_and_columns():
    completions = [
        IMAGE_TCOT,
        [{"role": "assistant", "content": IMAGE_TCOT}],
        [{"role": "assistant", "content": [{"type": "text", "text": IMAGE_TCOT}]}],
        "<answer>only an answer</answer>",
        [{"role": "assistant", "content": VIDEO_TCOT}],
        VIDEO_TCOT,
        VIDEO_TCOT,
    ]
    modality = ["image", "image", "image", "image", "video", "video", "video"]
    num_frames = [None, None, None, None, 8, 2, np.int64(3)]  # frame 3 is outside 2 sampled frames
    got = format_reward_fn([""] * 7, completions, modality=modality, num_frames=num_frames)
    assert got == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]


def test_format_reward_fn_checks_the_cue_fits_the_modality():
    # An image T-CoT has a bbox cue, not the key_frames a video needs; a scalar modality applies to all.
    assert format_reward_fn(None, [IMAGE_TCOT, VIDEO_TCOT], modality="video", num_frames=8) == [0.0, 1.0]
    assert format_reward_fn(None, [VIDEO_TCOT], modality=["video"], num_frames=[float("nan")]) == [0.0]
    assert format_reward_fn(None, [VIDEO_TCOT], modality=["video"], num_frames=[8.0]) == [1.0]


def test_format_reward_fn_rejects_a_column_of_the_wrong_length():
    with pytest.raises(ValueError, match="modality has 1 entries for 2 completions"):
        format_reward_fn(None, [IMAGE_TCOT, IMAGE_TCOT], modality=["image"])


# ============================================================================ process: judges
class OracleJudge:
    """Knows the answer: T-CoTs are 'q{pair}.{rollout}' / 't{pair}.{rollout}'; picks the anchor's pair."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def choose(self, anchor: str, candidates: list[str]) -> int | None:
        with self.lock:
            self.calls.append((anchor, list(candidates)))
        pair = anchor[1:].split(".")[0]
        matches = [i for i, c in enumerate(candidates) if c[1:].split(".")[0] == pair]
        return matches[0] if len(matches) == 1 else None


class FirstJudge:
    def choose(self, anchor: str, candidates: list[str]) -> int | None:
        return 0


def tagged(batch: int, group: int) -> tuple[list[list[str]], list[list[str]]]:
    return (
        [[f"q{i}.{e}" for e in range(group)] for i in range(batch)],
        [[f"t{i}.{e}" for e in range(group)] for i in range(batch)],
    )


def test_process_candidates_hold_one_positive_and_m_minus_1_negatives():
    judge = OracleJudge()
    queries, targets = tagged(5, 3)
    query_rewards, target_rewards = process_rewards(
        queries, targets, judge, m=4, rng=np.random.default_rng(0)
    )
    assert query_rewards.shape == target_rewards.shape == (5, 3)
    assert (query_rewards == 1.0).all() and (target_rewards == 1.0).all()
    assert len(judge.calls) == 2 * 5 * 3
    anchors = [anchor for anchor, _ in judge.calls]
    assert sorted(anchors) == sorted(sum(queries, []) + sum(targets, []))
    for anchor, candidates in judge.calls:
        assert len(candidates) == 4 and len(set(candidates)) == 4
        other_side = "t" if anchor[0] == "q" else "q"
        assert all(c[0] == other_side for c in candidates)
        pair = anchor[1:].split(".")[0]
        assert sum(c[1:].split(".")[0] == pair for c in candidates) == 1


def test_process_shuffles_the_positive_and_is_seeded():
    queries, targets = tagged(6, 4)
    first = process_rewards(queries, targets, FirstJudge(), m=4, rng=np.random.default_rng(7))
    again = process_rewards(queries, targets, FirstJudge(), m=4, rng=np.random.default_rng(7))
    other = process_rewards(queries, targets, FirstJudge(), m=4, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    rate = np.concatenate([first[0].ravel(), first[1].ravel()]).mean()
    assert 0.05 < rate < 0.6  # a blind judge is right about 1 time in m = 4


def test_process_uses_every_negative_when_there_are_fewer_than_m_minus_1():
    judge = OracleJudge()
    queries, targets = tagged(2, 1)
    process_rewards(queries, targets, judge, m=4, rng=np.random.default_rng(0))
    assert all(len(candidates) == 2 for _, candidates in judge.calls)


def test_process_threads_give_the_same_result():
    queries, targets = tagged(4, 3)
    serial = process_rewards(queries, targets, FirstJudge(), rng=np.random.default_rng(3))
    threaded = process_rewards(queries, targets, FirstJudge(), rng=np.random.default_rng(3), max_workers=4)
    np.testing.assert_array_equal(serial[0], threaded[0])
    np.testing.assert_array_equal(serial[1], threaded[1])


def test_process_judge_failures_score_zero_and_are_counted(caplog):
    class FlakyJudge(OracleJudge):
        def choose(self, anchor, candidates):
            if anchor.endswith(".0"):
                raise RuntimeError("endpoint down")
            if anchor.startswith("t1"):
                return None
            if anchor.startswith("t2"):
                return 99
            return super().choose(anchor, candidates)

    queries, targets = tagged(3, 2)
    with caplog.at_level(logging.WARNING, logger="embedrl.train.rewards"):
        query_rewards, target_rewards = process_rewards(
            queries, targets, FlakyJudge(), m=3, rng=np.random.default_rng(0)
        )
    assert query_rewards.tolist() == [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    assert target_rewards.tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert "failed on 6 of 12 trials" in caplog.text and "endpoint down" in caplog.text


@pytest.mark.parametrize(
    ("queries", "targets", "m", "message"),
    [
        ([["a", "b"]], [["c", "d"]], 4, "at least 2 pairs"),
        ([["a"], ["b"]], [["c"]], 4, "2 pairs but"),
        ([["a"], ["b", "c"]], [["d"], ["e"]], 4, r"query_tcots\[1\]"),
        (["ab", "cd"], [["e", "f"], ["g", "h"]], 4, "list of"),
        ([["a"], ["b"]], [["c"], ["d"]], 1, "m"),
    ],
)
def test_process_rejects_bad_inputs(queries, targets, m, message):
    with pytest.raises(ValueError, match=message):
        process_rewards(queries, targets, FirstJudge(), m=m, rng=np.random.default_rng(0))


def test_lexical_judge_compares_answers_and_keywords():
    judge = LexicalJudge()
    assert isinstance(judge, Judge)
    anchor = tcot("small red star", ("star",))
    candidates = [tcot("large blue circle", ("circle",)), tcot("small red star"), tcot("small crimson star")]
    assert judge.choose(anchor, candidates) == 1
    # keywords break what the answers leave even
    keyed = [tcot("a red shape", ("star", "dot")), tcot("a red shape", ("circle",))]
    assert judge.choose(tcot("the red shape", ("dot",)), keyed) == 0


def test_lexical_judge_is_undecided_on_ties_and_no_overlap():
    judge = LexicalJudge()
    assert judge.choose(tcot("red star"), [tcot("red star"), tcot("red star")]) is None
    assert judge.choose(tcot("red star"), [tcot("blue circle"), tcot("green ring")]) is None
    assert (
        judge.choose(tcot("the red star"), [tcot("the blue ring"), tcot("a green circle")]) is None
    )  # stopwords


def test_lexical_judge_survives_unparseable_tcots():
    judge = LexicalJudge()
    broken_answer = "<thinking>no cue<answer>small red star"
    assert judge.choose(broken_answer, ["<answer>large blue ring</answer>", "small red star!!"]) == 1
    assert judge.choose("", ["", "x"]) is None
    assert judge.choose("<thinking></thinking>", ["<rethink>", "</answer>"]) is None


def test_process_rewards_with_the_lexical_judge_on_distinct_answers():
    words = ["red star", "blue circle", "green ring", "amber cross"]
    queries = [[tcot(f"small {w}")] * 2 for w in words]
    targets = [[tcot(f"a {w} with a dot")] * 2 for w in words]
    query_rewards, target_rewards = process_rewards(
        queries, targets, LexicalJudge(), rng=np.random.default_rng(0)
    )
    assert (query_rewards == 1.0).all() and (target_rewards == 1.0).all()


# --------------------------------------------------------------------------------------- chat judge
class ScriptedTeacher:
    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.messages: list[list[dict]] = []

    def chat(self, messages):
        self.messages.append(messages)
        return self.replies.pop(0)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("2", 1),
        (" **3** ", 2),
        ("Candidate 1.", 0),
        ("[4]", 3),
        ("The positive is 2 since it names the cup.", 1),
        ("5", None),
        ("0", None),
        ("1 or 2", None),
        ("none of them", None),
        ("", None),
    ],
)
def test_parse_choice(reply, expected):
    assert parse_choice(reply, 4) == expected


def test_chat_judge_numbers_the_candidates_and_reads_the_reply():
    teacher = ScriptedTeacher("3", "I cannot tell")
    judge = ChatJudge("http://unused", "m", teacher=teacher)
    assert isinstance(judge, Judge)
    assert judge.choose("ANCHOR-TRACE", ["cand-a", "cand-b", "cand-c"]) == 2
    assert judge.choose("ANCHOR-TRACE", ["cand-a", "cand-b"]) is None
    user = teacher.messages[0][-1]["content"]
    assert "ANCHOR-TRACE" in user
    assert user.index("[1]\ncand-a") < user.index("[2]\ncand-b") < user.index("[3]\ncand-c")
    assert "1 to 3" in user


def test_chat_judge_over_http(monkeypatch):
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(
                {"path": self.path, "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))}
            )
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "2"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = make_judge("chat", base_url=f"http://127.0.0.1:{server.server_port}/v1", model="judge-8b")
        assert judge.choose("anchor", ["x", "y"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0]["path"] == "/v1/chat/completions"
    assert seen[0]["body"]["model"] == "judge-8b" and seen[0]["body"]["temperature"] == 0.0


def test_judge_registry():
    assert isinstance(make_judge("lexical"), LexicalJudge)
    with pytest.raises(UnknownJudgeError, match="known judges: chat, lexical"):
        make_judge("gpt")
    with pytest.raises(ValueError, match="already registered"):
        register_judge("lexical", LexicalJudge)
    register_judge("first-test-only", FirstJudge)
    try:
        assert isinstance(make_judge("first-test-only"), FirstJudge)
    finally:
        del JUDGES["first-test-only"]
    assert sorted(JUDGES) == ["chat", "lexical"]


# ======================================================================================= combine
def test_combine_uses_the_paper_weights():
    assert (rewards.ALPHA, rewards.BETA, rewards.GAMMA) == (0.05, 0.8, 0.2)
    assert combine_rewards(1.0, 0.0, 0.0) == pytest.approx(0.05)
    assert combine_rewards(0.0, 1.0, 0.0) == pytest.approx(0.8)
    assert combine_rewards(0.0, 0.0, 1.0) == pytest.approx(0.2)
    assert combine_rewards(1.0, 1.0, 1.0, alpha=1.0, beta=2.0, gamma=3.0) == pytest.approx(6.0)


def test_combine_is_elementwise_for_arrays_lists_and_tensors():
    fmt, proc, out = [1.0, 0.0], np.array([1.0, 1.0]), np.array([0.5, -0.25])
    expected = np.array([0.05 + 0.8 + 0.1, 0.8 - 0.05])
    np.testing.assert_allclose(combine_rewards(fmt, proc, out), expected)
    as_torch = combine_rewards(torch.tensor(fmt), proc, torch.tensor(out, dtype=torch.float32))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    np.testing.assert_allclose(as_torch.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(combine_rewards(1.0, proc, out), [0.95, 0.8])  # a scalar part broadcasts
    with pytest.raises(ValueError, match="one shape"):
        combine_rewards(np.ones(3), np.ones((3, 1)), np.ones(3))
