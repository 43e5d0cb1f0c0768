"""`segformer` command line: one subcommand per job; each is a `_add_<name>` + `_run_<name>` pair."""

from __future__ import annotations

import argparse
import sys


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named models (and their hub ids)")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from .models.zoo import ZOO

    for name in sorted(ZOO):
        entry = ZOO[name]
        print(f"{name:32s} {entry.hub_id or '-':48s} {entry.description}")
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint between formats (hf, nvlabs, mmseg, ours)")
    p.add_argument("src", help="hub id, HF directory or checkpoint file")
    p.add_argument("dst", help="output directory (hf, ours) or file (nvlabs, mmseg: .pth or .safetensors)")
    p.add_argument("--to", choices=["hf", "nvlabs", "mmseg", "ours"], default="hf", help="target format")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .checkpoints import convert

    out = convert(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    print(f"wrote {out} ({args.to} format)")
    return 0


COMMANDS = [_add_models, _add_convert]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segformer", description="Semantic segmentation with transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"segformer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
