"""`segformer predict`: segment image files into label maps and overlays."""

from __future__ import annotations

import argparse
import sys

from ..runtimes.loading import load_source
from .common import (
    add_model_args,
    add_resize_args,
    add_tta_args,
    add_window_args,
    device_of,
    launch_place,
    parse_hw,
    process_device,
    process_group,
    processor_from_args,
    save_png,
    sum_over_processes,
)
from .runtimes import add_runtime_arg, choose_runtime, forward_size


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="segment images: NAME.png label maps and NAME_overlay.png pictures",
        description="Segment image files, folders (searched recursively) or glob patterns. Writes NAME.png (class "
                    "ids: 8-bit, or 16-bit above 255 classes) and NAME_overlay.png under --out; a folder's "
                    "sub-folders are kept. Under `torchrun --nproc-per-node N segformer predict ...` each process "
                    "takes every N-th image. Exit code 1 if any image failed (it is reported and skipped).")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns (quote them)")
    add_model_args(p, device_help="cpu, cuda, cuda:1, mps",
                   dtype_help="autocast dtype; bfloat16 runs float32 (with a warning) on a CPU where it would be "
                              "slower")
    p.add_argument("--out", required=True, help="output folder")
    add_window_args(p)
    add_resize_args(p)
    add_tta_args(p, scales_default=[1.0])
    p.add_argument("--batch-size", type=int, default=1, help="slide windows per forward pass (default 1)")
    p.add_argument("--palette", choices=["auto", "ade20k", "cityscapes", "generated"], default="auto",
                   help="overlay colours (auto: ADE20K for 150 classes, Cityscapes for 19, else generated)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    p.add_argument("--legend", action="store_true", help="add a legend of the classes present to the overlay")
    p.add_argument("--no-overlay", action="store_true", help="write the label maps only")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels, before decoding them (default 100000000; 0: no limit)")
    p.add_argument("--boxes", metavar="FILE.json",
                   help="pose models: person boxes, COCO detection results ([{image_id, bbox: [x, y, w, h], score}]; "
                        "image_id = file name or its numeric stem); default: the whole image (--size is the "
                        "pose input H W, default 384 288). Writes NAME_pose.png and NAME_keypoints.json")
    p.add_argument("--box-threshold", type=float, default=0.3, help="pose: minimum detection score (default 0.3)")
    p.add_argument("--no-flip-test", action="store_true", help="pose: skip the flip test (on by default)")
    add_runtime_arg(p)
    p.set_defaults(func=run_predict)


def _predict_outputs(pairs, out, overlay: bool, overwrite: bool) -> list:
    """(image, label map path, overlay path or None) per input; refuses clashes and, without overwrite, clobbering."""
    jobs, owner, existing = [], {}, []
    inputs = {image.resolve(): image for image, _ in pairs}
    for image, stem in pairs:
        paths = [out / f"{stem}.png"] + ([out / f"{stem}_overlay.png"] if overlay else [])
        for path in paths:
            key = path.resolve()
            if key in inputs:
                raise ValueError(f"output {path} would replace the input image {inputs[key]}; choose another --out")
            if key in owner:
                raise ValueError(f"inputs {owner[key]} and {image} would both write {path}; rename one or "
                                 f"predict them into different --out folders")
            owner[key] = image
            if path.exists():
                existing.append(path)
        jobs.append((image, paths[0], paths[1] if overlay else None))
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist, e.g. {existing[0]}; pass --overwrite to "
                              f"replace them")
    return jobs


