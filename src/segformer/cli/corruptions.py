"""`segformer eval --corruptions ...`: the robustness study (clean + corrupted mIoU, JSON and heat map)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_corruption_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corruptions", metavar="NAMES",
                   help="also score corrupted copies of every image: all, a group (blur, noise, digital, weather) "
                        "or comma-separated ImageNet-C names (needs scipy: pip install 'segformer[corruptions]')")
    p.add_argument("--severities", default="1-5", help="corruption severities, e.g. 1-5 (default), 3 or 1,3,5")
    p.add_argument("--corruption-seed", type=int, default=0, help="image k of the split uses seed SEED + k (default 0)")
    p.add_argument("--plot", metavar="PNG", help="with --corruptions: write the corruption x severity heat map here")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, to overwrite --plot without --overwrite; --plot needs --corruptions."""
    if args.plot and not args.corruptions:
        raise ValueError("--plot draws the corruption heat map: it needs --corruptions")
    if args.plot and Path(args.plot).exists() and not args.overwrite:
        raise FileExistsError(f"{args.plot} exists; pass --overwrite to replace it")


def run_corruptions(args: argparse.Namespace, model, dataset, settings: dict, **eval_kwargs) -> int:
    import logging

    from ..corruptions import parse_corruptions, parse_severities
    from ..robustness import evaluate_corruptions, plot_heatmap, save_json

    logging.basicConfig(format="segformer eval: %(message)s")  # one line per corruption and severity
    logging.getLogger("segformer.robustness").setLevel(logging.INFO)
    names, severities = parse_corruptions(args.corruptions), parse_severities(args.severities)
    result = evaluate_corruptions(model, dataset, names, severities, seed=args.corruption_seed, **eval_kwargs)
    width = max(len(n) for n in names)
    print(f"{'corruption':{width}s} " + " ".join(f"  s{s}  " for s in severities) + "   mean")
    for name in names:
        row = " ".join(f"{result['mIoU'][name][s]:6.2f}" for s in severities)
        print(f"{name:{width}s} {row} {result['corruption_mean'][name]:6.2f}")
    groups = "  ".join(f"{g} {v:.2f}" for g, v in result["group_mean"].items())
    print(f"{dataset.kind} {args.split}, {len(dataset)} images: clean mIoU {result['clean']['mIoU']:.2f}  "
          f"corrupted mean {result['mean']:.2f}  ({groups})")
    if args.json:
        print(f"wrote {save_json(result, args.json, overwrite=args.overwrite, settings=settings)}")
    if args.plot:
        print(f"wrote {plot_heatmap(result, args.plot, title=Path(str(args.model)).name, overwrite=args.overwrite)}")
    return 0
