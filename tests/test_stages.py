"""Each stage moves its own objective on MiniMMEB (short runs on the tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import MICRO_PROFILE


def test_embedder_training_lowers_the_contrastive_loss(trained_embedder):
    log = [json.loads(line) for line in (trained_embedder.parent / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2


def test_trained_embedder_gives_unit_vectors_at_emb(trained_embedder, prepared_small):
    from embedrl.data.sides import MediaStore, eval_sides
    from embedrl.models.embedder import Embedder, EmbedderInputs
    from embedrl.models.factory import load_model
    from embedrl.train.embedder import build_side

    model, processor = load_model(trained_embedder)
    inputs = EmbedderInputs(processor)
    row = json.loads((prepared_small / "eval/image/T2I-Marked.jsonl").read_text().splitlines()[0])
    query, candidates = eval_sides(row)
    store = MediaStore(prepared_small)
    batch = inputs.collate([inputs.encode(build_side(r, store, None)) for r in [query] + candidates])
    assert (batch["input_ids"][:, -1] == inputs.emb_id).all()
    with torch.no_grad():
        vectors = Embedder(model, inputs.emb_id)(batch)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(len(candidates) + 1), atol=1e-5)
    single = inputs.collate([inputs.encode(build_side(query, store, None))])
    with torch.no_grad():  # left padding must not change a row's vector
        assert torch.allclose(Embedder(model, inputs.emb_id)(single)[0], vectors[0], atol=1e-4)


def test_lora_embedder_trains_adapters_only_and_saves_merged(prepared_small, tiny_models, tmp_path):
    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.models.factory import load_model
    from embedrl.models.spec import LLM_LINEAR_MODULES
    from embedrl.train.embedder import train_embedder

    config = build_config(EmbedderTrainConfig, MICRO_PROFILE, "embedder", max_steps=4)
    lora = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target_modules": list(LLM_LINEAR_MODULES)}
    result = train_embedder(prepared_small, tiny_models["embedder"], tmp_path, config, lora=lora, progress=False)
    merged, _ = load_model(result.out_dir / "model")
    base, _ = load_model(tiny_models["embedder"])
    changed = {n for n, p in merged.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])}
    assert changed and all(any(m in n for m in LLM_LINEAR_MODULES) for n in changed)
    assert not any("visual" in n for n in changed)


def test_sft_lowers_the_completion_loss(sft_reasoner):
    losses = sft_reasoner.losses
    assert len(losses) >= 5
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) * 0.8
    assert (sft_reasoner.out_dir / "model" / "model.safetensors").exists()


def test_sft_examples_mask_the_prompt(prepared_small, tiny_models):
    """Loss on the completion only: the collator's labels are -100 on every prompt token."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from embedrl.models.factory import load_model
    from embedrl.train.sft import sft_examples

    _, processor = load_model(tiny_models["reasoner"])
    examples = sft_examples(prepared_small)[:4]
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    batch = collator([dict(e) for e in examples])
    labels, ids = batch["labels"], batch["input_ids"]
    thinking = processor.tokenizer.convert_tokens_to_ids("<thinking>")
    for row in range(len(examples)):
        first = int((labels[row] != -100).nonzero()[0])
        assert ids[row, first] == thinking  # supervision starts at the T-CoT
        assert (labels[row, :first] == -100).all()


@pytest.mark.timeout(600)
def test_egrl_runs_grpo_with_every_reward_component(prepared_small, trained_embedder, sft_reasoner, tmp_path):
    from embedrl.config import build_config
    from embedrl.train.egrl import EGRLStageConfig, train_egrl

    config = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=str(tmp_path), max_steps=3)
    result = train_egrl(prepared_small, sft_reasoner.out_dir / "model", trained_embedder, tmp_path, config)
    assert len(result.history) == 3
    for step in result.history:
        assert set(step) >= {"format_rate", "outcome", "process", "acc", "margin", "completion_chars"}
        assert 0.0 <= step["format_rate"] <= 1.0
    logged = json.loads((tmp_path / "trainer_log.json").read_text())
    keys = {k for entry in logged for k in entry}
    assert {"rewards/format_reward/mean", "rewards/process_reward/mean", "rewards/outcome_reward/mean", "kl",
            "completions/mean_length", "egrl/acc", "egrl/margin"} <= keys
    assert (tmp_path / "model" / "model.safetensors").exists()
    times = [json.loads(line) for line in (tmp_path / "step_times.jsonl").read_text().splitlines()]
    assert [t["step"] for t in times] == [1, 2, 3]
    for t in times:  # each step split into generation, reward and update, all of it measured
        assert t["generation_seconds"] > 0 and t["reward_seconds"] > 0 and t["update_seconds"] > 0
        assert t["generation_seconds"] + t["reward_seconds"] + t["update_seconds"] == pytest.approx(t["seconds"])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("exploration", ["choices", "branch"])
