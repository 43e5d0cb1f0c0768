"""`segformer` command line: one subcommand per job; each is a `_add_<name>` + `_run_<name>` pair in its own module."""

from __future__ import annotations

import argparse
import sys

from ..runtime import configure_from_env
from .bench import _add_bench
from .convert import _add_convert
from .evaluate import _add_eval
from .export import _add_export
from .models import _add_models
from .predict import _add_predict
from .serve import _add_serve
from .synth import _add_synth
from .train import _add_train

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = [_add_models, _add_convert, _add_synth, _add_eval, _add_predict, _add_train, _add_bench, _add_export,
            _add_serve]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segformer", description="Semantic segmentation with transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_from_env()  # keep freed memory for reuse: large buffers are not page-faulted in every pass
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"segformer {args.command}: error: {exc}", file=sys.stderr)
        return 2
