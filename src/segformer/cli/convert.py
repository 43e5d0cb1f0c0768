"""`segformer convert`: convert a checkpoint between formats."""

from __future__ import annotations

import argparse


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint between formats (hf, nvlabs, mmseg, ours)")
    p.add_argument("src", help="hub id, HF directory or checkpoint file")
    p.add_argument("dst", help="output directory (hf, ours) or file (nvlabs, mmseg, mmpose: .pth or .safetensors)")
    p.add_argument("--to", choices=["hf", "nvlabs", "mmseg", "mmpose", "ours", "timm"], default="hf",
                   help="target format (timm: a ViT / SETR encoder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from ..checkpoints import convert

    out = convert(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    print(f"wrote {out} ({args.to} format)")
    return 0
