"""Evaluation: every task scored, metrics consistent with the predictions, trace statistics, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MICRO_PROFILE


@pytest.fixture(scope="module")
def oracle_result(prepared_small, trained_embedder):
    from embedrl.eval.evaluator import StoredTrace, evaluate

    return evaluate(prepared_small, trained_embedder, StoredTrace("gold", "oracle_cot"), max_queries=6)


def test_every_registry_task_is_scored(oracle_result):
    from embedrl.eval.registry import load_registry

    names = set(load_registry("minimmeb").names())
    scored = set(oracle_result["tasks"]) | set((oracle_result.get("uvrb") or {}).get("tasks", {}))
    assert scored == names
    assert 0 <= oracle_result["overall"] <= 100


def test_hit_at_1_equals_the_predictions(oracle_result):
    by_task: dict[str, list[bool]] = {}
    for p in oracle_result["predictions"]:
        by_task.setdefault(p["task"], []).append(p["hit@1"])
    for name, info in oracle_result["tasks"].items():
        if info["metric"] == "hit@1":
            assert info["score"] == pytest.approx(100 * np.mean(by_task[name]))


def test_gold_traces_hold_the_evidence_and_invent_nothing(oracle_result):
    stats = oracle_result["trace_stats"]
    assert stats["evidence_rate"] == 1.0
    assert stats["absent_rate"] == 0.0
    assert stats["evidence_rate_teacher_misses"] == 1.0


def test_the_teacher_holds_no_evidence_on_its_own_blind_spots(prepared_small, trained_embedder, oracle_result):
    """The rate on the teacher's misses is what a Reasoner learned beyond its teacher: 0 for the teacher itself,
    while its overall evidence rate sits between 0 and gold's."""
    from embedrl.eval.evaluator import StoredTrace, evaluate

    teacher = evaluate(prepared_small, trained_embedder, StoredTrace("teacher", "teacher_cot"), max_queries=6)
    stats = teacher["trace_stats"]
    assert stats["evidence_rate_teacher_misses"] == 0.0
    assert 0.0 < stats["evidence_rate"] < oracle_result["trace_stats"]["evidence_rate"]


def test_reasoner_traces_are_written_and_counted(prepared_small, trained_embedder, sft_reasoner):
    from embedrl.eval.evaluator import ReasonerTrace, evaluate
    from embedrl.eval.registry import tasks_for_data
    from embedrl.models.reasoner import Reasoner

    tasks = [t for t in tasks_for_data(prepared_small) if t.name in ("T2I-Marked", "VisDoc-Price")]
    source = ReasonerTrace(Reasoner.load(sft_reasoner.out_dir / "model", max_new_tokens=48), "sft_cot")
    result = evaluate(prepared_small, trained_embedder, source, tasks=tasks, max_queries=4)
    assert set(result["tasks"]) == {"T2I-Marked", "VisDoc-Price"}
    assert 0.0 <= result["trace_stats"]["trace_rate"] <= 1.0
    assert source.texts and all(isinstance(t, str) for t in source.texts.values())


def test_evaluate_command_writes_the_report(prepared_small, trained_embedder, tmp_path, capsys):
    from embedrl.cli import main

    code = main(["evaluate", "--profile", str(MICRO_PROFILE), "--data", str(prepared_small), "--embedder",
                 str(trained_embedder), "--variant", "no_cot", "--out", str(tmp_path), "--max-queries", "4"])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["variant"] == "no_cot"
    assert (tmp_path / "report.md").read_text().count("|") > 20
    assert "<img" in (tmp_path / "report.html").read_text()
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == sum(1 for line in lines if json.loads(line)["task"])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ablation_command_runs_every_stage_and_variant(tmp_path, capsys):
    from embedrl.cli import main
    from embedrl.train.sft import PERCEPTION_DONE

    out = tmp_path / "ablation"
    code = main(["experiment", "ablation", "--profile", str(MICRO_PROFILE), "--data-seed", "5", "--seeds", "0",
                 "--size", "small", "--out", str(out), "--perception-data-seeds", "6",
                 "--set", "sft.perception_steps=2", "--set", "sft.grounding_steps=2"])
    assert code == 0
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["settings"]["perception_data_seeds"] == [6]
    assert summary["settings"]["overrides"]["sft"]["perception_steps"] == 2
    assert (out / "perception-data" / "seed-6" / "manifest.json").exists()
    assert summary["settings"]["overrides"]["sft"]["perception_dir"] == str(out / "perception-base")
    assert (out / "perception-base" / "model" / PERCEPTION_DONE).exists()
    assert set(summary["variants"]) == {"no_cot", "teacher_cot", "sft_cot", "egrl_cot", "oracle_cot"}
    for variant in summary["variants"].values():
        assert 0 <= variant["overall"] <= 100 and len(variant["per_seed"]) == 1
    assert summary["pre_rl_check"][0]["groups"] > 0
    binding = summary["mark_binding"][0]
    assert set(binding) == {"sft", "egrl", "cold_start"} and binding["sft"]["sides"] == binding["egrl"]["sides"]
    assert binding["cold_start"]["sides"] >= binding["sft"]["sides"]  # not limited to groups EG-RL left out
    assert json.loads((out / "seed-0" / "mark_binding.json").read_text()) == binding
    assert len(summary["reward_by_step"][0]) == 3
    assert "| egrl_cot |" in (out / "ablation.md").read_text()
    assert summary["target"]["seeds"] == 1 and summary["target"]["met"] is None


def _variant(per_seed):
    import numpy as np

    return {"overall": float(np.mean(per_seed)), "overall_std": float(np.std(per_seed)), "per_seed": per_seed}


