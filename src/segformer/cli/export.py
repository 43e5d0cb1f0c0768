"""`segformer export`: export a model to ONNX and check it with onnxruntime."""

from __future__ import annotations

import argparse
import sys

from .common import _load_for_bench, _size


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX, checked against PyTorch with onnxruntime",
                       description="Needs the onnx extra (pip install 'segformer[onnx]'). The graph maps "
                                   "pixel_values (B, 3, H, W) to logits; it is traced at --size, and with --dynamic "
                                   "batch, height and width stay free. Afterwards onnxruntime is compared with "
                                   "PyTorch (max abs logit difference) at --size and, with --dynamic, a second size.")
    p.add_argument("--model", required=True, help="zoo name (random weights), hub id, HF directory or checkpoint")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="output format (default onnx)")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width")
    p.add_argument("--size", default="512x512", help="trace input HxW, or one int (default 512x512)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx, verify_onnx

    height, width = _size(args.size, "--size")
    model = _load_for_bench(args.model, None)
    out = export_onnx(model, args.out, size=(height, width), dynamic=args.dynamic, opset=args.opset,
                      overwrite=args.overwrite)
    print(f"wrote {out} ({'dynamic batch, height, width' if args.dynamic else f'fixed 1x3x{height}x{width}'})")
    if not args.no_verify:
        sizes = [(height, width)] + ([(height + 32, width - 32 if width > 64 else width + 64)] if args.dynamic else [])
        diffs = verify_onnx(model, out, sizes)
        for (h, w), diff in zip(sizes, diffs):
            print(f"onnxruntime vs PyTorch at {h}x{w}: max abs logit difference {diff:.1e}")
        if max(diffs) > 1e-4:
            print(f"segformer export: warning: {out} differs from PyTorch by more than 1e-4", file=sys.stderr)
            return 1
    return 0
