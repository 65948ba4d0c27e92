"""The miniature ablation (the paper's Table 3/4 in small): every stage, five variants, several seeds.

Variants, all scored by the same Embedder on the eval split:
- no_cot: raw input; teacher_cot: the teacher's traces; sft_cot: the SFT Reasoner's traces;
- egrl_cot: the EG-RL Reasoner's traces; oracle_cot: gold traces (the upper bound).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from embedrl.config import EmbedderTrainConfig, EvalConfig, build_config, profile_section

log = logging.getLogger(__name__)
VARIANTS = ("no_cot", "teacher_cot", "sft_cot", "egrl_cot", "oracle_cot")


@dataclass
class SeedRun:
    seed: int
    embedder: Path
    sft: Path
    egrl: Path
    timings: dict[str, float]
    reward_history: list[dict]
    pre_rl_check: dict
    binding: dict = field(default_factory=dict)  # greedy first mark on the detail, before and after EG-RL


def _timed(timings: dict, name: str, fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = round(time.perf_counter() - started, 1)
    log.info("%s took %.1f s", name, timings[name])
    return result


def init_seed_models(profile: str, out: Path, seed: int) -> None:
    """A seed's initial Embedder and Reasoner under out/init (those not made yet), each from its own seed."""
    from embedrl.cli import ROLE_SEED_OFFSET
    from embedrl.models.factory import init_model_dir
    from embedrl.models.spec import load_model_specs

    specs = load_model_specs(profile)
    for role in ("embedder", "reasoner"):
        if not (out / "init" / role / "embedrl.json").exists():
            init_model_dir(specs[role], out / "init" / role, seed=seed + ROLE_SEED_OFFSET[role])


def train_seed_embedder(prepared: Path, out: Path, profile: str, seed: int, *, overrides: dict | None = None) -> None:
    """A seed's Embedder (LoRA per the profile's model spec) from out/init/embedder into out/embedder; a rerun
    resumes from its checkpoints."""
    from embedrl.models.spec import load_model_specs
    from embedrl.train.embedder import train_embedder

    spec = load_model_specs(profile)["embedder"]
    cfg = build_config(EmbedderTrainConfig, profile, "embedder", seed=seed, **(overrides or {}).get("embedder", {}))
    train_embedder(prepared, out / "init" / "embedder", out / "embedder", cfg,
                   lora=spec.to_dict() if spec.lora_r > 0 else None, progress=False)


def run_stages(prepared: Path, out: Path, profile: str, seed: int, *, overrides: dict | None = None) -> SeedRun:
    """Model init, Embedder, SFT, pre-RL check and EG-RL for one seed."""
    from embedrl.train.egrl import EGRLStageConfig, train_egrl
    from embedrl.train.sft import SFTStageConfig, train_sft

    overrides = overrides or {}
    timings: dict[str, float] = {}
    init = out / "init"
    init_seed_models(profile, out, seed)
    _timed(timings, "train_embedder", train_seed_embedder, prepared, out, profile, seed, overrides=overrides)
    sft_cfg = build_config(SFTStageConfig, profile, "sft", seed=seed, output_dir=str(out / "sft"),
                           **overrides.get("sft", {}))
    _timed(timings, "sft_cold_start", train_sft, prepared, init / "reasoner", out / "sft", sft_cfg)
    egrl_cfg = build_config(EGRLStageConfig, profile, "egrl", seed=seed, output_dir=str(out / "egrl"),
                            **overrides.get("egrl", {}))
    binding = {}
    if sft_cfg.grounded:  # does the trace's region mark point at the detail? (a failed warm-up shows here)
        # before EG-RL, so that a cold start whose marks do not point is reported before RL time is spent on it;
        # it has not seen the rl split: the last 64 groups, enough sides even when EG-RL uses almost every group
        binding["cold_start"] = _timed(timings, "binding_cold_start", mark_binding, prepared, out / "sft" / "model",
                                       egrl_cfg, n_groups=64, held_out=False)
        if unbound(binding["cold_start"]):
            log.warning("seed %d: the cold start's marks do not bind (%s of %d rl image sides on the dotted region, "
                        "chance %s): the perception warm-up did not learn the pointer", seed,
                        _pct(binding["cold_start"]["binding_rate"]), binding["cold_start"]["sides"],
                        _pct(binding["cold_start"]["chance"]))
        (out / "mark_binding.json").write_text(json.dumps(binding, indent=1) + "\n")  # kept if EG-RL fails
    check = _timed(timings, "pre_rl_check", pre_rl_check, prepared, out / "sft" / "model",
                   out / "embedder" / "model", egrl_cfg)
    (out / "pre_rl_check.json").write_text(json.dumps(check, indent=1) + "\n")
    result = _timed(timings, "eg_rl", train_egrl, prepared, out / "sft" / "model", out / "embedder" / "model",
                    out / "egrl", egrl_cfg)
    if sft_cfg.grounded:
        binding.update({stage: _timed(timings, f"binding_{stage}", mark_binding, prepared, out / stage / "model",
                                      egrl_cfg, n_groups=None) for stage in ("sft", "egrl")})
        (out / "mark_binding.json").write_text(json.dumps(binding, indent=1) + "\n")
    return SeedRun(seed, out / "embedder" / "model", out / "sft" / "model", out / "egrl" / "model", timings,
                   result.history, check, binding)