def test_ablation_target_reads_margins_against_both_seed_spreads():
    from embedrl.experiment import ablation_markdown, ablation_target

    # session 18's measured ablation (docs/STATUS.md): EG-RL within the noise of its cold start
    session18 = {"no_cot": _variant([12.3, 8.9, 11.3]), "sft_cot": _variant([60.7, 52.6, 60.2]),
                 "egrl_cot": _variant([62.0, 52.3, 59.5]), "oracle_cot": _variant([75.0, 66.0, 74.0])}
    target = ablation_target(session18)
    egrl, sft = target["margins"][1], target["margins"][0]
    assert (egrl["better"], egrl["worse"]) == ("egrl_cot", "sft_cot")
    assert egrl["per_seed"] == pytest.approx([1.3, -0.3, -0.7])
    assert egrl["margin"] == pytest.approx(0.1) and not egrl["clears_seed_std"] and not egrl["clears_paired_std"]
    assert sft["clears_seed_std"] and sft["clears_paired_std"]
    assert target["met"] is False
    assert target["egrl_share_of_oracle_gap"] == pytest.approx(0.1 / (71.667 - 57.833), abs=1e-3)

    # a consistent per-seed gain clears the paired spread while the Embedders' spread still hides it
    consistent = {**session18, "egrl_cot": _variant([63.7, 55.6, 63.2])}
    egrl = ablation_target(consistent)["margins"][1]
    assert egrl["margin"] == pytest.approx(3.0) and egrl["paired_std"] == pytest.approx(0.0, abs=1e-9)
    assert egrl["clears_paired_std"] and not egrl["clears_seed_std"]
    assert ablation_target(consistent)["met"] is False
    clear = {**session18, "egrl_cot": _variant([70.7, 62.6, 70.2])}
    assert ablation_target(clear)["met"] is True

    one_seed = {name: _variant(v["per_seed"][:1]) for name, v in session18.items()}
    assert ablation_target(one_seed)["met"] is None
    assert ablation_target({"no_cot": session18["no_cot"], "sft_cot": session18["sft_cot"]}) is None

    check = {"gap": 0.1, "within_group_std": 0.03, "passed": True}
    summary = {"profile": "tiny", "data_seed": 0, "seeds": [0, 1, 2], "pre_rl_check": [check] * 3,
               "reward_by_step": [[]] * 3, "seconds": 1.0, "target": target,
               "variants": {name: {**v, "by_modality": {}, "uvrb": None, "trace_stats": {}}
                            for name, v in session18.items()}}
    text = ablation_markdown(summary)
    assert "| egrl_cot - sft_cot | +0.1 | +1.3, -0.3, -0.7 |" in text and "Target met: no." in text
    assert "NOT BOUND" not in text

    # session 27's failed warm-up: the cold start's first marks at chance on 176 rl image sides
    few = {"sides": 4, "binding_rate": 0.25, "chance": 0.16}
    failed = {"sft": few, "egrl": few, "cold_start": {"sides": 176, "binding_rate": 0.148, "chance": 0.16}}
    bound = {**failed, "cold_start": {"sides": 176, "binding_rate": 0.79, "chance": 0.16}}
    text = ablation_markdown({**summary, "mark_binding": [failed, bound, {}]})
    assert "- seed 0: held out from EG-RL, SFT 25%, EG-RL 25% (4 sides); cold start on the last 64 groups 15% of " \
           "176 sides (chance 16%): **NOT BOUND**" in text
    assert "- seed 1: held out" in text and text.count("NOT BOUND") == 1 and "- seed 2: held out" not in text


def test_ablation_refuses_its_own_data_seed_as_perception_data(tmp_path):
    from embedrl.experiment import run_ablation

    with pytest.raises(ValueError, match="eval split"):
        run_ablation(str(MICRO_PROFILE), 3, [0], tmp_path / "ablation", size="small", perception_data_seeds=[4, 3])
    assert not (tmp_path / "ablation").exists()


def test_the_tiny_ablation_recipe_comes_from_the_profile_and_yields_to_overrides():
    from embedrl.config import EmbedderTrainConfig, EvalConfig, build_config
    from embedrl.experiment import ablation_recipe
    from embedrl.train.egrl import EGRLStageConfig
    from embedrl.train.sft import SFTStageConfig

    recipe, seeds = ablation_recipe("tiny")
    assert seeds == [1001, 1002]
    assert recipe["sft"]["back_references"] is True and recipe["egrl"]["exploration"] == "branch"
    for cls, section in ((SFTStageConfig, "sft"), (EGRLStageConfig, "egrl"), (EvalConfig, "eval"),
                         (EmbedderTrainConfig, "embedder")):  # every key is a real field of its stage
        build_config(cls, "tiny", section, **({"output_dir": "unused"} if section in ("sft", "egrl") else {}),
                     **recipe.get(section, {}))
    mine, none = ablation_recipe("tiny", {"egrl": {"exploration": "all"}, "eval": {"max_queries": 5}}, [])
    assert mine["egrl"] == {**recipe["egrl"], "exploration": "all"} and mine["eval"]["max_queries"] == 5
    assert none == []
    assert ablation_recipe(str(MICRO_PROFILE), {"sft": {"max_steps": 3}}) == ({"sft": {"max_steps": 3}}, [])


def test_set_options_become_profile_overrides():
    from embedrl.cli import _set_overrides

    assert _set_overrides(["sft.grounding_steps=800", "egrl.temperature=0.8", "sft.perception_data=a,b"]) == {
        "sft": {"grounding_steps": 800, "perception_data": "a,b"}, "egrl": {"temperature": 0.8}}
    with pytest.raises(SystemExit, match="SECTION.FIELD=VALUE"):
        _set_overrides(["grounding_steps=800"])