def test_egrl_exploring_choices_moves_only_through_the_choices_advantages(prepared_small, trained_embedder,
                                                                          sft_reasoner, tmp_path, exploration,
                                                                          monkeypatch):
    """exploration=choices (or branch) trains with trl's GRPO loss on per-token advantages (non-zero at the
    explored choices only); the run completes, logs its KL, and records how it trained."""
    from embedrl.config import build_config
    from embedrl.models.reasoner import ReasonerPrompt
    from embedrl.train.egrl import EGRLStageConfig, egrl_dataset, train_egrl
    from embedrl.train.exploration import BranchExploration

    branch = {"branch_min_p": 0.001, "branch_modalities": ["image"]} if exploration == "branch" else {}
    ratios_taken, real_start = [], BranchExploration.start

    def start(processor, prompt_ids):  # the real start; records the ratio each generated row took
        real_start(processor, prompt_ids)
        ratios_taken.extend(processor.row_min_p.tolist())

    monkeypatch.setattr(BranchExploration, "start", start)
    config = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=str(tmp_path), max_steps=2,
                          exploration=exploration, temperature=1.0, min_p=0.1, save_strategy="no", **branch)
    result = train_egrl(prepared_small, sft_reasoner.out_dir / "model", trained_embedder, tmp_path, config)
    assert len(result.history) == 2
    logged = json.loads((tmp_path / "trainer_log.json").read_text())
    assert all(np.isfinite(entry["loss"]) for entry in logged if "loss" in entry)
    assert any("kl" in entry for entry in logged)
    stage = json.loads((tmp_path / "model" / "embedrl.json").read_text())["stage"]
    assert stage["exploration"] == exploration and stage["choice_advantages_only"] is True
    if exploration == "branch":  # each side's rows branched at its modality's threshold
        assert stage["branch_min_p"] == {"text": 0.1, "image": 0.001, "video": 0.1} and stage["sample_after_branch"]
        sides = egrl_dataset(prepared_small, pairs_per_step=config.pairs_per_step, prompt=ReasonerPrompt.of_model(
            sft_reasoner.out_dir / "model"), seed=config.seed)[1]
        expected = [stage["branch_min_p"][side.modality] for side in sides[:len(ratios_taken) // config.num_generations]
                    for _ in range(config.num_generations)]
        assert {"image", "video"} <= {side.modality for side in sides[:len(expected)]}
        assert ratios_taken == pytest.approx(expected)


def test_on_sides_zeroes_the_advantages_of_the_sides_not_kept():
    import torch

    from embedrl.train.egrl import on_sides

    per_completion = torch.tensor([1.0, -2.0, 0.5])
    assert on_sides(per_completion, np.array([1.0, 0.0, 1.0])).tolist() == [1.0, 0.0, 0.5]
    per_token = torch.ones(3, 4)
    assert on_sides(per_token, np.array([0.0, 1.0, 0.0])).sum(dim=1).tolist() == [0.0, 4.0, 0.0]


def test_missed_sides_of_other_data_are_refused(tmp_path):
    """A missed_sides.json left in the output folder by a run on other RL data is not reused."""
    from embedrl.config import build_config
    from embedrl.train.egrl import MISSED_SIDES, EGRLStageConfig, _policy_gradient_sides

    config = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=str(tmp_path), policy_gradient_on="missed")
    (tmp_path / MISSED_SIDES).write_text(json.dumps({"sides": 3, "missed_count": 1, "missed": [True, False, False]}))
    with pytest.raises(ValueError, match="3 sides, but the RL data has 5"):
        _policy_gradient_sides(config, [], [object()] * 5, None, None, None, None, tmp_path)