def unbound(binding: dict) -> bool:
    """A binding measurement on enough sides (20) whose rate is under twice chance: marks that do not point."""
    return binding.get("sides", 0) >= 20 and binding["binding_rate"] < 2 * binding["chance"]


def _rl_sampling(prepared: Path, reasoner_dir: Path, embedder_dir: Path, config, log_name: str):
    """What sampling RL groups needs: the EG-RL rows and sides, the media, the rewards and the Reasoner."""
    import torch

    from embedrl.data.sides import MediaStore
    from embedrl.models.embedder import load_embedder
    from embedrl.models.reasoner import Reasoner, ReasonerPrompt
    from embedrl.train.egrl import EGRLRewards, egrl_dataset

    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    prompt = ReasonerPrompt.of_model(reasoner_dir)
    rows, sides = egrl_dataset(prepared, pairs_per_step=config.pairs_per_step, prompt=prompt, seed=config.seed)
    store = MediaStore(prepared)
    embedder, inputs = load_embedder(embedder_dir)
    rewards = EGRLRewards(sides, store, embedder, inputs, config, Path(prepared) / log_name, prompt)
    return rows, sides, store, rewards, Reasoner.load(reasoner_dir, max_new_tokens=config.max_completion_length)


def _sample_group(reasoner, rewards, group: list[dict], refs: list, store, config) -> tuple[list[str], dict]:
    """G sampled rollouts per side of one RL group (at the RL temperature) and their reward components."""
    g = config.num_generations
    samples = reasoner.generate([r for r in refs for _ in range(g)], [r["role"] for r in group for _ in range(g)],
                                store, do_sample=True, temperature=config.temperature, min_p=config.min_p,
                                batch_size=128)
    columns = {k: [r[k] for r in group for _ in range(g)] for k in ("side", "pair_index", "role")}
    return samples, rewards._compute(samples, columns)


def _has_fine_evidence(scene: dict | None) -> bool:
    """A side whose disambiguating evidence is a fine detail: a marked image or a flash video."""
    kind = (scene or {}).get("type")
    return kind == "video" or (kind == "image" and scene.get("marked") is not None)


