"""`segformer eval`: score a model on a dataset (mmseg metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runtimes.loading import load_source
from .common import add_json_args, add_model_args, add_tta_args, add_window_args, device_of, json_out, parse_hw
from .corruptions import add_corruption_args, check_outputs, run_corruptions
from .runtimes import add_runtime_arg, choose_runtime


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model on a dataset: aAcc, mIoU, mAcc and per-class IoU/Acc (as mmseg)")
    add_model_args(p)
    p.add_argument("--data", required=True, help="dataset root: ADE20K, Cityscapes or folder layout (detected)")
    p.add_argument("--split", default="val", help="split to score (default val)")
    add_window_args(p, crop_extra="; pose models: the input size H W (default 384 288)")
    p.add_argument("--scale", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="keep-ratio resize bound before inference (default: the model's recorded test pipeline, "
                        "else the dataset's recipe, e.g. 2048 512 for ADE20K, 2048 1024 for Cityscapes; none for "
                        "a folder)")
    add_tta_args(p)
    p.add_argument("--no-flip-test", action="store_true", help="pose models: skip the flip test (on by default)")
    p.add_argument("--coco-ap", action=argparse.BooleanOptionalAction, default=None,
                   help="pose models: COCO keypoint AP (default: when pycocotools is installed and the keypoints "
                        "are COCO's 17; --coco-ap requires it)")
    p.add_argument("--bbox-file", type=Path, metavar="JSON",
                   help="pose models: score COCO keypoint AP on a detector's person boxes (COCO detection results, "
                        "MMPose's bbox_file) instead of the ground-truth boxes")
    p.add_argument("--bbox-score-thr", type=float, default=0.0,
                   help="pose models with --bbox-file: drop detections scoring below this (default 0: keep all)")
    p.add_argument("--num-workers", type=int, default=2, help="data loading workers (default 2)")
    add_json_args(p, "the metrics (and the settings)", also=" (or --plot)")
    add_runtime_arg(p)
    add_corruption_args(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ..data.datasets import open_dataset
    from ..evaluation import evaluate, first_input
    from ..models.base import model_config
    from ..protocol import resolve_scale, resolve_window

    crop, stride = parse_hw(args.crop, "--crop"), parse_hw(args.stride, "--stride")
    out = json_out(args)
    check_outputs(args)
    device = device_of(args)
    model = load_source(args.model, args.runtime, device=device, dtype=args.dtype, token_merging=args.token_merging)
    config = model_config(model)
    if args.bbox_file is not None and (config is None or config.task != "pose"):
        raise ValueError("--bbox-file is for pose models (person boxes for COCO keypoint AP); "
                         f"{args.model} is not one")
    if config is not None and config.task == "pose":
        from .evaluate_pose import run_pose_eval

        return run_pose_eval(args, model, crop, out)
    num_classes = config.num_classes if config is not None else None
    dataset = open_dataset(args.data, args.split, num_classes=num_classes)
    if num_classes is not None and num_classes != dataset.num_classes:
        raise ValueError(f"model {args.model} predicts {num_classes} classes but dataset {args.data} has "
                         f"{dataset.num_classes}")
    # Settings left out: the model's recorded test pipeline (resolved here, as a runtime runner may not carry it)
    scale = resolve_scale(model, args.scale, dataset.scale)
    mode, crop, stride = resolve_window(model, args.mode, crop, stride)
    size = crop if mode == "slide" else tuple(first_input(dataset, scale).shape[-2:])
    model, dtype = choose_runtime(model, args.runtime, device=device, dtype=args.dtype, size=size)
    options = dict(scale=scale, mode=mode, crop_size=crop, stride=stride, scales=args.scales, flip=args.flip,
                   dtype=dtype, num_workers=args.num_workers)
    if args.corruptions:
        settings = {"model": args.model, "data": str(args.data), "dataset": dataset.kind, "split": args.split,
                    **{k: list(v) if isinstance(v, tuple) else v if v is None or isinstance(v, (int, float, str, list))
                       else str(v) for k, v in options.items()}}
        return run_corruptions(args, model, dataset, settings, **options)
    _report(args, dataset, evaluate(model, dataset, **options), out)
    return 0


def _report(args: argparse.Namespace, dataset, result: dict, out) -> None:
    """Print the per-class table and the summary; with --json also write them and the settings."""
    import math

    from ..utils.io import write_json

    def fmt(v: float) -> str:
        return "   nan" if math.isnan(v) else f"{v:6.2f}"

    width = max(len(n) for n in result["classes"])
    print(f"{'class':{width}s}    IoU    Acc")
    for name, iou, acc in zip(result["classes"], result["IoU"], result["Acc"], strict=True):
        print(f"{name:{width}s} {fmt(iou)} {fmt(acc)}")
    print(f"{dataset.kind} {args.split}, {result['num_images']} images: aAcc {fmt(result['aAcc']).strip()}  "
          f"mIoU {fmt(result['mIoU']).strip()}  mAcc {fmt(result['mAcc']).strip()}")
    if out is not None:
        settings = {"model": args.model, "data": str(args.data), "dataset": dataset.kind, "split": args.split,
                    **result.pop("protocol"), "scales": args.scales,
                    "flip": args.flip, "token_merging": args.token_merging, "dtype": args.dtype}
        write_json(out, {**result, "settings": settings})  # classes with 0 / 0 (NaN) become null
        print(f"wrote {out}")
