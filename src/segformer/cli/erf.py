"""`segformer erf`: effective receptive fields of each encoder stage and of the decoder (paper Figure 3)."""

from __future__ import annotations

import argparse

from .common import device_of


def add_erf(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("erf", help="effective receptive fields of a SegFormer's stages and decoder, averaged "
                                   "over dataset images (PNG per target + one combined figure + erf.json)")
    p.add_argument("--model", required=True, help="hub id, zoo preset, HF directory or checkpoint file")
    p.add_argument("--data", required=True, help="dataset root (detected as for eval)")
    p.add_argument("--split", default="val", help="split to take images from (default val)")
    p.add_argument("--images", type=int, default=100, help="number of images to average over (default 100)")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"),
                   help="every image is resized to this size (default 512 512)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing figures in --out")
    p.set_defaults(func=_run_erf)


def _run_erf(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .. import load_model
    from ..data.datasets import open_dataset
    from ..erf import TARGETS, effective_receptive_fields, erf_area, save_erf_figures
    from ..models.base import model_config
    from ..preprocess import MMSEG_MEAN, MMSEG_STD, ImageProcessor
    from ..utils.io import atomic_write

    if args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    out = Path(args.out)
    existing = [out / f"erf{s}.{e}" for s, e in [("", "png"), ("", "json")] + [(f"_{t}", "png") for t in TARGETS]]
    existing = [p for p in existing if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace the figures in {out}")
    model = load_model(args.model)
    config = model_config(model)
    dataset = open_dataset(args.data, args.split, num_classes=config.num_classes if config is not None else None)
    device = device_of(args)
    model.to(device)
    processor = ImageProcessor(size=tuple(args.size), rescale_factor=1.0, mean=MMSEG_MEAN, std=MMSEG_STD)
    count = min(args.images, len(dataset))
    images = (processor(dataset.load(i)[0])["pixel_values"].to(device) for i in range(count))
    erfs = effective_receptive_fields(model, images)
    written = save_erf_figures(erfs, out, title=Path(str(args.model)).name, overwrite=args.overwrite)
    areas = {t: {f"{th:g}": erf_area(m, th) for th in (0.01, 0.05, 0.2)} for t, m in erfs.items()}
    summary = json.dumps({"model": args.model, "data": str(args.data), "images": count, "size": list(args.size),
                          "area_at_threshold": areas}, indent=2)
    written.append(atomic_write(out / "erf.json", lambda tmp: Path(tmp).write_text(summary), args.overwrite))
    for target, by_threshold in areas.items():
        cells = "  ".join(f">= {th} of peak: {100 * v:5.1f}% of pixels" for th, v in by_threshold.items())
        print(f"{target:8s} {cells}")
    print(f"{count} images at {args.size[0]}x{args.size[1]}; wrote {', '.join(str(p) for p in written)}")
    return 0