def pre_rl_check(prepared: Path, reasoner_dir: Path, embedder_dir: Path, config, *, n_groups: int = 16) -> dict:
    """Is there something for RL to learn? reward(gold) - reward(teacher) against the spread in a group.

    Rewards use the EG-RL definition on RL groups: gold and teacher traces as single rollouts, and
    G sampled rollouts of the SFT Reasoner (at the RL temperature) for the within-group spread.
    """
    from embedrl.tcot import render
    from embedrl.tcot.teachers import side_gold_tcot

    rows, sides, store, rewards, reasoner = _rl_sampling(prepared, reasoner_dir, embedder_dir, config,
                                                         ".pre_rl_rewards.jsonl")
    teacher_text = _teacher_texts(prepared)
    per_group = 2 * config.pairs_per_step
    weights = np.array(config.reward_weights)
    gold, teacher, spread, formats = [], [], [], []
    for g in range(min(n_groups, len(rows) // per_group)):
        group = rows[g * per_group:(g + 1) * per_group]
        columns = {k: [r[k] for r in group] for k in ("side", "pair_index", "role")}
        refs = [sides[r["side"]] for r in group]
        gold_texts = [render(side_gold_tcot(ref)) for ref in refs]
        gold.append(_total(rewards._compute(gold_texts, columns), weights).mean())
        teacher.append(_total(rewards._compute([teacher_text.get(_key(r), "") for r in refs], columns), weights).mean())
        samples, components = _sample_group(reasoner, rewards, group, refs, store, config)
        formats.append(float(np.mean(components["format"])))
        totals = _total(components, weights).reshape(per_group, config.num_generations)
        spread.append(float(totals.std(axis=1).mean()))
    gap = float(np.mean(gold) - np.mean(teacher))
    within = float(np.mean(spread))
    sample_format = float(np.mean(formats))
    # A spread of zero is no signal at all (e.g. every sample malformed), not an easy pass.
    return {"groups": len(gold), "reward_gold": float(np.mean(gold)), "reward_teacher": float(np.mean(teacher)),
            "gap": gap, "within_group_std": within, "sample_format_rate": sample_format,
            "passed": bool(gap > within > 0 and sample_format > 0)}


def _held_out_rows(prepared: Path, prompt, config, n_groups: int | None) -> tuple[list[dict], list]:
    """The EG-RL rows (and sides) of the last `n_groups` groups in `egrl_dataset`'s order, which must lie
    past the groups EG-RL trains on (one per micro-batch: `max_steps` x `gradient_accumulation_steps`);
    None: up to 64 of those there are."""
    rows, sides, per_group, total_groups = _rl_groups(prepared, prompt, config)
    trained = config.max_steps * config.gradient_accumulation_steps  # one group per micro-batch
    if n_groups is None:
        n_groups = max(0, min(64, total_groups - trained))
    if total_groups - n_groups < trained:
        raise ValueError(f"only {total_groups} RL groups: cannot hold out {n_groups} past the {trained} "
                         "that EG-RL trains on")
    return rows[(total_groups - n_groups) * per_group:total_groups * per_group], sides


def _last_rows(prepared: Path, prompt, config, n_groups: int) -> tuple[list[dict], list]:
    """The EG-RL rows (and sides) of the last `n_groups` groups in `egrl_dataset`'s order, trained on or not."""
    rows, sides, per_group, total_groups = _rl_groups(prepared, prompt, config)
    first = max(0, total_groups - n_groups)
    return rows[first * per_group:total_groups * per_group], sides


def _rl_groups(prepared: Path, prompt, config) -> tuple[list[dict], list, int, int]:
    """The EG-RL rows and sides in `egrl_dataset`'s order, the rows per group and the number of whole groups."""
    from embedrl.train.egrl import egrl_dataset

    rows, sides = egrl_dataset(prepared, pairs_per_step=config.pairs_per_step, prompt=prompt, seed=config.seed)
    per_group = 2 * config.pairs_per_step
    return rows, sides, per_group, len(rows) // per_group


def rl_holdout(prepared: Path, reasoner_dir: Path | None, embedder_dir: Path, config, *,
               n_groups: int | None = 64, source: str = "reasoner", per_side: bool = False) -> dict:
    """Greedy traces of a Reasoner on RL groups that EG-RL does not train on: what RL settings are tuned on.

    EG-RL takes its groups in the order of `egrl_dataset`, one per step; the last `n_groups` of that
    order are held out (they must lie past `config.max_steps`; None: up to 64 of those). Per group of B
    pairs, each query ranks the B targets and each target the B queries (Hit@1, ties against the positive),
    with the Reasoner's greedy trace on both sides; plus the mean outcome reward, the format rate and the
    evidence rate.
    `source` "teacher" or "gold" scores those traces instead (reference points; `reasoner_dir` unused).
    `per_side` adds "sides": per held-out side in group order, its group, modality, role, trace text, parsed
    cue (None: malformed) and hit.
    """
    import torch

    from embedrl.data.sides import MediaStore
    from embedrl.models.embedder import load_embedder
    from embedrl.models.reasoner import Reasoner, ReasonerPrompt
    from embedrl.tcot import render
    from embedrl.tcot.teachers import names_disambiguating_evidence, side_gold_tcot
    from embedrl.train.egrl import rank_in_groups

    if source == "reasoner" and reasoner_dir is None:
        raise ValueError("rl_holdout: pass a Reasoner directory to score its traces (or source='teacher'/'gold')")
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    prompt = ReasonerPrompt.of_model(reasoner_dir) if source == "reasoner" else ReasonerPrompt()
    held, sides = _held_out_rows(prepared, prompt, config, n_groups)
    n_groups = len(held) // (2 * config.pairs_per_step)
    store = MediaStore(prepared)
    refs = [sides[r["side"]] for r in held]
    if source == "reasoner":
        texts = Reasoner.load(reasoner_dir, max_new_tokens=config.max_completion_length).generate(
            refs, [r["role"] for r in held], store, batch_size=128)
    elif source == "teacher":
        teacher = _teacher_texts(prepared)
        texts = [teacher.get(_key(r), "") for r in refs]
    elif source == "gold":
        texts = [render(side_gold_tcot(r)) for r in refs]
    else:
        raise ValueError(f"unknown trace source {source!r}: reasoner, teacher or gold")
    embedder, inputs = load_embedder(embedder_dir)
    ranked = rank_in_groups(refs, texts, store, embedder, inputs, config)
    traces, side_hits = ranked.traces, ranked.acc.astype(bool)  # per row: rows run q0, t0, q1, t1, ...
    size = 2 * config.pairs_per_step
    group_modality = [_group_modality(refs[g * size:(g + 1) * size]) for g in range(n_groups)]
    hits_by_modality = {}
    for index in range(n_groups):
        hits_by_modality.setdefault(group_modality[index], []).extend(ranked.acc[index * size:(index + 1) * size])
    fine = [(t, r) for t, r in zip(traces, refs, strict=True) if t is not None and _has_fine_evidence(r.scene)]

    def evidence(sides) -> float | None:
        return float(np.mean([names_disambiguating_evidence(t, r.scene) for t, r in sides])) if sides else None

    by_modality = {m: {"sides": len(h), "hit_at_1": float(np.mean(h)),
                       "evidence_rate": evidence([(t, r) for t, r in fine if _MODALITY.get(r.scene["type"]) == m])}
                   for m, h in sorted(hits_by_modality.items())}
    result = {"groups": n_groups, "hit_at_1": float(np.mean(ranked.acc)), "outcome": float(np.mean(ranked.outcome)),
              "format_rate": float(np.mean([t is not None for t in traces])), "evidence_rate": evidence(fine),
              "by_modality": by_modality}
    if per_side:
        result["sides"] = [{"group": row // size, "modality": group_modality[row // size], "role": held[row]["role"],
                            "media_kind": refs[row].media_kind, "trace": texts[row],
                            "cue": traces[row].cue if traces[row] is not None else None, "hit": bool(side_hits[row])}
                           for row in range(len(held))]
    return result


_MODALITY = {"image": "image", "crop": "image", "video": "video", "page": "visdoc"}


def _group_modality(refs) -> str:
    """A group's benchmark modality (as the task registry names it), from the scene of its media sides."""
    kinds = [_MODALITY.get((r.scene or {}).get("type")) for r in refs]
    return next((k for k in kinds if k), "text")


def mark_binding(prepared: Path, reasoner_dir: Path, config, *, n_groups: int | None = 64,
                 held_out: bool = True) -> dict:
    """How often a grounded Reasoner's greedy trace points at the detail: on the held-out RL groups of
    `rl_holdout` (`n_groups=None`: up to 64 of those past EG-RL's steps), the image sides whose scene marks
    exactly one region with a detail (MiniMMEB's dot), and the share whose first region mark (`#k`, as
    written) is that region; `chance` is the mean of 1 / regions over those sides. `held_out=False` takes the
    last `n_groups` (None: 64) groups whether EG-RL trains on them or not: for a Reasoner that has not seen the
    rl split (a cold start), whose binding then rests on enough sides even when EG-RL uses almost every group."""
    import torch

    from embedrl.data.sides import MediaStore
    from embedrl.models.reasoner import Reasoner, ReasonerPrompt, side_regions
    from embedrl.tcot.regions import first_mark
    from embedrl.train.perception import single_detail

    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    prompt = ReasonerPrompt.of_model(reasoner_dir)
    if not prompt.grounded:
        raise ValueError(f"mark_binding: the Reasoner in {reasoner_dir} is not grounded (it writes no region marks)")
    if held_out:
        held, sides = _held_out_rows(prepared, prompt, config, n_groups)
    else:
        held, sides = _last_rows(prepared, prompt, config, 64 if n_groups is None else n_groups)
    picked = [(r, sides[r["side"]]) for r in held if sides[r["side"]].media_kind == "image"]
    picked = [(r, ref, found[1]) for r, ref in picked if (found := single_detail(ref.scene or {})) is not None]
    if not picked:
        return {"sides": 0, "binding_rate": None, "chance": None}
    texts = Reasoner.load(reasoner_dir, max_new_tokens=config.max_completion_length).generate(
        [ref for _, ref, _ in picked], [r["role"] for r, _, _ in picked], MediaStore(prepared), batch_size=128,
        resolve=False)
    hits = [first_mark(t) == mark for t, (_, _, mark) in zip(texts, picked, strict=True)]
    chance = np.mean([1 / len(side_regions(ref, prompt)) for _, ref, _ in picked])
    return {"sides": len(hits), "binding_rate": float(np.mean(hits)), "chance": float(chance)}


def reward_alignment(prepared: Path, reasoner_dir: Path, embedder_dir: Path, config, *, n_groups: int = 16,
                     first_group: int = 0) -> dict:
    """Does the EG-RL reward favour the rollouts that hold the disambiguating evidence?

    GRPO only learns what the reward separates within a group. For `n_groups` RL groups (from
    `first_group` in the EG-RL order) the SFT Reasoner samples G rollouts per side at the RL temperature;
    on each side with a fine-evidence scene (a marked image, a flash video) and with both kinds of
    well-formed rollout, it compares the rollouts that name the evidence against those that do not:
    the mean difference of each reward component and of the weighted total, and of the group-standardised
    advantage GRPO would give them. Positive: the reward pushes toward evidence; near zero: it cannot.
    """
    from embedrl.tcot.teachers import names_disambiguating_evidence
    from embedrl.train.egrl import _parse

    rows, sides, store, rewards, reasoner = _rl_sampling(prepared, reasoner_dir, embedder_dir, config,
                                                         ".reward_alignment.jsonl")
    weights, g, per_group = np.array(config.reward_weights), config.num_generations, 2 * config.pairs_per_step
    names = ("format", "process", "outcome", "total", "advantage")
    gaps: dict[str, list[float]] = {name: [] for name in names}
    evidence, fine_sides = [], 0
    for index in range(first_group, min(first_group + n_groups, len(rows) // per_group)):
        group = rows[index * per_group:(index + 1) * per_group]
        refs = [sides[r["side"]] for r in group]
        samples, parts = _sample_group(reasoner, rewards, group, refs, store, config)
        values = {k: np.array(parts[k]).reshape(per_group, g) for k in ("format", "process", "outcome")}
        values["total"] = _total(parts, weights).reshape(per_group, g)
        values["advantage"] = (values["total"] - values["total"].mean(1, keepdims=True)) / (
            values["total"].std(1, keepdims=True) + 1e-4)
        for s, ref in enumerate(refs):
            scene = ref.scene or {}
            if not _has_fine_evidence(scene):
                continue
            fine_sides += 1
            traces = [_parse(t, ref, store) for t in samples[s * g:(s + 1) * g]]
            holds = np.array([t is not None and names_disambiguating_evidence(t, scene) for t in traces])
            formed = np.array([t is not None for t in traces])
            evidence += holds[formed].tolist()
            if holds.any() and (formed & ~holds).any():
                for name in names:
                    gaps[name].append(float(values[name][s][holds].mean() - values[name][s][formed & ~holds].mean()))
    return {"groups": n_groups, "fine_evidence_sides": fine_sides, "mixed_sides": len(gaps["total"]),
            "evidence_rate": float(np.mean(evidence)) if evidence else None,
            "with_minus_without": {name: (float(np.mean(v)) if v else None) for name, v in gaps.items()},
            "with_minus_without_sem": {name: (float(np.std(v) / np.sqrt(len(v))) if len(v) > 1 else None)
                                       for name, v in gaps.items()}}


def _total(components: dict[str, list[float]], weights: np.ndarray) -> np.ndarray:
    return (weights[0] * np.array(components["format"]) + weights[1] * np.array(components["process"])
            + weights[2] * np.array(components["outcome"]))


def _key(ref) -> tuple:
    return (ref.media_path, ref.clean_text)


def _teacher_texts(prepared: Path) -> dict[tuple, str]:
    from embedrl.train.embedder import load_pairs

    texts = {}
    for pairs in load_pairs(prepared, "rl").values():
        for p in pairs:
            texts[_key(p.query)] = p.query_tcot
            texts[_key(p.positive)] = p.positive_tcot
    return texts


# ---------------------------------------------------------------------------------------- ablation
def evaluate_variants(prepared: Path, run: SeedRun, eval_cfg: EvalConfig, out: Path, variants=VARIANTS) -> dict:
    from embedrl.eval.evaluator import NoTrace, ReasonerTrace, StoredTrace, evaluate
    from embedrl.eval.report import write_report
    from embedrl.models.reasoner import Reasoner

    results = {}
    for variant in variants:
        if variant == "no_cot":
            source = NoTrace()
        elif variant == "teacher_cot":
            source = StoredTrace("teacher", variant)
        elif variant == "oracle_cot":
            source = StoredTrace("gold", variant)
        else:
            reasoner_dir = run.sft if variant == "sft_cot" else run.egrl
            reasoner = Reasoner.load(reasoner_dir, max_new_tokens=eval_cfg.max_new_tokens)
            source = ReasonerTrace(reasoner, variant, batch_size=eval_cfg.reasoner_batch_size,
                                   cache_dir=eval_cfg.cache_dir or None)
        started = time.perf_counter()
        result = evaluate(prepared, run.embedder, source, registry=eval_cfg.registry, batch_size=eval_cfg.batch_size,
                          max_queries=eval_cfg.max_queries or None, cache_dir=eval_cfg.cache_dir or None)
        run.timings[f"eval_{variant}"] = round(time.perf_counter() - started, 1)
        predictions = result.pop("predictions")
        write_report(out / variant, result, title=f"MiniMMEB, {variant}, seed {run.seed}", predictions=predictions)
        results[variant] = result
    return results


ABLATION_SECTIONS = ("embedder", "sft", "egrl", "eval")


def ablation_recipe(profile: str, overrides: dict | None = None,
                    perception_data_seeds: list[int] | None = None) -> tuple[dict, list[int]]:
    """The ablation's stage settings and perception data seeds: the profile's `ablation` section (its
    `embedder` / `sft` / `egrl` / `eval` keys and `perception_data_seeds`) under the caller's overrides;
    `perception_data_seeds=None` takes the profile's, a list (even empty) replaces them."""
    recipe = profile_section(profile, "ablation")
    unknown = sorted(set(recipe) - {*ABLATION_SECTIONS, "perception_data_seeds"})
    if unknown:
        raise ValueError(f"profile {profile}: unknown key(s) {unknown} in section 'ablation'; known: "
                         f"{[*ABLATION_SECTIONS, 'perception_data_seeds']}")
    overrides = overrides or {}
    merged = {name: {**(recipe.get(name) or {}), **overrides.get(name, {})}
              for name in {*ABLATION_SECTIONS, *overrides}}
    if perception_data_seeds is None:
        perception_data_seeds = recipe.get("perception_data_seeds") or []
    return {name: values for name, values in merged.items() if values}, list(perception_data_seeds)


def run_ablation(profile: str, data_seed: int, seeds: list[int], out: str | Path, *, size: str = "default",
                 overrides: dict | None = None, variants=VARIANTS,
                 perception_data_seeds: list[int] | None = None) -> dict:
    from embedrl.data.minimmeb import generate
    from embedrl.data.prepare import prepare

    overrides, perception_data_seeds = ablation_recipe(profile, overrides, perception_data_seeds)
    if data_seed in perception_data_seeds:
        raise ValueError(f"perception data seed {data_seed} is the ablation's own data seed: its eval split "
                         "would be trained on")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = out / "data"
    generate(data, seed=data_seed, size=size, progress=False)
    prepared = out / "prepared"
    prepare(data, prepared)
    if perception_data_seeds:  # more scenes for the perception warm-up; never read by any evaluation
        roots = [out / "perception-data" / f"seed-{s}" for s in perception_data_seeds]
        for s, root in zip(perception_data_seeds, roots, strict=True):
            if not (root / "manifest.json").exists():
                generate(root, seed=s, size=size, progress=False)
        overrides["sft"] = {**overrides.get("sft", {}), "perception_data": ",".join(map(str, roots))}
    sft_recipe = overrides.get("sft", {})
    if sft_recipe.get("perception_steps") or sft_recipe.get("grounding_steps"):
        # The warm-up stands in for the pretraining of a paper-scale Reasoner, which every seed starts from:
        # trained once (with the first seed), shared by the others.
        overrides["sft"] = {"perception_dir": str(out / "perception-base"), **sft_recipe}
    eval_overrides = {"cache_dir": str(out / "eval-cache"),  # a rerun of the ablation reuses traces and vectors
                      **overrides.get("eval", {})}
    eval_cfg = build_config(EvalConfig, profile, "eval", **eval_overrides)
    per_seed: dict[str, list[dict]] = {v: [] for v in variants}
    runs = []
    for seed in seeds:
        seed_dir = out / f"seed-{seed}"
        run = run_stages(prepared, seed_dir, profile, seed, overrides=overrides)
        results = evaluate_variants(prepared, run, eval_cfg, seed_dir / "eval", variants)
        for variant, result in results.items():
            per_seed[variant].append(result)
        runs.append(run)
    summary = _summarise(per_seed, runs, profile, data_seed, time.perf_counter() - started)
    summary["settings"] = {"overrides": overrides, "perception_data_seeds": list(perception_data_seeds)}
    (out / "ablation.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "ablation.md").write_text(ablation_markdown(summary))
    return summary


def _summarise(per_seed: dict[str, list[dict]], runs: list[SeedRun], profile: str, data_seed: int,
               seconds: float) -> dict:
    variants = {}
    for variant, results in per_seed.items():
        overall = [r["overall"] for r in results]
        modalities = sorted({m for r in results for m in r["by_modality"]})
        variants[variant] = {
            "overall": float(np.mean(overall)),
            "overall_std": float(np.std(overall)),
            "by_modality": {m: float(np.mean([r["by_modality"][m] for r in results])) for m in modalities},
            "per_seed": overall,
            "uvrb": float(np.mean([r["uvrb"]["mean"] for r in results])) if results[0].get("uvrb") else None,
            "trace_stats": {k: float(np.mean([r["trace_stats"].get(k, np.nan) for r in results]))
                            for k in results[0]["trace_stats"]},
        }
    return {"profile": profile, "data_seed": data_seed, "seeds": [r.seed for r in runs], "variants": variants,
            "target": ablation_target(variants),
            "pre_rl_check": [r.pre_rl_check for r in runs], "mark_binding": [r.binding for r in runs],
            "reward_by_step": [r.reward_history for r in runs],
            "timings": [r.timings for r in runs], "seconds": round(seconds, 1)}


TARGET_ORDER = ("no_cot", "sft_cot", "egrl_cot")  # the target: each variant over the one before it


def ablation_target(variants: dict[str, dict]) -> dict | None:
    """The target of the ablation, checked on the per-seed overall scores: egrl_cot > sft_cot > no_cot, each
    margin larger than twice the seed std, and the share of the gap from sft_cot to oracle_cot that EG-RL closes.

    "The seed std" is read two ways, both reported: `seed_std`, the larger of the two variants' own spreads over
    seeds (it holds the Embedder's seed-to-seed spread, which both variants of a seed share), and `paired_std`,
    the spread of the per-seed margin (the same Embedder scores both variants of a seed). Stds are over seeds
    with ddof 0, as `overall_std`. `met` needs every margin to clear both; it is None with fewer than two seeds,
    where there is no spread to judge."""
    if not all(name in variants for name in TARGET_ORDER):
        return None
    seeds = len(variants["sft_cot"]["per_seed"])
    margins = []
    for worse, better in pairwise(TARGET_ORDER):
        diffs = np.subtract(variants[better]["per_seed"], variants[worse]["per_seed"])
        margin = float(diffs.mean())
        seed_std = max(variants[better]["overall_std"], variants[worse]["overall_std"])
        paired_std = float(diffs.std())
        margins.append({"better": better, "worse": worse, "margin": margin, "per_seed": diffs.tolist(),
                        "seed_std": seed_std, "paired_std": paired_std,
                        "clears_seed_std": margin > 2 * seed_std, "clears_paired_std": margin > 2 * paired_std})
    gap_closed = None
    if "oracle_cot" in variants:
        gap = variants["oracle_cot"]["overall"] - variants["sft_cot"]["overall"]
        if gap > 0:
            gap_closed = (variants["egrl_cot"]["overall"] - variants["sft_cot"]["overall"]) / gap
    met = None
    if seeds >= 2:
        met = all(m["clears_seed_std"] and m["clears_paired_std"] for m in margins)
    return {"margins": margins, "egrl_share_of_oracle_gap": gap_closed, "seeds": seeds, "met": met}


def _target_markdown(target: dict | None) -> list[str]:
    if target is None:
        return []
    lines = ["", "Target: egrl_cot > sft_cot > no_cot, each margin over twice the seed std (of the variants, and "
                 "of the per-seed margin):", "",
             "| margin | mean | per seed | 2 x seed std | clears | 2 x std of the margin | clears |",
             "|---|---|---|---|---|---|---|"]
    for m in target["margins"]:
        per_seed = ", ".join(f"{d:+.1f}" for d in m["per_seed"])
        lines.append(f"| {m['better']} - {m['worse']} | {m['margin']:+.1f} | {per_seed} | {2 * m['seed_std']:.1f} | "
                     f"{_yes(m['clears_seed_std'])} | {2 * m['paired_std']:.1f} | {_yes(m['clears_paired_std'])} |")
    share = target["egrl_share_of_oracle_gap"]
    met = "- (one seed: no spread to judge)" if target["met"] is None else _yes(target["met"])
    lines += ["", f"EG-RL closes {'-' if share is None else f'{100 * share:+.1f}%'} of the gap from sft_cot to "
                  f"oracle_cot. Target met: {met}."]
    return lines


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def ablation_markdown(summary: dict) -> str:
    lines = [f"# Miniature ablation (profile {summary['profile']}, data seed {summary['data_seed']}, "
             f"seeds {summary['seeds']})", "",
             "| variant | overall | std | image | video | visdoc | UVRB | trace holds the evidence | ... where the teacher "
             "misses it | names something absent |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in summary["variants"].items():
        m = v["by_modality"]
        ts = v["trace_stats"]
        lines.append(
            f"| {name} | {v['overall']:.1f} | {v['overall_std']:.1f} | {m.get('image', float('nan')):.1f} | "
            f"{m.get('video', float('nan')):.1f} | {m.get('visdoc', float('nan')):.1f} | "
            f"{v['uvrb'] if v['uvrb'] is None else round(v['uvrb'], 1)} | "
            f"{_pct(ts.get('evidence_rate'))} | {_pct(ts.get('evidence_rate_teacher_misses'))} | "
            f"{_pct(ts.get('absent_rate'))} |")
    lines += _target_markdown(summary.get("target"))
    lines += ["", "Pre-RL check (reward of gold minus teacher traces vs. the reward spread within a group):", ""]
    for check, seed in zip(summary["pre_rl_check"], summary["seeds"], strict=True):
        lines.append(f"- seed {seed}: gap {check['gap']:.3f}, within-group std {check['within_group_std']:.3f}, "
                     f"format rate of the sampled rollouts {check.get('sample_format_rate', float('nan')):.2f}: "
                     f"{'passed' if check['passed'] else 'FAILED'}")
    bindings = summary.get("mark_binding") or []
    if any(bindings):
        lines += ["", "Mark binding (RL images with one detailed region: greedy first mark on it; chance is about "
                      "1 / regions):", ""]
        for binding, seed in zip(bindings, summary["seeds"], strict=True):
            if binding:
                lines.append(f"- seed {seed}: held out from EG-RL, SFT {_pct(binding['sft']['binding_rate'])}, EG-RL "
                             f"{_pct(binding['egrl']['binding_rate'])} ({binding['sft']['sides']} sides)"
                             + _cold_start_binding(binding.get("cold_start")))
    lines += ["", "Reward by step (EG-RL, mean over each generation batch, one RL group; with gradient accumulation "
                  "an optimizer step takes several; every 10th):", ""]
    for history, seed in zip(summary["reward_by_step"], summary["seeds"], strict=True):
        steps = ", ".join(f"{i + 1}: {h['outcome']:.3f}/{h['process']:.2f}/{h['format_rate']:.2f}"
                          for i, h in enumerate(history) if i % 10 == 0 or i == len(history) - 1)
        lines.append(f"- seed {seed} (outcome/process/format): {steps}")
    lines += ["", f"Wall time: {summary['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _cold_start_binding(binding: dict | None) -> str:
    if not binding:
        return ""
    text = (f"; cold start on the last 64 groups {_pct(binding['binding_rate'])} of {binding['sides']} sides "
            f"(chance {_pct(binding['chance'])})")
    return text + (": **NOT BOUND**, the warm-up did not learn the pointer" if unbound(binding) else "")


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.0f}%"
