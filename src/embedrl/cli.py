"""The `embedrl` command.

Only argparse is imported at start-up: every handler imports the library module it needs, so that
`embedrl --help` stays fast (torch, transformers and mlflow each take seconds to import).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

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
