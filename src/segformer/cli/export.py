"""`segformer export`: export a model to ONNX or OpenVINO IR and check it against PyTorch."""

from __future__ import annotations

import argparse
import sys

from .common import RANDOM_HELP, load_for_bench, parse_size


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or OpenVINO IR, checked against PyTorch",
                       description="ONNX needs the onnx extra, OpenVINO the openvino extra (pip install "
                                   "'segformer[openvino]'). The graph maps pixel_values (B, 3, H, W) to logits and "
                                   "carries the model config, class names and test pipeline as metadata. ONNX is "
                                   "traced at --size, and with --dynamic batch, height and width stay free; OpenVINO "
                                   "IR (NAME.xml + NAME.bin) is always dynamic. Afterwards the runtime is compared "
                                   "with PyTorch (max abs logit difference) at --size and a second size.")
    p.add_argument("--model", required=True, help=RANDOM_HELP)
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx", help="output format (default onnx)")
    p.add_argument("--out", required=True, help="output file: model.onnx, or model.xml for OpenVINO")
    p.add_argument("--dynamic", action="store_true", help="ONNX: symbolic batch, height and width")
    p.add_argument("--size", default="512x512", help="trace and check input HxW, or one int (default 512x512)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--int8", action="store_true", help="OpenVINO: quantize the encoder's linear layers to int8 "
                                                        "(NNCF post-training static quantization; needs --calib)")
    p.add_argument("--calib", metavar="ROOT", help="calibration data set (ADE20K, Cityscapes or folder layout)")
    p.add_argument("--calib-split", default="val", help="split of --calib to calibrate on (default val)")
    p.add_argument("--calib-size", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--no-verify", action="store_true", help="skip the runtime vs PyTorch check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_run_export)


def _write(args: argparse.Namespace, model, size: tuple[int, int]):
    """Export as asked; the runner that checks the file."""
    from ..runtimes import load_runner
    from ..runtimes.base import metadata

    if args.format == "onnx":
        if args.int8 or args.calib:
            raise ValueError("--int8 / --calib are for --format openvino")
        from ..export import export_onnx

        out = export_onnx(model, args.out, size=size, dynamic=args.dynamic, opset=args.opset,
                          overwrite=args.overwrite, metadata=metadata(model))
        print(f"wrote {out} ({'dynamic batch, height, width' if args.dynamic else f'fixed 1x3x{size[0]}x{size[1]}'})")
        return out, (lambda: load_runner(out, "onnxruntime"))
    from ..runtimes.openvino import export_openvino

    if args.int8 != bool(args.calib):
        raise ValueError("--int8 needs --calib ROOT (a data set to calibrate on), and --calib is only for --int8")
    calibration = calibration_inputs(args.calib, args.calib_split, args.calib_size, model) if args.int8 else None
    out = export_openvino(model, args.out, calibration=calibration, subset_size=args.calib_size,
                          overwrite=args.overwrite)
    print(f"wrote {out} and {out.with_suffix('.bin')} (OpenVINO IR, dynamic batch, height, width"
          f"{', int8 encoder linears' if args.int8 else ''})")
    return out, (lambda: load_runner(out, "openvino"))


def calibration_inputs(root: str, split: str, count: int, model):
    """Up to `count` images of a data set, as `segformer eval` feeds them to the model (numpy, 1x3xHxW)."""
    from ..data.datasets import open_dataset
    from ..evaluation import first_input
    from ..models.base import model_config

    if count < 1:
        raise ValueError(f"--calib-size must be >= 1, got {count}")
    config = model_config(model)
    dataset = open_dataset(root, split, num_classes=config.num_classes if config is not None else None)
    indices = range(0, len(dataset), max(1, len(dataset) // count))[:count]
    print(f"calibrating on {len(indices)} of {len(dataset)} images of {root} ({split})")
    return [first_input(dataset, index=i)[None].numpy() for i in indices]


def _run_export(args: argparse.Namespace) -> int:
    from ..export import verify_onnx

    height, width = parse_size(args.size, "--size")
    model = load_for_bench(args.model, None)
    out, runner = _write(args, model, (height, width))
    if args.no_verify:
        return 0
    second = (height + 32, width - 32 if width > 64 else width + 64)
    sizes = [(height, width)] + ([second] if args.dynamic or args.format == "openvino" else [])
    diffs = verify_onnx(model, out, sizes, runner=runner())
    name = "onnxruntime" if args.format == "onnx" else "OpenVINO"
    for (h, w), diff in zip(sizes, diffs):
        print(f"{name} vs PyTorch at {h}x{w}: max abs logit difference {diff:.1e}")
    if max(diffs) > 1e-4 and not args.int8:
        print(f"segformer export: warning: {out} differs from PyTorch by more than 1e-4", file=sys.stderr)
        return 1
    return 0
