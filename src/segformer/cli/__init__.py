"""`segformer` command line: one subcommand per job; each is a `_add_<name>` + `_run_<name>` pair in its own module.

Expected failures (bad input, missing or existing files, a diverged run, an interrupt) end as one line on stderr
and exit code 2 (130 for Ctrl-C); anything else is a bug and keeps its traceback. SEGFORMER_DEBUG=1 shows the
traceback of every failure."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..runtime import configure_from_env
from .bench import _add_bench
from .common import plain_progress_lines
from .convert import _add_convert
from .erf import _add_erf
from .evaluate import _add_eval
from .export import _add_export
from .models import _add_models
from .predict import _add_predict
from .serve import _add_serve
from .synth import _add_synth
from .train import _add_train

__all__ = ["COMMANDS", "build_parser", "main", "one_line"]

COMMANDS = [_add_models, _add_convert, _add_synth, _add_eval, _add_predict, _add_train, _add_bench, _add_export,
            _add_serve, _add_erf]


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
