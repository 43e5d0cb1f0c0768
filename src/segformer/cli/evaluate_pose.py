"""`segformer eval` for pose models: PCK@0.1 / PCK@0.05 (and COCO keypoint AP) on a COCO-format keypoint set's
ground-truth boxes, or COCO keypoint AP on a detector's boxes (--bbox-file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import device_of

DEFAULT_INPUT = (384, 288)  # (h, w) of the COCO recipes


def run_pose_eval(args: argparse.Namespace, model, crop: tuple[int, int] | None, out: Path | None) -> int:
    from ..data.keypoints import open_keypoints
    from ..pose_evaluation import evaluate_pose
    from ..utils.io import write_json

    dataset = open_keypoints(args.data, args.split, args.bbox_file, args.bbox_score_thr)
    if model.config.num_classes != dataset.num_classes:
        raise ValueError(f"model {args.model} predicts {model.config.num_classes} keypoints but {args.data} has "
                         f"{dataset.num_classes}")
    height, width = crop or DEFAULT_INPUT
    device = device_of(args)
    model.to(device)
    result = evaluate_pose(model, dataset, input_size=(width, height), flip_test=not args.no_flip_test,
                           coco_ap=args.coco_ap)
    scores = "  ".join(f"{k} {v:.2f}" for k, v in result.items() if k != "num_instances")
    boxes = f"boxes of {args.bbox_file}" if args.bbox_file else "ground-truth boxes"
    print(f"{args.data} {args.split}, {result['num_instances']} persons ({boxes}), input {width}x{height}"
          f"{'' if args.no_flip_test else ', flip test'}: {scores}")
    if out is not None:
        settings = {"model": args.model, "data": str(args.data), "split": args.split, "input_size": [height, width],
                    "flip_test": not args.no_flip_test, "token_merging": args.token_merging,
                    "bbox_file": str(args.bbox_file) if args.bbox_file else None,
                    "bbox_score_thr": args.bbox_score_thr}
        write_json(out, {**result, "settings": settings}, overwrite=True)
        print(f"wrote {out}")
    return 0
