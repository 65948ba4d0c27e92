"""The `embedrl` command.

Only argparse is imported at start-up: every handler imports the library module it needs, so that
`embedrl --help` stays fast (torch, transformers and mlflow each take seconds to import).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]

GROUP_HELP = {
    "data": "generate, validate and inspect data sets",
    "model": "build and inspect models",
    "train": "training stages (Embedder, SFT cold start, EG-RL)",
    "evaluate": "evaluation on MMEB-V2 / UVRB style tasks",
    "registry": "MLflow model registry: register, promote, roll back",
    "pipeline": "compile, run locally, or submit the Kubeflow pipeline",
    "experiment": "experiments made of several stages (ablations)",
}


# ----------------------------------------------------------------------------------------- handlers
def _data_generate(args: argparse.Namespace) -> int:
    from embedrl.data.minimmeb import generate

    summary = generate(args.out, seed=args.seed, size=args.size, progress=not args.quiet)
    print(summary.describe())
    if args.check_dvc:
        from embedrl.data.versioning import DataVersionMismatch, check_matches_dvc

        try:
            found = check_matches_dvc(args.out, args.check_dvc)
        except DataVersionMismatch as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"matches {args.check_dvc}: {found.md5} ({found.nfiles} files)")
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from embedrl.data.validate import validate_path

    report = validate_path(args.path, quarantine=args.quarantine, data_root=args.data_root)
    print(report.describe())
    return 0 if report.ok else 1


def _data_convert(args: argparse.Namespace) -> int:
    from embedrl.data.mmeb_train import UnknownTrainSetError
    from embedrl.data.train_converters import ConversionError, convert_training_set

    try:
        result = convert_training_set(args.set, args.source, args.out, frames_dir=args.frames,
                                      quarantine=args.quarantine)
    except (ConversionError, UnknownTrainSetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.describe())
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    from embedrl.data.prepare import prepare

    summary = prepare(args.data, args.out, filter_judge=None if args.no_filter else "label")
    print(summary.describe())
    return 0


def _stage_overrides(args: argparse.Namespace, *names: str) -> dict:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _train_embedder(args: argparse.Namespace) -> int:
    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.models.spec import load_model_specs
    from embedrl.train.embedder import train_embedder

    config = build_config(EmbedderTrainConfig, args.profile, "embedder", **_stage_overrides(args, "max_steps", "seed", "deepspeed"))
    spec = load_model_specs(args.profile)["embedder"]
    result = train_embedder(args.data, args.model, args.out, config, lora=spec.to_dict() if spec.lora_r > 0 else None)
    print(f"embedder: {result.steps} steps, loss {result.first_loss:.3f} -> {result.last_loss:.3f}, "
          f"{result.seconds:.0f} s -> {result.out_dir / 'model'}")
    return 0


def _train_sft(args: argparse.Namespace) -> int:
    from embedrl.config import build_config
    from embedrl.train.sft import SFTStageConfig, train_sft

    config = build_config(SFTStageConfig, args.profile, "sft", output_dir=args.out,
                          **_stage_overrides(args, "max_steps", "seed"))
    result = train_sft(args.data, args.model, args.out, config)
    print(f"sft: loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, {result.seconds:.0f} s -> {args.out}/model")
    return 0


def _train_egrl(args: argparse.Namespace) -> int:
    from embedrl.config import build_config
    from embedrl.train.egrl import EGRLStageConfig, train_egrl

    config = build_config(EGRLStageConfig, args.profile, "egrl", output_dir=args.out,
                          **_stage_overrides(args, "max_steps", "seed", "judge"))
    result = train_egrl(args.data, args.reasoner, args.embedder, args.out, config)
    first, last = result.history[0], result.history[-1]
    print(f"eg-rl: {len(result.history)} steps, outcome {first['outcome']:.3f} -> {last['outcome']:.3f}, "
          f"process {first['process']:.2f} -> {last['process']:.2f}, {result.seconds:.0f} s -> {args.out}/model")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from embedrl.config import EvalConfig, build_config
    from embedrl.eval.benchmarks import (
        comparison_rows,
        evaluate_benchmark,
        reference_scores,
        write_benchmark_files,
    )
    from embedrl.eval.report import write_report

    config = build_config(EvalConfig, args.profile, "eval", **_stage_overrides(args, "max_queries", "cache_dir"))
    source = _trace_source(args, config)
    benchmark = args.benchmark or config.registry
    out = Path(args.out)
    result = evaluate_benchmark(args.data, args.embedder, source, benchmark=benchmark,
                                task_names=args.tasks.split(",") if args.tasks else None,
                                quarantine_dir=out if benchmark != "minimmeb" else None,
                                batch_size=config.batch_size, max_queries=config.max_queries or None,
                                cache_dir=config.cache_dir or None)
    predictions = result.pop("predictions")
    label = f"this run ({source.name})"
    extra = {}
    if result["benchmark"] in ("mmeb-v2", "uvrb"):
        extra["Against published numbers"] = comparison_rows(result, reference_scores(result["benchmark"]),
                                                              label=label)
    paths = write_report(out, result, title=f"embedrl evaluation ({source.name}, {result['benchmark']})",
                         predictions=predictions, extra_tables=extra)
    paths.update(write_benchmark_files(out, result, model_name=Path(args.embedder).name, label=label))
    print(_headline(source.name, result))
    print(f"report: {paths['markdown']}")
    return 0


def _trace_source(args: argparse.Namespace, config):
    from embedrl.eval.evaluator import NoTrace, ReasonerTrace, StoredTrace

    if args.reasoner:
        from embedrl.models.reasoner import Reasoner

        return ReasonerTrace(Reasoner.load(args.reasoner, max_new_tokens=config.max_new_tokens),
                             args.variant or "reasoner_cot", batch_size=config.reasoner_batch_size,
                             cache_dir=config.cache_dir or None)
    if args.variant in (None, "no_cot"):
        return NoTrace()
    return StoredTrace({"teacher_cot": "teacher", "oracle_cot": "gold"}[args.variant], args.variant)


def _headline(variant: str, result: dict) -> str:
    """One line: the benchmark mean (or why there is none) and the per-modality means."""
    coverage = result.get("coverage") or {}
    uvrb = result.get("uvrb") or {}
    parts = [f"{variant}:"]
    if not coverage.get("complete", True):
        parts.append(f"PARTIAL {coverage['n_evaluated']}/{coverage['n_expected']} {coverage['benchmark']} tasks "
                     f"(benchmark mean not reported; {len(coverage['missing'])} missing)")
    elif result.get("overall") is not None:
        parts.append(f"overall {result['overall']:.1f}")
    if uvrb.get("mean") is not None:
        parts.append(f"uvrb {uvrb['mean']:.1f}")
    parts += [f"{m} {v:.1f}" for m, v in result.get("by_modality", {}).items()]
    return " ".join(parts)


def _experiment_ablation(args: argparse.Namespace) -> int:
    from embedrl.experiment import ablation_markdown, run_ablation

    overrides = _set_overrides(args.set)
    if args.eval_queries is not None:
        overrides.setdefault("eval", {})["max_queries"] = args.eval_queries
    summary = run_ablation(args.profile, args.data_seed, args.seeds, args.out, size=args.size, overrides=overrides,
                           perception_data_seeds=args.perception_data_seeds)
    print(ablation_markdown(summary))
    return 0


def _experiment_rl_holdout(args: argparse.Namespace) -> int:
    import json

    from embedrl.config import build_config
    from embedrl.experiment import rl_holdout
    from embedrl.train.egrl import EGRLStageConfig

    config = build_config(EGRLStageConfig, args.profile, "egrl", output_dir=".", seed=args.seed)
    score = rl_holdout(args.data, args.reasoner, args.embedder, config, n_groups=args.groups, source=args.traces)
    print(json.dumps(score, indent=1))
    return 0


def _experiment_reward_alignment(args: argparse.Namespace) -> int:
    import json

    from embedrl.config import build_config
    from embedrl.experiment import reward_alignment
    from embedrl.train.egrl import EGRLStageConfig

    config = build_config(EGRLStageConfig, args.profile, "egrl", output_dir=".", seed=args.seed)
    print(json.dumps(reward_alignment(args.data, args.reasoner, args.embedder, config, n_groups=args.groups,
                                      first_group=args.first_group), indent=1))
    return 0


ROLE_SEED_OFFSET = {"embedder": 0, "reasoner": 1}  # the two roles share no weights, not even at init


def _model_init(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from embedrl.models.factory import ModelNotAvailableError, init_model_dir
    from embedrl.models.spec import load_model_specs

    specs = load_model_specs(args.profile)
    roles = [args.role] if args.role else list(specs)
    for role in roles:
        out = Path(args.out) / role if len(roles) > 1 else Path(args.out)
        if args.overwrite and (out / "embedrl.json").is_file():
            shutil.rmtree(out)
        try:
            init_model_dir(specs[role], out, seed=args.seed + ROLE_SEED_OFFSET[role])
        except (ModelNotAvailableError, FileExistsError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"{role}: {out}")
    return 0


def _not_yet(args: argparse.Namespace) -> int:
    """A group called without a command prints its help; a group with no commands yet says so."""
    args.group_parser.print_help(sys.stderr)
    if not args.group_parser._subparsers._group_actions[0].choices:
        print(f"\n`embedrl {args.group}` has no commands in this version yet.", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from embedrl.registry.cli import add_registry_commands

    parser = argparse.ArgumentParser(
        prog="embedrl",
        description="Embed-RL: reasoning-driven universal multimodal embeddings, as a Kubeflow/MLflow workflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    groups = parser.add_subparsers(dest="group", metavar="GROUP")
    sub = {name: groups.add_parser(name, help=text, description=text) for name, text in GROUP_HELP.items()}
    commands = {name: p.add_subparsers(dest="command", metavar="COMMAND") for name, p in sub.items()}
    for p in sub.values():
        p.set_defaults(handler=_not_yet, group_parser=p)

    _add_data_commands(commands["data"])
    _add_model_commands(commands["model"])
    _add_train_commands(commands["train"])
    _add_evaluate_command(sub["evaluate"])
    _add_experiment_commands(commands["experiment"])
    _add_pipeline_commands(commands["pipeline"])
    add_registry_commands(commands["registry"])
    return parser


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    gen = commands.add_parser(
        "generate",
        help="generate MiniMMEB, the embedded synthetic data set (byte-for-byte reproducible per seed)",
    )
    gen.add_argument("--out", required=True, help="output directory (created; must be empty or absent)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0: the DVC-tracked data/)")
    gen.add_argument("--size", default="default", choices=["default", "small"], help="data set size preset")
    gen.add_argument("--quiet", action="store_true", help="no progress bars")
    gen.add_argument("--check-dvc", default=None, metavar="DVC_FILE",
                     help="after generating, check the output against this .dvc file (exit 1 on mismatch)")
    gen.set_defaults(handler=_data_generate)

    val = commands.add_parser(
        "validate",
        help="validate a data set directory or one JSONL/parquet file; bad records go to a quarantine file",
    )
    val.add_argument("path", help="data set directory (with manifest.json) or a .jsonl/.parquet file")
    val.add_argument("--quarantine", default=None, help="quarantine file (default: <PATH>.quarantine.jsonl)")
    val.add_argument("--data-root", default=None, help="root that media paths resolve against (default: found from PATH)")
    val.set_defaults(handler=_data_validate)

    conv = commands.add_parser(
        "convert",
        help="convert a video or page training set from its released files to <OUT>/<set>/train.parquet",
    )
    conv.add_argument("--set", required=True, help="training set: video_caption_300k, video_caption_300k-video, "
                                                   "video_qa_240k, colpali_train_set, visrag-indomain")
    conv.add_argument("--source", required=True, help="the downloaded data set folder (or one file of it)")
    conv.add_argument("--out", required=True, help="data root to write into (LLaVA-Hound frames must lie under it)")
    conv.add_argument("--frames", default=None, help="LLaVA-Hound frames root (default: <SOURCE>/train_300k)")
    conv.add_argument("--quarantine", default=None, help="rejected source rows (default: <out file>.quarantine.jsonl)")
    conv.set_defaults(handler=_data_convert)

    prep = commands.add_parser("prepare", help="T-CoT synthesis (teacher) and consistency filter -> prepared data set")
    prep.add_argument("--data", required=True, help="source data set (MiniMMEB)")
    prep.add_argument("--out", required=True, help="prepared data set directory (replaced)")
    prep.add_argument("--no-filter", action="store_true", help="keep pairs the consistency judge flags")
    prep.set_defaults(handler=_data_prepare)


def _add_train_commands(commands: argparse._SubParsersAction) -> None:
    def stage(name: str, text: str, handler: Handler) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=text, description=text)
        p.add_argument("--profile", default="tiny", help="profile name or YAML file (default: tiny)")
        p.add_argument("--data", required=True, help="prepared data set (embedrl data prepare)")
        p.add_argument("--out", required=True, help="output directory; the model goes to OUT/model")
        p.add_argument("--max-steps", type=int, default=None, help="override the profile's step count")
        p.add_argument("--seed", type=int, default=None, help="override the profile's seed")
        p.set_defaults(handler=handler)
        return p

    emb = stage("embedder", "Embedder contrastive training (symmetric InfoNCE, <emb> pooling)", _train_embedder)
    emb.add_argument("--model", required=True, help="initial Embedder directory (embedrl model init)")
    emb.add_argument("--deepspeed", default=None,
                     help="DeepSpeed JSON config (e.g. infra/deepspeed/zero2.json); launch with torchrun or deepspeed")
    sft = stage("sft", "SFT cold start of the Reasoner on teacher T-CoTs (trl SFTTrainer)", _train_sft)
    sft.add_argument("--model", required=True, help="initial Reasoner directory")
    rl = stage("egrl", "EG-RL: GRPO of the Reasoner rewarded by the frozen Embedder (trl GRPOTrainer)", _train_egrl)
    rl.add_argument("--reasoner", required=True, help="SFT Reasoner directory")
    rl.add_argument("--embedder", required=True, help="trained Embedder directory (frozen reward model)")
    rl.add_argument("--judge", default=None, choices=["lexical", "chat"], help="process-reward judge")


def _add_evaluate_command(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="tiny", help="profile name or YAML file")
    p.add_argument("--benchmark", default=None, choices=["minimmeb", "mmeb-v2", "uvrb"],
                   help="task registry (default: the profile's eval.registry, minimmeb); mmeb-v2 and uvrb read "
                        "the official download layout and score the tasks the data root holds")
    p.add_argument("--data", "--data-root", dest="data",
                   help="data root: a prepared data set (minimmeb) or the folder the benchmark was downloaded to")
    p.add_argument("--tasks", default=None, help="comma-separated task names: evaluate only these (a partial run)")
    p.add_argument("--embedder", help="Embedder directory")
    p.add_argument("--reasoner", default=None, help="Reasoner directory: it writes the T-CoTs")
    p.add_argument("--variant", default=None, choices=["no_cot", "teacher_cot", "oracle_cot", "sft_cot", "egrl_cot"],
                   help="trace source without --reasoner (no_cot, teacher_cot, oracle_cot); a label with it")
    p.add_argument("--out", help="report directory (metrics.json, predictions.jsonl, report.md/html, leaderboard.json, "
                                 "comparison.md; quarantined records of mmeb-v2/uvrb)")
    p.add_argument("--max-queries", type=int, default=None, help="queries per task (smoke tests)")
    p.add_argument("--cache-dir", default=None,
                   help="keep Reasoner traces and Embedder vectors on disk here, keyed by model fingerprints")
    p.set_defaults(handler=_evaluate_or_help, group_parser=p)


def _evaluate_or_help(args: argparse.Namespace) -> int:
    if not (args.data and args.embedder and args.out):
        args.group_parser.print_help(sys.stderr)
        return 2
    return _evaluate(args)


def _add_experiment_commands(commands: argparse._SubParsersAction) -> None:
    abl = commands.add_parser("ablation", help="the miniature ablation: every stage, five variants, several seeds")
    abl.add_argument("--profile", default="tiny", help="profile name or YAML file")
    abl.add_argument("--data-seed", type=int, default=0, help="seed of the generated MiniMMEB")
    abl.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    abl.add_argument("--size", default="default", choices=["default", "small"], help="MiniMMEB size preset")
    abl.add_argument("--eval-queries", type=int, default=None,
                     help="pools per eval task (0 = all; default: the profile's ablation.eval.max_queries)")
    abl.add_argument("--out", required=True, help="output directory (ablation.json, ablation.md, runs)")
    abl.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                     help="override a profile setting for every seed, e.g. egrl.temperature=0.8 (repeatable; "
                          "over the profile's stage sections and its ablation section)")
    abl.add_argument("--perception-data-seeds", type=int, nargs="*", default=None,
                     help="generate MiniMMEB with these seeds for the Reasoner's perception warm-up only "
                          "(sft.perception_data; with sft.perception_steps / grounding_steps set); default: the "
                          "profile's ablation.perception_data_seeds; given without seeds: none")
    abl.set_defaults(handler=_experiment_ablation)
    hold = commands.add_parser("rl-holdout", help="score a Reasoner on RL groups EG-RL does not train on (tune here, "
                                                  "never on the eval split)")
    hold.add_argument("--data", required=True, help="prepared data directory")
    hold.add_argument("--reasoner", help="Reasoner directory (with --traces reasoner)")
    hold.add_argument("--embedder", required=True, help="Embedder directory")
    hold.add_argument("--traces", default="reasoner", choices=["reasoner", "teacher", "gold"],
                      help="whose traces to score: the Reasoner's (greedy), or the stored teacher / gold ones")
    hold.add_argument("--profile", default="tiny", help="profile whose egrl section fixes the RL group order")
    hold.add_argument("--seed", type=int, default=0, help="EG-RL seed (it fixes the group order)")
    hold.add_argument("--groups", type=int, default=96, help="held-out groups, taken from the end of the order")
    hold.set_defaults(handler=_experiment_rl_holdout)

    align = commands.add_parser("reward-alignment", help="does the EG-RL reward favour the sampled rollouts that "
                                                         "hold the disambiguating evidence? (RL split)")
    align.add_argument("--data", required=True, help="prepared data directory")
    align.add_argument("--reasoner", required=True, help="Reasoner directory (usually the SFT cold start)")
    align.add_argument("--embedder", required=True, help="Embedder directory")
    align.add_argument("--profile", default="tiny", help="profile whose egrl section gives G, temperature, weights")
    align.add_argument("--seed", type=int, default=0, help="EG-RL seed (it fixes the group order)")
    align.add_argument("--groups", type=int, default=24, help="RL groups to sample")
    align.add_argument("--first-group", type=int, default=0, help="position in the EG-RL group order to start at")
    align.set_defaults(handler=_experiment_reward_alignment)


def _set_overrides(items: list[str] | None) -> dict:
    """`--set SECTION.FIELD=VALUE` options as {section: {field: value}}, values read as YAML scalars."""
    import yaml

    overrides: dict = {}
    for item in items or []:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not (section and name and _):
            raise SystemExit(f"error: --set {item!r}: expected SECTION.FIELD=VALUE, e.g. embedder.max_steps=20")
        overrides.setdefault(section, {})[name] = yaml.safe_load(value)
    return overrides


def _pipeline_params(args: argparse.Namespace):
    from embedrl.pipeline.dag import RunParameters
    from embedrl.pipeline.steps import DataSource

    data = DataSource(repo=args.data_repo or "", rev=args.data_rev, path=args.data_path, md5=args.data_md5,
                      seed=args.data_seed, size=args.data_size)
    overrides = _set_overrides(args.set)
    return RunParameters(profile=args.profile, seed=args.seed, data=data, tracking_uri=args.tracking_uri or "",
                         experiment=args.experiment, model_name=args.model_name,
                         promotion_metric=args.promotion_metric, promotion_margin=args.promotion_margin,
                         overrides=overrides)


def _pipeline_run(args: argparse.Namespace) -> int:
    import json

    from embedrl.pipeline.dag import default_data_source, repo_root, run_local

    if not args.local:
        print("error: `pipeline run` runs locally (--local); use `embedrl pipeline submit` for a cluster",
              file=sys.stderr)
        return 2
    params = _pipeline_params(args)
    if args.data_repo is None and not args.data_rev:
        params.data = default_data_source(repo_root())
    result = run_local(args.workdir, params, caching=not args.no_cache)
    print(json.dumps({"run_key": result.run_key, "seconds": round(result.seconds, 1),
                      "tracking_uri": result.tracking_uri, **result.mlflow}, indent=1))
    print(f"MLflow UI: mlflow ui --backend-store-uri {result.tracking_uri}")
    return 0


def _pipeline_compile(args: argparse.Namespace) -> int:
    from embedrl.pipeline.dag import compile_pipeline

    print(compile_pipeline(args.out, image=args.image))
    return 0


def _pipeline_submit(args: argparse.Namespace) -> int:
    import json

    from embedrl.pipeline.dag import compile_pipeline, submit

    package = args.package or compile_pipeline(Path(args.workdir) / "embedrl_pipeline.yaml", image=args.image)
    extra = json.loads(args.extra) if args.extra else None
    run_id = submit(args.endpoint, package, _pipeline_params(args), experiment_name=args.kfp_experiment,
                    run_name=args.run_name, namespace=args.namespace, extra=extra,
                    service_account=args.service_account or None)
    print(f"submitted run {run_id} to {args.endpoint}")
    return 0


def _add_pipeline_commands(commands: argparse._SubParsersAction) -> None:
    def parameters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default="tiny", help="profile name or YAML file (resolved into the run's config)")
        p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                       help="override one profile value, e.g. --set embedder.max_steps=20 (repeatable)")
        p.add_argument("--seed", type=int, default=0, help="training seed")
        p.add_argument("--data-repo", default=None,
                       help="DVC repo (git URL or checkout) holding the data; empty string = generate MiniMMEB "
                            "in the step (default locally: this checkout's data/ if present)")
        p.add_argument("--data-rev", default="", help="git rev of --data-repo (tag or commit; empty = working tree)")
        p.add_argument("--data-path", default="data", help="DVC-tracked directory inside --data-repo")
        p.add_argument("--data-md5", default="", help="expected DVC md5 of the data (.dir); checked by data prep")
        p.add_argument("--data-seed", type=int, default=0, help="MiniMMEB seed when the data is generated")
        p.add_argument("--data-size", default="default", choices=["default", "small"], help="MiniMMEB size preset")
        p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (local default: WORKDIR/mlflow.db)")
        p.add_argument("--experiment", default="embedrl", help="MLflow experiment")
        p.add_argument("--model-name", default="embedrl-embedder", help="registered model name")
        p.add_argument("--promotion-metric", default="overall", help="metric of the promotion gate")
        p.add_argument("--promotion-margin", type=float, default=0.0,
                       help="a challenger becomes champion only if it beats the champion by more than this")

    run = commands.add_parser("run", help="run the whole DAG locally (kfp.local SubprocessRunner)")
    run.add_argument("--local", action="store_true", help="run on this machine (required)")
    run.add_argument("--workdir", default="runs/local", help="pipeline root, KFP cache and mlflow.db")
    run.add_argument("--no-cache", action="store_true", help="rerun every step (default: reuse cached steps)")
    parameters(run)
    run.set_defaults(handler=_pipeline_run)

    comp = commands.add_parser("compile", help="compile the pipeline to a KFP YAML package")
    comp.add_argument("--out", default="pipelines/embedrl_pipeline.yaml", help="output YAML")
    comp.add_argument("--image", default=None, help="project image of every step (default: components.DEFAULT_IMAGE)")
    comp.set_defaults(handler=_pipeline_compile)

    sub = commands.add_parser("submit", help="submit a run to a Kubeflow Pipelines endpoint (kfp.Client)")
    sub.add_argument("--endpoint", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    sub.add_argument("--package", default=None, help="compiled YAML (default: compile now)")
    sub.add_argument("--image", default=None, help="project image when compiling now")
    sub.add_argument("--workdir", default="runs/submit", help="where to compile when --package is not given")
    sub.add_argument("--kfp-experiment", default="embedrl", help="KFP experiment name")
    sub.add_argument("--run-name", default=None, help="KFP run name")
    sub.add_argument("--namespace", default=None, help="Kubeflow namespace (multi-user installs)")
    sub.add_argument("--service-account", default="embedrl-pipeline",
                     help="service account of the run's pods (infra/rbac: may create TrainJobs); empty = KFP's default")
    sub.add_argument("--extra", default=None,
                     help='other pipeline parameters as JSON, e.g. \'{"distributed": true, "gpus": 8}\'')
    parameters(sub)
    sub.set_defaults(handler=_pipeline_submit)


def _add_model_commands(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser("init", help="build models of a profile with random weights and save them")
    init.add_argument("--profile", default="tiny", help="profile name (tiny, paper-2b, ...) or a YAML file")
    init.add_argument("--out", required=True, help="output directory")
    init.add_argument("--role", choices=["embedder", "reasoner"], default=None, help="only this role")
    init.add_argument("--seed", type=int, default=0, help="seed of the random weights (the reasoner uses seed + 1)")
    init.add_argument("--overwrite", action="store_true",
                      help="replace an existing model directory written by embedrl (one holding embedrl.json)")
    init.set_defaults(handler=_model_init)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from embedrl import __version__

        print(__version__)
        return 0
    if args.group is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
