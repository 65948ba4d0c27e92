"""`embedrl registry promote | rollback | show`: the champion alias by hand.

Wired into the `embedrl` command by `add_registry_commands(commands["registry"])`; mlflow is
imported only by the handlers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PIPELINE_MODEL_NAME = "embedrl-embedder"


def add_registry_commands(subparsers: argparse._SubParsersAction) -> None:
    promote = subparsers.add_parser(
        "promote", help="make a version the champion (the old one is kept for rollback)"
    )
    _common(promote)
    promote.add_argument("--version", required=True, help="model version to make champion")
    promote.set_defaults(handler=_promote)

    rollback = subparsers.add_parser("rollback", help="move champion back to the previous champion")
    _common(rollback)
    rollback.set_defaults(handler=_rollback)

    show = subparsers.add_parser(
        "show", help="aliases, champion history and versions with their scores (JSON)"
    )
    _common(show)
    show.set_defaults(handler=_show)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", required=True, help=f"registered model name (the pipeline's: {PIPELINE_MODEL_NAME})"
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking server (default: $MLFLOW_TRACKING_URI)",
    )


def _checked_uri(args: argparse.Namespace) -> str:
    if not args.tracking_uri:
        raise SystemExit("no tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return args.tracking_uri


def _promote(args: argparse.Namespace) -> int:
    from embedrl.registry.promotion import promote

    previous = promote(args.name, args.version, tracking_uri=_checked_uri(args))
    print(f"{args.name}: champion v{args.version} (was v{previous})")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from embedrl.registry.promotion import PromotionError, rollback

    try:
        restored = rollback(args.name, tracking_uri=_checked_uri(args))
    except PromotionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: champion rolled back to v{restored}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from embedrl.registry.promotion import registry_summary

    print(json.dumps(registry_summary(args.name, tracking_uri=_checked_uri(args)), indent=2))
    return 0
