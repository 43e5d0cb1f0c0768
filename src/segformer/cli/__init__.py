"""`segformer` command line: one subcommand per job, each in its own module: `add_<name>` (its parser, over the
shared argument groups of `common.py`) and a thin run function.

Expected failures (bad input, missing or existing files, a diverged run, an interrupt) end as one line on stderr
and exit code 2 (130 for Ctrl-C); anything else is a bug and keeps its traceback. SEGFORMER_DEBUG=1 shows the
traceback of every failure."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..runtime import configure_from_env
from .bench import add_bench
from .common import plain_progress_lines
from .convert import add_convert
from .erf import add_erf
from .evaluate import add_eval
from .export import add_export
from .models import add_models
from .predict import add_predict
from .serve import add_serve
from .synth import add_synth
from .train import add_train

__all__ = ["COMMANDS", "build_parser", "main", "one_line"]

COMMANDS = [add_models, add_convert, add_synth, add_eval, add_predict, add_train, add_bench, add_export,
            add_serve, add_erf]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segformer", description="Semantic segmentation with transformers.")
    parser.add_argument("--version", action="version", version=f"segformer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_from_env()  # keep freed memory for reuse: large buffers are not page-faulted in every pass
    with plain_progress_lines():
        try:
            return args.func(args)
        except KeyboardInterrupt:
            if os.environ.get("SEGFORMER_DEBUG") == "1":
                raise
            print(f"segformer {args.command}: interrupted", file=sys.stderr)
            return 130
        except EXPECTED as exc:
            if os.environ.get("SEGFORMER_DEBUG") == "1":
                raise
            print(f"segformer {args.command}: error: {one_line(exc)}", file=sys.stderr)
            return 2


# Bad input and the environment (files, permissions, memory, a missing optional package), never our bugs
# (TypeError, AttributeError, KeyError... keep their traceback).
EXPECTED = (ValueError, OSError, RuntimeError, ImportError)


def one_line(exc: BaseException) -> str:
    """The message of `exc`; for an error re-raised from a DataLoader worker, the worker's own message without
    the worker's traceback that torch puts in front of it."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.startswith(f"{type(exc).__name__}: ") else last
    return text.strip()
