"""Typed stage configs: paper defaults, profile overrides, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from embedrl.config import EmbedderTrainConfig, EvalConfig, build_config, profile_section


def test_defaults_are_the_papers():
    config = EmbedderTrainConfig()
    assert (config.temperature, config.learning_rate, config.warmup_steps, config.weight_decay) == (0.02, 1e-4, 10, 0.01)
    assert (config.epochs, config.global_batch_size) == (2.0, 512)


def test_precedence_defaults_profile_overrides():
    assert build_config(EmbedderTrainConfig).temperature == 0.02
    assert build_config(EmbedderTrainConfig, "tiny", "embedder").temperature == 0.05
    assert build_config(EmbedderTrainConfig, "tiny", "embedder", temperature=0.1).temperature == 0.1
    assert build_config(EmbedderTrainConfig, "tiny", "embedder", temperature=None).temperature == 0.05


def test_unknown_field_and_bad_values_raise_with_names():
    with pytest.raises(ValueError, match="unknown field.*tempreature"):
        build_config(EmbedderTrainConfig, "tiny", "embedder", tempreature=0.1)
    with pytest.raises(ValueError, match="temperature"):
        EmbedderTrainConfig(temperature=0)
    with pytest.raises(ValueError, match="evidence_mix"):
        EmbedderTrainConfig(evidence_mix={"pixels": 1.0})
    with pytest.raises(ValueError, match="variant_per"):
        EmbedderTrainConfig(variant_per="side")
    with pytest.raises(ValueError, match="unknown profile"):
        build_config(EmbedderTrainConfig, "no-such-profile", "embedder")


def test_tiny_stage_sections_build_the_trl_configs():
    from embedrl.train.egrl import EGRLStageConfig
    from embedrl.train.sft import SFTStageConfig

    sft = build_config(SFTStageConfig, "tiny", "sft", output_dir="/tmp/x")
    assert sft.completion_only_loss is True
    egrl = build_config(EGRLStageConfig, "tiny", "egrl", output_dir="/tmp/x")
    assert egrl.reward_weights == [0.05, 0.8, 0.2]
    assert egrl.per_device_train_batch_size == 2 * egrl.pairs_per_step * egrl.num_generations
    assert egrl.beta > 0 and egrl.min_p == 0.1


@pytest.mark.parametrize("section", ["sft", "egrl"])
def test_paper_profile_keys_are_fields_of_the_trl_configs(section):
    from embedrl.train.egrl import EGRLStageConfig
    from embedrl.train.sft import SFTStageConfig

    cls = {"sft": SFTStageConfig, "egrl": EGRLStageConfig}[section]
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(profile_section("paper-2b", section)) <= names


def test_paper_profile_embedder_and_eval():
    config = build_config(EmbedderTrainConfig, "paper-2b", "embedder")
    assert config.deepspeed.endswith("zero2.json") and config.global_batch_size == 512
    assert build_config(EvalConfig, "paper-2b", "eval").max_new_tokens == 512


def test_numbers_written_as_text_become_numbers_or_name_the_field():
    from embedrl.train.egrl import EGRLStageConfig

    # PyYAML reads `2e-4` (no dot) as a string: the CLI's --set and a profile's YAML both reach build_config so
    egrl = build_config(EGRLStageConfig, "tiny", "egrl", output_dir="/tmp/x", learning_rate="2e-4",
                        max_steps="1e2", branch_min_p="1e-3", reward_weights=[0.05, 0.8, 0.2])
    assert egrl.learning_rate == 2e-4 and isinstance(egrl.learning_rate, float)
    assert egrl.max_steps == 100 and isinstance(egrl.max_steps, int)
    assert egrl.branch_min_p == 1e-3
    assert build_config(EmbedderTrainConfig, temperature=1).temperature == 1.0
    with pytest.raises(ValueError, match="EGRLStageConfig.learning_rate: expected a number, got 'fast'"):
        build_config(EGRLStageConfig, "tiny", "egrl", output_dir="/tmp/x", learning_rate="fast")
    with pytest.raises(ValueError, match="EGRLStageConfig.max_steps: expected a whole number"):
        build_config(EGRLStageConfig, "tiny", "egrl", output_dir="/tmp/x", max_steps="2.5")