@pytest.mark.timeout(600)
def test_egrl_on_missed_sides_trains_only_where_the_greedy_trace_misses(prepared_small, trained_embedder,
                                                                       sft_reasoner, tmp_path, monkeypatch):
    """policy_gradient_on=missed: the sides are those whose greedy trace misses (or does not parse) in
    rl_holdout's per-side reading (its own rows and Reasoner load), kept in missed_sides.json, and each generation batch's advantages are
    weighted by them, row for row of the group it trains on."""
    import embedrl.train.egrl as egrl
    from embedrl.config import build_config
    from embedrl.experiment import rl_holdout
    from embedrl.models.reasoner import ReasonerPrompt

    model = sft_reasoner.out_dir / "model"
    config = build_config(egrl.EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=str(tmp_path), max_steps=2,
                          policy_gradient_on="missed", save_strategy="no")
    seen = []

    def recorded(advantages, keep):
        seen.append((advantages.clone(), keep.copy()))
        return real(advantages, keep)

    real = egrl.on_sides
    monkeypatch.setattr(egrl, "on_sides", recorded)
    egrl.train_egrl(prepared_small, model, trained_embedder, tmp_path, config)
    record = json.loads((tmp_path / egrl.MISSED_SIDES).read_text())
    missed = np.array(record["missed"])
    assert record["missed_count"] == missed.sum() and 0 < missed.sum() < len(missed)
    assert json.loads((tmp_path / "model" / "embedrl.json").read_text())["stage"]["policy_gradient_on"] == "missed"

    rows, _ = egrl.egrl_dataset(prepared_small, pairs_per_step=config.pairs_per_step,
                                prompt=ReasonerPrompt.of_model(model), seed=config.seed)
    held = rl_holdout(prepared_small, model, trained_embedder, config, n_groups=2, per_side=True)
    last = rows[-len(held["sides"]):]
    assert [missed[r["side"]] for r in last] == [not s["hit"] or s["cue"] is None for s in held["sides"]]

    per_group = 2 * config.pairs_per_step
    assert len(seen) == 2  # one generation batch per step, group after group
    for step, (advantages, keep) in enumerate(seen):
        group = rows[step * per_group:(step + 1) * per_group]
        expected = np.repeat([missed[r["side"]] for r in group], config.num_generations).astype(float)
        assert sorted(keep.tolist()) == sorted(expected.tolist())
        assert len(keep) == len(advantages)


def test_beta_by_modality_is_checked_and_fills_the_other_modalities_with_beta():
    from embedrl.config import build_config
    from embedrl.train.egrl import EGRLStageConfig

    def config(**values):
        return build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", **values)

    coefficients = config(beta=0.4, beta_by_modality={"image": "4e-2"}).kl_coefficients()
    assert coefficients == {"text": 0.4, "image": 0.04, "video": 0.4}
    assert config(beta=0.4).kl_coefficients() is None
    for bad, message in [({"audio": 0.1}, "unknown modalities"), ({"image": -0.1}, "image=-0.1"),
                         ({"image": "lots"}, "image='lots': expected a number"), ([0.1], "expected a mapping")]:
        with pytest.raises(ValueError, match=message):
            config(beta=0.4, beta_by_modality=bad)
    with pytest.raises(ValueError, match="need egrl.beta > 0"):
        config(beta=0.0, beta_by_modality={"image": 0.04})


