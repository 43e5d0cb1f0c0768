"""`segformer synth`: write a small synthetic segmentation set."""

from __future__ import annotations

import argparse


def add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a small synthetic segmentation set (folder layout) or pose set (COCO "
                                     "keypoints: --task pose) for demos and tests")
    p.add_argument("root", help="output folder: gets images/<split>/, masks/<split>/ and classes.txt (pose: "
                                "images/<split>/ and annotations/<split>.json)")
    p.add_argument("--task", choices=["segmentation", "pose"], default="segmentation",
                   help="segmentation (default) or pose: stick figures with COCO's 17 keypoints, COCO JSON")
    p.add_argument("--train", type=int, default=200, help="number of training images (default 200)")
    p.add_argument("--val", type=int, default=50, help="number of validation images (default 50)")
    p.add_argument("--seed", type=int, default=0, help="the set is a pure function of the seed (default 0)")
    p.add_argument("--min-size", type=int, default=64, help="smallest image side in pixels (default 64)")
    p.add_argument("--max-size", type=int, default=160, help="largest image side in pixels (default 160)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic set at ROOT")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import SYNTHETIC_CLASSES, write_synthetic

    if args.task == "pose":
        return _run_synth_pose(args)
    root = write_synthetic(args.root, num_train=args.train, num_val=args.val, seed=args.seed,
                           min_size=args.min_size, max_size=args.max_size, overwrite=args.overwrite)
    print(f"wrote {args.train} train + {args.val} val images, {len(SYNTHETIC_CLASSES)} classes, to {root}")
    return 0


def _run_synth_pose(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from ..data.synthetic_pose import write_synthetic_pose

    root = Path(args.root)
    if args.overwrite and (root / "annotations" / "train.json").is_file() and (root / "images").is_dir():
        shutil.rmtree(root)  # only a folder that holds a COCO-format set is replaced
    write_synthetic_pose(root, num_train=args.train, num_val=args.val, seed=args.seed, image_size=args.max_size)
    print(f"wrote {args.train} train + {args.val} val images of stick figures (COCO's 17 keypoints) to {root}")
    return 0
