"""`segformer eval`: score a model on a dataset (mmseg metrics)."""

from __future__ import annotations

import argparse

from ..runtimes.loading import load_source
from ..utils.dtypes import DTYPE_NAMES
from .common import parse_hw
from .corruptions import add_corruption_args, check_outputs, run_corruptions
from .runtimes import _add_runtime, choose_runtime


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model on a dataset: aAcc, mIoU, mAcc and per-class IoU/Acc (as mmseg)")
    p.add_argument("--model", required=True, help="hub id, zoo preset, HF directory, checkpoint file, or an exported "
                                                   ".onnx / OpenVINO .xml")
    p.add_argument("--data", required=True, help="dataset root: ADE20K, Cityscapes or folder layout (detected)")
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--mode", choices=["whole", "slide"],
                   help="inference mode (default: the model's recorded test pipeline, else whole)")
    p.add_argument("--crop", type=int, nargs="+", metavar="N",
                   help="slide window size: H W, or one int (default: the recorded one, else 512); pose models: "
                        "the input size H W (default 384 288)")
    p.add_argument("--stride", type=int, nargs="+", metavar="N",
                   help="slide window stride: H W, or one int (default: the recorded one, else 2/3 of --crop)")
    p.add_argument("--scale", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="keep-ratio resize bound before inference (default: the model's recorded test pipeline, "
                        "else the dataset's recipe, e.g. 2048 512 for ADE20K, 2048 1024 for Cityscapes; none for "
                        "a folder)")
    p.add_argument("--scales", type=float, nargs="+", help="multi-scale test ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped runs (test-time augmentation)")
    p.add_argument("--no-flip-test", action="store_true", help="pose models: skip the flip test (on by default)")
    p.add_argument("--coco-ap", action=argparse.BooleanOptionalAction, default=None,
                   help="pose models: COCO keypoint AP (default: when pycocotools is installed and the keypoints "
                        "are COCO's 17; --coco-ap requires it)")
    p.add_argument("--token-merging", help="SegFormer++ strategy: hq, fast, 2x2, downsample, or a YAML file")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="autocast dtype")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--num-workers", type=int, default=2, help="data loading workers (default 2)")
    p.add_argument("--json", metavar="OUT", help="write the metrics (and the settings) to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json (or --plot) file")
    _add_runtime(p)
    add_corruption_args(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json
    import math
    from pathlib import Path

    import torch

    from ..data.datasets import open_dataset
    from ..evaluation import evaluate, first_input
    from ..protocol import resolve_scale, resolve_window
    from ..utils.io import atomic_write_text

    crop, stride = parse_hw(args.crop, "--crop"), parse_hw(args.stride, "--stride")
    out = Path(args.json) if args.json else None
    if out is not None and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    check_outputs(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_source(args.model, args.runtime, device=device, dtype=args.dtype, token_merging=args.token_merging)
    if getattr(getattr(model, "config", None), "task", None) == "pose":
        from .evaluate_pose import run_pose_eval

        return run_pose_eval(args, model, crop, out)
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
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
    result = evaluate(model, dataset, **options)

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

        def clean(v):  # JSON has no NaN: classes with 0 / 0 become null
            if isinstance(v, float) and math.isnan(v):
                return None
            return [clean(x) for x in v] if isinstance(v, (list, tuple)) else v

        payload = {**{k: clean(v) for k, v in result.items()}, "settings": settings}
        atomic_write_text(out, json.dumps(payload, indent=2))
        print(f"wrote {out}")
    return 0