def test_beta_missed_leashes_the_sides_the_cold_start_gets_right_and_frees_the_missed_ones():
    from types import SimpleNamespace

    from embedrl.config import build_config
    from embedrl.train.egrl import EGRLStageConfig

    def config(**values):
        return build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", beta=0.4, **values)

    sides = [SimpleNamespace(modality=m) for m in ("text", "image", "image", "video")]
    missed = np.array([0.0, 1.0, 0.0, 1.0])
    assert config().kl_by_side(sides, None) is None
    assert config(beta_by_modality={"image": 0.04}).kl_by_side(sides, None).tolist() == [0.4, 0.04, 0.04, 0.4]
    freed = config(policy_gradient_on="missed", beta_missed="1e-2").kl_by_side(sides, missed)
    assert freed.tolist() == [0.4, 0.01, 0.4, 0.01]
    both = config(policy_gradient_on="missed", beta_missed=0.0, beta_by_modality={"text": 0.2}).kl_by_side(sides, missed)
    assert both.tolist() == [0.2, 0.0, 0.4, 0.0]
    with pytest.raises(ValueError, match="needs egrl.policy_gradient_on=missed"):
        config(beta_missed=0.01)
    for bad, message in [(-1.0, "beta_missed=-1"), ("lots", "beta_missed.*expected a number")]:
        with pytest.raises(ValueError, match=message):
            config(policy_gradient_on="missed", beta_missed=bad)
    with pytest.raises(ValueError, match="need egrl.beta > 0"):
        build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", beta=0.0, policy_gradient_on="missed", beta_missed=0.01)


@pytest.mark.timeout(600)
def test_egrl_kl_by_modality_equals_trls_one_beta_loss_per_modality(prepared_small, trained_embedder, sft_reasoner,
                                                                    tmp_path, monkeypatch):
    """beta_by_modality: on a real generation batch (with a reference moved apart from the policy, so that the KL
    is not 0), the loss equals the sum over modalities of trl's own loss with that modality's beta on its rows
    alone (the other rows masked out), for the dapo and grpo losses; and differs from trl's loss with one beta."""
    import trl

    import embedrl.train.egrl as egrl
    from embedrl.config import build_config

    betas = {"image": 0.05, "video": 2.0}
    config = build_config(egrl.EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=str(tmp_path), max_steps=1,
                          beta=0.5, beta_by_modality=betas, save_strategy="no")
    compared, real = [], egrl.ChoiceGRPOTrainer._compute_loss

    def checked(self, model, inputs):
        if not compared:
            compared.append(loss_against_trl(self, model, inputs))
        return real(self, model, inputs)

    @torch.no_grad()
    def loss_against_trl(trainer, model, inputs):
        model.eval()  # no dropout: the same forward pass every time
        apart = dict(inputs, ref_per_token_logps=inputs["ref_per_token_logps"]
                     + torch.linspace(-0.3, 0.3, inputs["ref_per_token_logps"].numel()).view_as(
                         inputs["ref_per_token_logps"]))
        coefficients = apart[egrl.KL_WEIGHTS][:, 0]
        found = {}
        for loss_type in ("dapo", "grpo"):
            trainer.loss_type = loss_type
            ours = real(trainer, model, apart).item()
            per_modality = 0.0
            for beta in coefficients.unique().tolist():
                rows = (coefficients == beta).to(apart["completion_mask"].dtype)
                trainer.beta = beta
                per_modality += trl.GRPOTrainer._compute_loss(
                    trainer, model, dict(apart, completion_mask=apart["completion_mask"] * rows[:, None])).item()
            trainer.beta = config.beta
            one_beta = trl.GRPOTrainer._compute_loss(trainer, model, apart).item()
            found[loss_type] = (ours, per_modality, one_beta)
        trainer.loss_type = config.loss_type
        model.train()
        return found, sorted(set(coefficients.tolist()))

    monkeypatch.setattr(egrl.ChoiceGRPOTrainer, "_compute_loss", checked)
    egrl.train_egrl(prepared_small, sft_reasoner.out_dir / "model", trained_embedder, tmp_path, config)
    (found, coefficients_seen), = compared
    assert len(coefficients_seen) >= 2  # the group holds sides of two modalities at least
    assert all(min(abs(c - b) for b in (0.5, 0.05, 2.0)) < 1e-6 for c in coefficients_seen)  # float32 rows
    for ours, per_modality, one_beta in found.values():
        assert ours == pytest.approx(per_modality, rel=1e-5, abs=1e-7)
        assert abs(ours - one_beta) > 1e-4
    stage = json.loads((tmp_path / "model" / "embedrl.json").read_text())["stage"]
    assert stage["beta_by_modality"] == {"text": 0.5, **betas} and stage["beta"] == 0.5