def _check_writable(out) -> None:
    """Create `out` and write (then remove) a file in it; a ValueError says why not."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another folder") from None


def _check_args(args: argparse.Namespace) -> tuple[tuple[int, int] | None, tuple[int, int] | None, int]:
    """(crop, stride, max pixels) from the flags, each checked before any work."""
    from ..inference import check_options
    from ..preprocess import MAX_PIXELS
    from ..protocol import DEFAULT_CROP, default_stride

    crop, stride = parse_hw(args.crop, "--crop"), parse_hw(args.stride, "--stride")
    max_pixels = MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels < 0:
        raise ValueError(f"--max-pixels must be >= 0 (0: no limit), got {max_pixels}")
    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be in [0, 1], got {args.opacity}")
    window = crop or DEFAULT_CROP
    check_options(mode=args.mode or "whole", crop_size=window, stride=stride or default_stride(window),
                  scales=args.scales, batch_size=args.batch_size)
    return crop, stride, max_pixels


def _check_segmentation(config, name: str) -> None:
    if config is None or config.task != "segmentation":
        raise ValueError(f"model {name} has no segmentation head (task: {config.task if config else 'encoder'})")
    if config.num_classes > 65536:
        raise ValueError(f"model {name} has {config.num_classes} classes; PNG label maps hold at most 65536")


def run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..models.base import model_config
    from ..protocol import predict_processor, resolve_window
    from .files import collect_images

    crop, stride, max_pixels = _check_args(args)
    processor = processor_from_args(args)
    out = Path(args.out)
    _check_writable(out)  # before the (slow) model load and inference
    rank, world = launch_place()
    device = process_device(device_of(args), world)
    model = load_source(args.model, args.runtime, device=device, dtype=args.dtype, token_merging=args.token_merging)
    config = model_config(model)
    if config is not None and config.task == "pose":
        from .predict_pose import run_pose_predict

        return run_pose_predict(args, model, collect_images(args.inputs, exclude=out))
    # Every process checks every output before any writes, so they all refuse (or all go) together.
    jobs = _predict_outputs(collect_images(args.inputs, exclude=out), out, not args.no_overlay, args.overwrite)
    with process_group(world):
        _check_segmentation(config, args.model)
        mode, crop, stride = resolve_window(model, args.mode, crop, stride)  # the model's recorded test pipeline
        processor = processor or predict_processor(model, mode)
        model, dtype = choose_runtime(model, args.runtime, device=device, dtype=args.dtype,
                                      size=forward_size(processor, mode, crop, jobs[0][0]))
        settings = dict(mode=mode, processor=processor, crop_size=crop, stride=stride, scales=args.scales,
                        flip=args.flip, dtype=dtype, batch_size=args.batch_size)
        return _predict_jobs(args, model, config, jobs, settings, max_pixels, (rank, world), out)


def _predict_jobs(args: argparse.Namespace, model, config, jobs: list, settings: dict, max_pixels: int,
                  place: tuple[int, int], out) -> int:
    """Predict this process's share of `jobs` and write them; the summary line (rank 0); exit code 1 if any failed."""
    import time

    from tqdm import tqdm

    from ..data.palettes import get_class_names, get_palette
    from ..inference import predict
    from ..preprocess import to_rgb_array
    from ..visualize import render
    from .files import shard

    palette_name = None if args.palette == "auto" else args.palette
    palette = get_palette(config.num_classes, palette_name)
    names = config.class_names or get_class_names(config.num_classes, palette_name)
    mine, failed, start = shard(jobs, *place), 0, time.perf_counter()
    for image, label_path, overlay_path in tqdm(mine, unit="image", disable=place[0] != 0, dynamic_ncols=True):
        try:
            rgb = to_rgb_array(image, max_pixels)
            labels = predict(model, rgb, **settings)
            save_png(labels, label_path)
            if overlay_path is not None:
                save_png(render(rgb, labels, config.num_classes, palette=palette, class_names=names,
                                opacity=args.opacity, legend=args.legend), overlay_path)
        except Exception as exc:  # one bad image must not stop the batch: report it, go on, fail at the end
            failed += 1
            tqdm.write(f"segformer predict: failed on {image}: {exc}", file=sys.stderr)
    total, failed = sum_over_processes([len(mine), failed], place[1])
    elapsed = time.perf_counter() - start
    if place[0] == 0:
        print(f"segformer predict: {total} images, {total - failed} written, {failed} failed, {elapsed:.1f} s "
              f"({total / max(elapsed, 1e-9):.2f} images/s); outputs in {out}")
    return 1 if failed else 0
