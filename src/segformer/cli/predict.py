"""`segformer predict`: segment image files into label maps and overlays."""

from __future__ import annotations

import argparse
import sys

from ..runtimes.loading import load_source
from ..utils.dtypes import DTYPE_NAMES
from .common import add_resize_args, parse_hw, processor_from_args
from .runtimes import _add_runtime, choose_runtime, forward_size


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="segment images: NAME.png label maps and NAME_overlay.png pictures",
        description="Segment image files, folders (searched recursively) or glob patterns. Writes NAME.png (class "
                    "ids: 8-bit, or 16-bit above 255 classes) and NAME_overlay.png under --out; a folder's "
                    "sub-folders are kept. Under `torchrun --nproc-per-node N segformer predict ...` each process "
                    "takes every N-th image. Exit code 1 if any image failed (it is reported and skipped).")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns (quote them)")
    p.add_argument("--model", required=True, help="hub id, zoo preset, HF directory, checkpoint file, or an exported "
                   ".onnx / OpenVINO .xml")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mode", choices=["whole", "slide"],
                   help="inference mode (default: the model's recorded test pipeline, else whole)")
    p.add_argument("--crop", type=int, nargs="+", metavar="N",
                   help="slide window: H W, or one int (default: the recorded one, else 512)")
    p.add_argument("--stride", type=int, nargs="+", metavar="N",
                   help="slide stride: H W, or one int (default: the recorded one, else 2/3 of --crop)")
    add_resize_args(p)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0],
                   help="multi-scale test ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped runs (test-time augmentation)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32",
                   help="autocast dtype; bfloat16 runs float32 (with a warning) on a CPU where it would be slower")
    p.add_argument("--batch-size", type=int, default=1, help="slide windows per forward pass (default 1)")
    p.add_argument("--palette", choices=["auto", "ade20k", "cityscapes", "generated"], default="auto",
                   help="overlay colours (auto: ADE20K for 150 classes, Cityscapes for 19, else generated)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    p.add_argument("--legend", action="store_true", help="add a legend of the classes present to the overlay")
    p.add_argument("--no-overlay", action="store_true", help="write the label maps only")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels, before decoding them (default 100000000; 0: no limit)")
    p.add_argument("--token-merging", help="SegFormer++ strategy: hq, fast, 2x2, downsample, or a YAML file")
    p.add_argument("--boxes", metavar="FILE.json",
                   help="pose models: person boxes, COCO detection results ([{image_id, bbox: [x, y, w, h], score}]; "
                        "image_id = file name or its numeric stem); default: the whole image (--size is the "
                        "pose input H W, default 384 288). Writes NAME_pose.png and NAME_keypoints.json")
    p.add_argument("--box-threshold", type=float, default=0.3, help="pose: minimum detection score (default 0.3)")
    p.add_argument("--no-flip-test", action="store_true", help="pose: skip the flip test (on by default)")
    _add_runtime(p)
    p.set_defaults(func=_run_predict)


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


def _save_png(picture, path) -> None:
    """Write a PIL image or an integer array (8-bit, or 16-bit grey) as PNG, atomically (temp file + rename)."""
    from PIL import Image

    from ..utils.io import atomic_write

    picture = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def _run_predict(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from ..data.palettes import get_class_names, get_palette
    from ..inference import check_options, predict
    from ..preprocess import MAX_PIXELS, to_rgb_array
    from ..protocol import DEFAULT_CROP, default_stride, predict_processor, resolve_window
    from ..visualize import render
    from .files import collect_images, shard

    crop, stride = parse_hw(args.crop, "--crop"), parse_hw(args.stride, "--stride")
    max_pixels = MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels < 0:
        raise ValueError(f"--max-pixels must be >= 0 (0: no limit), got {max_pixels}")
    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be in [0, 1], got {args.opacity}")
    window = crop or DEFAULT_CROP
    check_options(mode=args.mode or "whole", crop_size=window, stride=stride or default_stride(window),
                  scales=args.scales, batch_size=args.batch_size)
    processor = processor_from_args(args)
    out = Path(args.out)
    _check_writable(out)  # before the (slow) model load and inference
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"  # one GPU per process
    model = load_source(args.model, args.runtime, device=device, dtype=args.dtype, token_merging=args.token_merging)
    config = getattr(model, "config", None)
    if getattr(config, "task", None) == "pose":
        from .predict_pose import run_pose_predict

        return run_pose_predict(args, model, collect_images(args.inputs, exclude=out))
    # Every process checks every output before any writes, so they all refuse (or all go) together.
    jobs = _predict_outputs(collect_images(args.inputs, exclude=out), out, not args.no_overlay, args.overwrite)
    if world > 1:
        dist.init_process_group("gloo")
        dist.barrier()
    if getattr(config, "task", None) != "segmentation":
        raise ValueError(f"model {args.model} has no segmentation head (task: {getattr(config, 'task', 'encoder')})")
    if config.num_classes > 65536:
        raise ValueError(f"model {args.model} has {config.num_classes} classes; PNG label maps hold at most 65536")
    mode, crop, stride = resolve_window(model, args.mode, crop, stride)  # the model's recorded test pipeline
    processor = processor or predict_processor(model, mode)
    model, dtype = choose_runtime(model, args.runtime, device=device, dtype=args.dtype,
                                  size=forward_size(processor, mode, crop, jobs[0][0]))
    palette_name = None if args.palette == "auto" else args.palette
    palette = get_palette(config.num_classes, palette_name)
    names = config.class_names or get_class_names(config.num_classes, palette_name)
    mine, failed, start = shard(jobs, rank, world), 0, time.perf_counter()
    for image, label_path, overlay_path in tqdm(mine, unit="image", disable=rank != 0, dynamic_ncols=True):
        try:
            rgb = to_rgb_array(image, max_pixels)
            labels = predict(model, rgb, mode=mode, processor=processor, crop_size=crop, stride=stride,
                             scales=args.scales, flip=args.flip, dtype=dtype, batch_size=args.batch_size)
            _save_png(labels, label_path)
            if overlay_path is not None:
                _save_png(render(rgb, labels, config.num_classes, palette=palette, class_names=names,
                                 opacity=args.opacity, legend=args.legend), overlay_path)
        except Exception as exc:  # one bad image must not stop the batch: report it, go on, fail at the end
            failed += 1
            tqdm.write(f"segformer predict: failed on {image}: {exc}", file=sys.stderr)
    counts = torch.tensor([len(mine), failed])
    if world > 1:
        dist.all_reduce(counts)
        dist.destroy_process_group()
    total, failed = int(counts[0]), int(counts[1])
    elapsed = time.perf_counter() - start
    if rank == 0:
        print(f"segformer predict: {total} images, {total - failed} written, {failed} failed, {elapsed:.1f} s "
              f"({total / max(elapsed, 1e-9):.2f} images/s); outputs in {out}")
    return 1 if failed else 0