@pytest.mark.timeout(600)
def test_egrl_accumulates_whole_groups_into_one_update(prepared_small, trained_embedder, sft_reasoner, tmp_path):
    """gradient_accumulation_steps=2: each optimizer step averages the gradients of two RL groups, each
    generated and rewarded as its own B pairs x G rollouts: four reward batches for two steps (two groups in
    one generation batch would share their negatives, and the outcome reward would be another one)."""
    from embedrl.config import build_config
    from embedrl.train.egrl import EGRLStageConfig, train_egrl

    config = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=str(tmp_path), max_steps=2,
                          gradient_accumulation_steps=2, save_strategy="no")
    result = train_egrl(prepared_small, sft_reasoner.out_dir / "model", trained_embedder, tmp_path, config)
    assert len(result.history) == 4  # one reward batch per group: 2 steps x 2 groups
    logged = json.loads((tmp_path / "trainer_log.json").read_text())
    assert max(entry.get("step", 0) for entry in logged) == 2
    times = [json.loads(line) for line in (tmp_path / "step_times.jsonl").read_text().splitlines()]
    assert [t["step"] for t in times] == [1, 2]


def test_egrl_raises_its_reward_on_the_groups_it_trains_on(prepared_small, trained_embedder, sft_reasoner, tmp_path):
    """GRPO through train_egrl moves the policy toward what the reward asks for. Four RL groups repeat for
    six epochs, so each epoch's mean reward is over the same prompts; the weights keep the format reward
    alone, the one component with a clear signal on micro models (rollouts at T 1.0 are well-formed about
    half the time). lr 1e-4: at 1e-3 the first Adam steps wreck the policy (format 0.56 -> 0 in 3 steps)."""
    from embedrl.config import build_config
    from embedrl.train.egrl import EGRLStageConfig, train_egrl

    groups, epochs = 4, 6
    config = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=str(tmp_path), max_groups=groups,
                          max_steps=groups * epochs, format_weight=1.0, process_weight=0.0, outcome_weight=0.0,
                          learning_rate=1e-4, temperature=1.0, min_p=0.1, max_completion_length=160,
                          save_strategy="no")
    history = train_egrl(prepared_small, sft_reasoner.out_dir / "model", trained_embedder, tmp_path, config).history
    per_epoch = [np.mean([h["format_rate"] for h in history[e * groups:(e + 1) * groups]]) for e in range(epochs)]
    assert 0.2 < per_epoch[0] < 0.9, f"no signal to learn from: format rate {per_epoch}"
    assert np.mean(per_epoch[-2:]) > per_epoch[0] + 0.05, f"reward did not go up: {per_epoch}"


def test_reward_alignment_compares_rollouts_with_and_without_the_evidence(prepared_small, trained_embedder,
                                                                         sft_reasoner):
    from embedrl.config import build_config
    from embedrl.experiment import reward_alignment
    from embedrl.train.egrl import EGRLStageConfig

    config = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=".", temperature=1.0, min_p=0.1,
                          max_completion_length=160)
    report = reward_alignment(prepared_small, sft_reasoner.out_dir / "model", trained_embedder, config, n_groups=3)
    assert report["groups"] == 3 and 0 <= report["mixed_sides"] <= report["fine_evidence_sides"]
    assert report["evidence_rate"] is None or 0.0 <= report["evidence_rate"] <= 1.0
    gaps = report["with_minus_without"]
    assert set(gaps) == {"format", "process", "outcome", "total", "advantage"}
    if report["mixed_sides"]:  # both compared sets are well-formed: the format reward cannot separate them
        assert gaps["format"] == 0.0 and all(np.isfinite(v) for v in gaps.values())


