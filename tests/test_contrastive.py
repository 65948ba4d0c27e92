"""info_nce: the loss math, and its equivalence under 2-rank torchrun (DDP and DeepSpeed ZeRO-2).

The distributed tests launch tests/dist_contrastive_worker.py once under torchrun (gloo, CPU) and compare
what each rank wrote with the single-process loss, gradients and SGD step on the concatenated batch.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from embedrl.train.contrastive import info_nce, info_nce_details
from embedrl.train.distributed import (
    DistInfo,
    all_gather_with_grad,
    init_distributed,
    is_main,
    load_deepspeed_config,
)

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "dist_contrastive_worker.py"


# ----------------------------------------------------------------------------- loss math


def reference_info_nce(q: torch.Tensor, t: torch.Tensor, tau: float, symmetric: bool) -> torch.Tensor:
    """Cross-entropy written out with explicit loops (log-sum-exp by hand)."""

    def unit(x):
        return [row / torch.sqrt((row * row).sum()) for row in x]

    def one_direction(a, b):
        total = 0.0
        for i in range(len(a)):
            scores = [(a[i] * b[j]).sum() / tau for j in range(len(b))]
            top = max(s.detach() for s in scores)
            lse = top + torch.log(sum(torch.exp(s - top) for s in scores))
            total = total + (lse - scores[i])
        return total / len(a)

    qn, tn = unit(q), unit(t)
    loss = one_direction(qn, tn)
    if symmetric:
        loss = 0.5 * (loss + one_direction(tn, qn))
    return loss


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("tau", [0.02, 0.1, 1.0])
def test_loss_matches_a_hand_written_reference(symmetric, tau):
    g = torch.Generator().manual_seed(0)
    q = 3.0 * torch.randn(6, 5, generator=g, dtype=torch.float64)  # not unit length: info_nce normalises
    t = q + torch.randn(6, 5, generator=g, dtype=torch.float64)
    got = info_nce(q, t, temperature=tau, symmetric=symmetric)
    want = reference_info_nce(q, t, tau, symmetric)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want.item(), abs=1e-10, rel=1e-10)
    # gather=True is the identity in a single process
    assert info_nce(q, t, temperature=tau, symmetric=symmetric, gather=False).item() == pytest.approx(
        got.item()
    )


def test_gradients_match_the_reference():
    g = torch.Generator().manual_seed(1)
    q0 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    t0 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    q1, t1 = q0.clone().requires_grad_(), t0.clone().requires_grad_()
    q2, t2 = q0.clone().requires_grad_(), t0.clone().requires_grad_()
    info_nce(q1, t1, temperature=0.02).backward()
    reference_info_nce(q2, t2, 0.02, True).backward()
    torch.testing.assert_close(q1.grad, q2.grad, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(t1.grad, t2.grad, atol=1e-9, rtol=1e-9)


def test_default_temperature_is_the_papers():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    # row 0: logits (50, 50/sqrt2); row 1: (0, 50/sqrt2)
    expected_q2t = 0.5 * (
        math.log(1 + math.exp(50 / math.sqrt(2) - 50)) + math.log(1 + math.exp(-50 / math.sqrt(2)))
    )
    assert info_nce(q, t, symmetric=False).item() == pytest.approx(expected_q2t, rel=1e-12)


def test_details_report_accuracy_and_similarities():
    q = torch.eye(4, dtype=torch.float64)
    t = torch.eye(4, dtype=torch.float64)[[0, 1, 3, 2]]  # pairs 2 and 3 swapped
    d = info_nce_details(q, t, temperature=0.1)
    assert d.global_batch_size == 4
    assert d.q2t_accuracy.item() == pytest.approx(0.5)
    assert d.t2q_accuracy.item() == pytest.approx(0.5)
    assert d.accuracy.item() == pytest.approx(0.5)
    assert d.positive_similarity.item() == pytest.approx(0.5)
    assert d.negative_similarity.item() == pytest.approx(2 / 12)
    assert d.loss.item() == pytest.approx(info_nce(q, t, temperature=0.1).item())
    assert set(d.metrics("train/")) >= {"train/loss", "train/accuracy", "train/t2q_accuracy"}
    one_way = info_nce_details(q, q, symmetric=False)
    assert one_way.t2q_loss is None and one_way.accuracy.item() == 1.0


def test_bf16_embeddings_get_a_float32_loss_and_bf16_gradients():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(4, 8, generator=g).to(torch.bfloat16).requires_grad_()
    t = torch.randn(4, 8, generator=g).to(torch.bfloat16).requires_grad_()
    loss = info_nce(q, t)
    assert loss.dtype == torch.float32
    loss.backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def test_input_validation():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        info_nce(x, torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        info_nce(x[0], x[0])
    with pytest.raises(ValueError, match="temperature"):
        info_nce(x, x, temperature=0.0)


def test_single_process_helpers(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed() == DistInfo(rank=0, world_size=1, local_rank=0, is_main=True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not init_distributed().distributed
    assert is_main()
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x


def test_load_deepspeed_config_resolves_auto_values():
    cfg = load_deepspeed_config(
        REPO / "infra" / "deepspeed" / "zero2.json", micro_batch_size=4, world_size=8, bf16=True
    )
    assert cfg["train_batch_size"] == 32 and cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 1 and cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"]["enabled"] is True and cfg["fp16"]["enabled"] is False
    assert cfg["zero_optimization"]["stage"] == 2
    assert not any(k.startswith("_") for k in cfg)
    z3 = load_deepspeed_config(REPO / "infra" / "deepspeed" / "zero3.json", micro_batch_size=2, world_size=2)
    assert z3["zero_optimization"]["stage"] == 3 and z3["train_batch_size"] == 4
    with pytest.raises(ValueError, match="optimizer.params.lr"):
        load_deepspeed_config({"optimizer": {"params": {"lr": "auto"}}}, micro_batch_size=1, world_size=1)


def test_infra_configs_are_valid():
    from accelerate.commands.config.config_args import ClusterConfig

    for name in ("zero2.json", "zero3.json"):
        raw = json.loads((REPO / "infra" / "deepspeed" / name).read_text())
        assert raw["bf16"]["enabled"] == "auto" and "_comment" in raw
    ddp = ClusterConfig.from_yaml_file(str(REPO / "infra" / "accelerate" / "ddp.yaml"))
    assert ddp.distributed_type.value == "MULTI_GPU" and ddp.mixed_precision == "bf16"
    z2 = ClusterConfig.from_yaml_file(str(REPO / "infra" / "accelerate" / "zero2.yaml"))
    assert z2.distributed_type.value == "DEEPSPEED"
    assert (REPO / z2.deepspeed_config["deepspeed_config_file"]).is_file()
    # accelerate refuses these next to a deepspeed_config_file (they must live in the JSON)
    refused = {
        "gradient_accumulation_steps",
        "gradient_clipping",
        "zero_stage",
        "offload_optimizer_device",
        "offload_param_device",
        "zero3_save_16bit_model",
        "mixed_precision",
    }
    assert not refused & set(z2.deepspeed_config)
    assert z2.mixed_precision is None  # bf16 comes from --mixed_precision bf16 / TrainingArguments


# ----------------------------------------------------------------------------- distributed equivalence


def _load_worker():
    spec = importlib.util.spec_from_file_location("dist_contrastive_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def torchrun_results(tmp_path_factory):
    """Run the worker once under torchrun with 2 ranks; return (out dir, returncode, log)."""
    out = tmp_path_factory.mktemp("dist_contrastive")
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", DS_BUILD_OPS="0", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH", "")]))
    modes = "ddp,deepspeed" if importlib.util.find_spec("deepspeed") else "ddp"
    proc = None
    for _ in range(3):  # retry if the free port was taken in between
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            str(WORKER), "--out", str(out), "--modes", modes,
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
        if proc.returncode == 0 or "address already in use" not in (proc.stdout + proc.stderr).lower():
            break
    return out, proc.returncode, (proc.stdout + proc.stderr)[-6000:]


def _reference(dtype: torch.dtype, lr: float):
    w = _load_worker()
    model = w.build_model(dtype)
    xq, xt = w.global_batch(dtype)
    loss = w.forward_loss(model, xq, xt)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        stepped = {n: p - lr * p.grad for n, p in model.named_parameters()}  # plain SGD
    return loss.detach(), grads, stepped


def _rank_file(out: Path, mode: str, rank: int, log: str) -> dict:
    path = out / f"{mode}_rank{rank}.pt"
    error = out / f"{mode}_rank{rank}.error"
    if not path.exists():
        detail = error.read_text() if error.exists() else log
        pytest.fail(f"{mode} worker wrote no result for rank {rank}:\n{detail}")
    return torch.load(path, weights_only=False)


@pytest.mark.timeout(300)
def test_two_rank_ddp_equals_single_process(torchrun_results):
    out, _, log = torchrun_results
    ref_loss, ref_grads, _ = _reference(torch.float64, 0.0)
    for rank in range(2):
        d = _rank_file(out, "ddp", rank, log)
        # the loss on every rank is the loss of the whole global batch
        assert abs(d["loss"].item() - ref_loss.item()) < 1e-6
        assert abs(d["loss_manual"].item() - ref_loss.item()) < 1e-6
        for key in ("ddp_grads", "manual_grads"):
            for name, ref in ref_grads.items():
                torch.testing.assert_close(
                    d[key][name], ref, atol=1e-6, rtol=0, msg=f"{key} {name} rank {rank}"
                )
        # negative control: without the all_reduce in the gather's backward, the gradient is 1/W of it
        for name, ref in ref_grads.items():
            torch.testing.assert_close(d["slice_only_grads"][name], ref / 2, atol=1e-6, rtol=0)
        assert "same batch size on every rank" in d["unequal_error"] and "[2, 3]" in d["unequal_error"]


@pytest.mark.timeout(300)
def test_two_rank_deepspeed_zero2_step_equals_single_process(torchrun_results):
    pytest.importorskip("deepspeed")
    out, _, log = torchrun_results
    w = _load_worker()
    ref_loss, ref_grads, ref_params = _reference(torch.float32, w.SGD_LR)
    for rank in range(2):
        d = _rank_file(out, "deepspeed", rank, log)
        assert d["zero_stage"] == 2
        assert abs(d["loss"].item() - ref_loss.item()) < 1e-6
        # float32: gradients up to ~2.4 in size, so a relative term on top of 1e-6
        for name, ref in ref_grads.items():
            assert d["grads"][name] is not None, f"DeepSpeed kept no gradient for {name}"
            torch.testing.assert_close(
                d["grads"][name], ref, atol=1e-6, rtol=1e-6, msg=f"grad {name} rank {rank}"
            )
        for name, ref in ref_params.items():
            torch.testing.assert_close(
                d["params"][name], ref, atol=1e-6, rtol=1e-6, msg=f"param {name} rank {rank}"
            )