def test_mark_binding_reads_the_first_mark_as_written(prepared_small, sft_reasoner):
    """The share of held-out marked images whose greedy trace first points at the dotted region: the marks
    are read before resolution (a resolved trace has region words, not marks)."""
    import re

    from embedrl.config import build_config
    from embedrl.data.sides import MediaStore
    from embedrl.experiment import mark_binding
    from embedrl.models.reasoner import Reasoner
    from embedrl.train.egrl import EGRLStageConfig
    from embedrl.train.embedder import load_pairs

    config = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=".", max_steps=1)
    report = mark_binding(prepared_small, sft_reasoner.out_dir / "model", config, n_groups=8)
    assert report["sides"] > 0 and 0.0 <= report["binding_rate"] <= 1.0
    reasoner = Reasoner.load(sft_reasoner.out_dir / "model", max_new_tokens=96)
    sides = [p.positive for p in load_pairs(prepared_small)["T2I-Marked"][:4]]
    store = MediaStore(prepared_small)
    raw = reasoner.generate(sides, ["target"] * 4, store, resolve=False)
    resolved = reasoner.generate(sides, ["target"] * 4, store)
    assert any(re.search(r"#\d", t) for t in raw)
    assert sum(len(re.findall(r"#\d", t)) for t in resolved) < sum(len(re.findall(r"#\d", t)) for t in raw)
    every_group = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=".", max_steps=10_000)
    with pytest.raises(ValueError, match="cannot hold out"):  # never on groups EG-RL trains on
        mark_binding(prepared_small, sft_reasoner.out_dir / "model", every_group, n_groups=8)
    # a cold start has not seen the rl split: its binding may use the groups EG-RL trains on
    cold = mark_binding(prepared_small, sft_reasoner.out_dir / "model", every_group, n_groups=8, held_out=False)
    assert cold["sides"] == report["sides"] and cold["binding_rate"] == report["binding_rate"]
    assert 0.0 < cold["chance"] < 0.5


def test_rl_holdout_scores_held_out_groups_and_refuses_trained_ones(prepared_small, trained_embedder,
                                                                    sft_reasoner):
    from embedrl.config import build_config
    from embedrl.experiment import rl_holdout
    from embedrl.train.egrl import EGRLStageConfig

    config = build_config(EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=".", max_steps=1)
    gold = rl_holdout(prepared_small, None, trained_embedder, config, n_groups=4, source="gold", per_side=True)
    reasoner = rl_holdout(prepared_small, sft_reasoner.out_dir / "model", trained_embedder, config, n_groups=4)
    sides = gold.pop("sides")  # per side in row order: its group, role and whether it ranked its pair first
    assert "sides" not in reasoner and len(sides) == 4 * 2 * config.pairs_per_step
    assert [s["role"] for s in sides[:4]] == ["query", "target", "query", "target"]
    assert [s["group"] for s in sides] == sorted(s["group"] for s in sides)
    assert np.mean([s["hit"] for s in sides]) == pytest.approx(gold["hit_at_1"])
    for modality, part in gold["by_modality"].items():
        hits = [s["hit"] for s in sides if s["modality"] == modality]
        assert len(hits) == part["sides"] and np.mean(hits) == pytest.approx(part["hit_at_1"])
    assert all(s["trace"].startswith("<thinking>") and s["cue"] is not None for s in sides)  # gold: well-formed
    for score in (gold, reasoner):
        assert score["groups"] == 4 and 0.0 <= score["hit_at_1"] <= 1.0 and 0.0 <= score["format_rate"] <= 1.0
    assert gold["format_rate"] == 1.0 and gold["evidence_rate"] in (None, 1.0)
    for score in (gold, reasoner):  # per modality: the groups' sides add up, and so do their hits
        parts = score["by_modality"].values()
        assert set(score["by_modality"]) <= {"image", "video", "visdoc", "text"}
        assert sum(p["sides"] for p in parts) == 4 * 2 * config.pairs_per_step  # B queries + B targets per group
        assert sum(p["hit_at_1"] * p["sides"] for p in parts) / sum(p["sides"] for p in parts) == pytest.approx(
            score["hit_at_1"])
    assert all(p["evidence_rate"] in (None, 1.0) for p in gold["by_modality"].values())
    with pytest.raises(ValueError, match="cannot hold out"):
        rl_holdout(prepared_small, None, trained_embedder, build_config(
            EGRLStageConfig, MICRO_PROFILE, "egrl", output_dir=".", max_steps=10_000), n_groups=4, source="gold")
