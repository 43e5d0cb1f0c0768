"""`segformer` command line: one subcommand per job; each is a `_add_<name>` + `_run_<name>` pair."""

from __future__ import annotations

import argparse
import sys


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named models (and their hub ids)")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from .models.zoo import ZOO

    for name in sorted(ZOO):
        entry = ZOO[name]
        print(f"{name:32s} {entry.hub_id or '-':48s} {entry.description}")
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint between formats (hf, nvlabs, mmseg, ours)")
    p.add_argument("src", help="hub id, HF directory or checkpoint file")
    p.add_argument("dst", help="output directory (hf, ours) or file (nvlabs, mmseg: .pth or .safetensors)")
    p.add_argument("--to", choices=["hf", "nvlabs", "mmseg", "ours", "timm"], default="hf",
                   help="target format (timm: a ViT / SETR encoder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .checkpoints import convert

    out = convert(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    print(f"wrote {out} ({args.to} format)")
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a small synthetic segmentation set (folder layout) for demos and tests")
    p.add_argument("root", help="output folder: gets images/<split>/, masks/<split>/ and classes.txt")
    p.add_argument("--train", type=int, default=200, help="number of training images (default 200)")
    p.add_argument("--val", type=int, default=50, help="number of validation images (default 50)")
    p.add_argument("--seed", type=int, default=0, help="the set is a pure function of the seed (default 0)")
    p.add_argument("--min-size", type=int, default=64, help="smallest image side in pixels (default 64)")
    p.add_argument("--max-size", type=int, default=160, help="largest image side in pixels (default 160)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic set at ROOT")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import SYNTHETIC_CLASSES, write_synthetic

    root = write_synthetic(args.root, num_train=args.train, num_val=args.val, seed=args.seed,
                           min_size=args.min_size, max_size=args.max_size, overwrite=args.overwrite)
    print(f"wrote {args.train} train + {args.val} val images, {len(SYNTHETIC_CLASSES)} classes, to {root}")
    return 0


def _hw(values: list[int] | None, name: str) -> tuple[int, int] | None:
    """One int (square) or two (h w) from the command line."""
    if values is None:
        return None
    if len(values) not in (1, 2) or min(values) < 1:
        raise ValueError(f"{name} takes one or two positive ints (H W), got {values}")
    return (values[0], values[-1])


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model on a dataset: aAcc, mIoU, mAcc and per-class IoU/Acc (as mmseg)")
    p.add_argument("--model", required=True, help="hub id, zoo preset, HF directory or checkpoint file")
    p.add_argument("--data", required=True, help="dataset root: ADE20K, Cityscapes or folder layout (detected)")
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole", help="inference mode (default whole)")
    p.add_argument("--crop", type=int, nargs="+", metavar="N", help="slide window size: H W, or one int")
    p.add_argument("--stride", type=int, nargs="+", metavar="N", help="slide window stride: H W, or one int")
    p.add_argument("--scale", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="keep-ratio resize bound before inference (default: the dataset's recipe, e.g. "
                        "2048 512 for ADE20K, 2048 1024 for Cityscapes; none for a folder)")
    p.add_argument("--scales", type=float, nargs="+", help="multi-scale test ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped runs (test-time augmentation)")
    p.add_argument("--token-merging", help="SegFormer++ strategy: hq, fast, 2x2, downsample, or a YAML file")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="autocast dtype")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--num-workers", type=int, default=2, help="data loading workers (default 2)")
    p.add_argument("--json", metavar="OUT", help="write the metrics (and the settings) to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json
    import math
    import os
    import tempfile
    from pathlib import Path

    import torch

    from . import load_model
    from .data.datasets import open_dataset
    from .evaluation import evaluate

    crop, stride = _hw(args.crop, "--crop"), _hw(args.stride, "--stride")
    if args.mode == "slide" and (crop is None or stride is None):
        raise ValueError("--mode slide needs --crop and --stride")
    out = Path(args.json) if args.json else None
    if out is not None and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    overrides = {"token_merging": args.token_merging} if args.token_merging else {}
    model = load_model(args.model, **overrides)
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    dataset = open_dataset(args.data, args.split, num_classes=num_classes)
    if num_classes is not None and num_classes != dataset.num_classes:
        raise ValueError(f"model {args.model} predicts {num_classes} classes but dataset {args.data} has "
                         f"{dataset.num_classes}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    result = evaluate(model, dataset, scale=tuple(args.scale) if args.scale else None, mode=args.mode,
                      crop_size=crop, stride=stride, scales=args.scales, flip=args.flip, dtype=args.dtype,
                      num_workers=args.num_workers)

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
                    "mode": args.mode, "crop_size": crop, "stride": stride,
                    "scale": list(args.scale) if args.scale else dataset.scale, "scales": args.scales,
                    "flip": args.flip, "token_merging": args.token_merging, "dtype": args.dtype}

        def clean(v):  # JSON has no NaN: classes with 0 / 0 become null
            if isinstance(v, float) and math.isnan(v):
                return None
            return [clean(x) for x in v] if isinstance(v, (list, tuple)) else v

        payload = {**{k: clean(v) for k, v in result.items()}, "settings": settings}
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f, indent=2)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            os.unlink(tmp)
            raise
        print(f"wrote {out}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="segment images: NAME.png label maps and NAME_overlay.png pictures",
        description="Segment image files, folders (searched recursively) or glob patterns. Writes NAME.png (class "
                    "ids: 8-bit, or 16-bit above 255 classes) and NAME_overlay.png under --out; a folder's "
                    "sub-folders are kept. Under `torchrun --nproc-per-node N segformer predict ...` each process "
                    "takes every N-th image. Exit code 1 if any image failed (it is reported and skipped).")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns (quote them)")
    p.add_argument("--model", required=True, help="hub id, zoo preset, HF directory or checkpoint file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole", help="inference mode (default whole)")
    p.add_argument("--crop", type=int, nargs="+", metavar="N", help="slide window: H W, or one int (default 512)")
    p.add_argument("--stride", type=int, nargs="+", metavar="N", help="slide stride: H W, or one int (default 341)")
    p.add_argument("--resize", choices=["fixed", "keep-ratio", "none"], default="fixed",
                   help="fixed: --size, aspect ignored (HF, the default); keep-ratio: into --scale (mmseg); none")
    p.add_argument("--size", type=int, nargs="+", metavar="N", help="--resize fixed: H W, or one int (default 512)")
    p.add_argument("--scale", type=int, nargs=2, metavar=("LONG", "SHORT"), default=[2048, 512],
                   help="--resize keep-ratio bound (default 2048 512)")
    p.add_argument("--size-divisor", type=int, metavar="N",
                   help="then round each side up to a multiple of N (mmseg ResizeToMultiple, e.g. 32)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0],
                   help="multi-scale test ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped runs (test-time augmentation)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="autocast dtype")
    p.add_argument("--batch-size", type=int, default=1, help="slide windows per forward pass (default 1)")
    p.add_argument("--palette", choices=["auto", "ade20k", "cityscapes", "generated"], default="auto",
                   help="overlay colours (auto: ADE20K for 150 classes, Cityscapes for 19, else generated)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    p.add_argument("--legend", action="store_true", help="add a legend of the classes present to the overlay")
    p.add_argument("--no-overlay", action="store_true", help="write the label maps only")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--token-merging", help="SegFormer++ strategy: hq, fast, 2x2, downsample, or a YAML file")
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


def _save_png(picture, path) -> None:
    """Write a PIL image or an integer array (8-bit, or 16-bit grey) as PNG, atomically (temp file + rename)."""
    import os

    from PIL import Image

    picture = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        picture.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _run_predict(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from . import load_model
    from .data.palettes import get_class_names, get_palette
    from .inference import check_options, collect_images, predict, shard
    from .preprocess import ImageProcessor, to_rgb_array
    from .visualize import render

    crop, stride = _hw(args.crop, "--crop") or (512, 512), _hw(args.stride, "--stride") or (341, 341)
    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be in [0, 1], got {args.opacity}")
    check_options(mode=args.mode, crop_size=crop, stride=stride, scales=args.scales, batch_size=args.batch_size)
    if args.resize == "keep-ratio":
        processor = ImageProcessor.mmseg(tuple(args.scale), size_divisor=args.size_divisor)
    else:
        size = (_hw(args.size, "--size") or (512, 512)) if args.resize == "fixed" else None
        processor = ImageProcessor(size=size, size_divisor=args.size_divisor)
    out = Path(args.out)
    # Every process checks every output before any writes, so they all refuse (or all go) together.
    jobs = _predict_outputs(collect_images(args.inputs, exclude=out), out, not args.no_overlay, args.overwrite)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("gloo")
        dist.barrier()
    model = load_model(args.model, **({"token_merging": args.token_merging} if args.token_merging else {}))
    config = getattr(model, "config", None)
    if getattr(config, "task", None) != "segmentation":
        raise ValueError(f"model {args.model} has no segmentation head (task: {getattr(config, 'task', 'encoder')})")
    if config.num_classes > 65536:
        raise ValueError(f"model {args.model} has {config.num_classes} classes; PNG label maps hold at most 65536")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"  # one GPU per process
    model.to(device).eval()
    palette_name = None if args.palette == "auto" else args.palette
    palette = get_palette(config.num_classes, palette_name)
    names = config.class_names or get_class_names(config.num_classes, palette_name)
    mine, failed, start = shard(jobs, rank, world), 0, time.perf_counter()
    for image, label_path, overlay_path in tqdm(mine, unit="image", disable=rank != 0, dynamic_ncols=True):
        try:
            rgb = to_rgb_array(image)
            labels = predict(model, rgb, mode=args.mode, processor=processor, crop_size=crop, stride=stride,
                             scales=args.scales, flip=args.flip, dtype=args.dtype, batch_size=args.batch_size)
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


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model: the papers' recipes (configs/*.yaml), AMP, exact --resume, DDP via torchrun",
        description="Train from a recipe YAML (see configs/), plain flags and --set key=value overrides (later wins). "
                    "The run directory (--out) gets config.yaml, log.jsonl, checkpoints/, final/ (loadable by "
                    "segformer.load_model), metrics.json and plots/. Multi-GPU or multi-process CPU: "
                    "`torchrun --nproc-per-node N $(which segformer) train ...`; --batch-size is the global batch.")
    p.add_argument("config", nargs="?", help="recipe YAML (flat TrainConfig fields); optional")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (value parsed as YAML), e.g. --set amp=bf16 --set "
                        "model_args.drop_path_rate=0; repeatable")
    p.add_argument("--model", help="zoo name, e.g. segformer-b0, setr-pup (see `segformer models`)")
    p.add_argument("--data", help="dataset root: ADE20K, Cityscapes or folder layout (detected)")
    p.add_argument("--num-classes", type=int, help="class count (default: the dataset's, e.g. from classes.txt)")
    p.add_argument("--crop", type=int, nargs="+", metavar="N", help="training crop: H W, or one int")
    p.add_argument("--batch-size", type=int, help="global batch size (all processes and accumulation steps)")
    p.add_argument("--iters", type=int, help="training iterations")
    p.add_argument("--lr", type=float, help="base learning rate (heads train at head_lr_mult x this)")
    p.add_argument("--out", help="run directory")
    p.add_argument("--pretrained", metavar="SOURCE", help="encoder or full checkpoint: hub id, directory or file")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                   help="continue exactly from the newest checkpoint in --out (or from CHECKPOINT)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import logging
    import os

    from tqdm import tqdm

    from .training import load_config, train

    class TqdmHandler(logging.Handler):  # log lines above the progress bar instead of through it
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    main_rank = int(os.environ.get("RANK", 0)) == 0
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("segformer train: %(message)s"))
    logger = logging.getLogger("segformer")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if main_rank else logging.WARNING)
    crop = _hw(args.crop, "--crop")
    flags = {"model": args.model, "data": args.data, "num_classes": args.num_classes,
             "crop_size": list(crop) if crop else None, "batch_size": args.batch_size, "iters": args.iters,
             "lr": args.lr, "out": args.out, "pretrained": args.pretrained}
    config = load_config(args.config, flags, args.sets)
    metrics = train(config, resume=args.resume)
    if main_rank:
        print(f"segformer train: {config.iters} iterations; validation aAcc {metrics['aAcc']:.2f}  mIoU "
              f"{metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}; run directory {config.out} (final model in "
              f"{os.path.join(config.out, 'final')})")
    return 0


def _size(text: str, name: str) -> tuple[int, int]:
    """"HxW" or "N" (square) from the command line."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError(f"{name} takes HxW or one positive int (e.g. 512x1024 or 512), got {text!r}")
    return parts[0], parts[-1]


def _load_for_bench(spec: str, token_merging: str | None):
    """A zoo name (random weights) or any `load_model` source, with token merging applied if asked."""
    from . import create_model, list_models, load_model

    model = create_model(spec) if spec in list_models() else load_model(spec)
    if token_merging is not None and not hasattr(model, "set_token_merging"):
        raise ValueError(f"--token-merging: model {spec} ({type(model).__name__}) has no token merging")
    return model


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="parameters, GMACs, latency, throughput and peak memory (optionally vs HF)",
                       description="Times one random batch after warm-up (median/min/max). GMACs are per image: "
                                   "'gmacs' counts the architecture as the papers do (attention products included, "
                                   "textbook All-MLP decoder), 'gmacs_executed' what this implementation runs.")
    p.add_argument("--model", required=True, help="zoo name (random weights), hub id, HF directory or checkpoint")
    p.add_argument("--size", default="512x512", help="input HxW, or one int for a square (default 512x512)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="autocast dtype (default float32: no autocast)")
    p.add_argument("--token-merging", help="SegFormer++ strategy: hq, fast, 2x2, downsample, or a YAML file")
    p.add_argument("--compare", choices=["hf"], help="also time transformers' model with the same weights, "
                                                      "interleaved, and print the ratio")
    p.add_argument("--train", action="store_true", help="time forward + backward + AdamW step instead of inference")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--runs", type=int, default=10, help="timed runs (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--json", metavar="OUT", help="also write every number (and the settings) to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .bench import benchmark, hf_twin
    from .checkpoints.io import write_json

    height, width = _size(args.size, "--size")
    out = Path(args.json) if args.json else None
    if out is not None and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    model = _load_for_bench(args.model, args.token_merging)
    reference = hf_twin(model) if args.compare == "hf" else None  # before merging: HF runs the exact model
    if args.token_merging is not None:
        model.set_token_merging(args.token_merging)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    r = benchmark(model, height, width, batch=args.batch, dtype=args.dtype, device=device, runs=args.runs,
                  warmup=args.warmup, train=args.train, reference=reference)
    settings = {"model": args.model, "size": [height, width], "batch": args.batch, "dtype": args.dtype,
                "token_merging": args.token_merging, "mode": "train" if args.train else "inference",
                "device": device, "runs": args.runs, "warmup": args.warmup}
    mib = 2.0 ** 20

    def mem(prefix: str) -> str:
        peak, increase = r[prefix + "peak_memory_bytes"], r[prefix + "peak_memory_increase_bytes"]
        return "n/a" if peak is None else f"{peak / mib:.0f} MiB (+{(increase or 0) / mib:.0f} during the step)"

    print(f"{args.model} {height}x{width} batch {args.batch} {args.dtype} {settings['mode']} on {device} "
          f"(torch {r['torch']}, {r['threads']} threads)")
    print(f"params {r['params']:,}  GMACs {r['gmacs']:.2f} (executed {r['gmacs_executed']:.2f}, attention "
          f"{r['attention_gmacs']:.2f})")
    for prefix, label in [("", "ours"), ("hf_", "HF")] if reference is not None else [("", "ours")]:
        print(f"{label:5s} latency median {r[prefix + 'latency_median_s'] * 1e3:.1f} ms (min "
              f"{r[prefix + 'latency_min_s'] * 1e3:.1f}, max {r[prefix + 'latency_max_s'] * 1e3:.1f})  "
              f"throughput {r[prefix + 'throughput_img_s']:.2f} img/s  peak memory {mem(prefix)}"
              f" [{r['memory_kind']}]")
    if reference is not None:
        diff = r.get("hf_max_abs_diff")
        print(f"speed-up vs HF {r['speedup_vs_hf']:.2f}x" + (f"  fp32 max abs logit diff {diff:.1e}" if diff is not None
                                                             else ""))
    if out is not None:
        write_json(out, {**r, "settings": settings}, overwrite=args.overwrite)
        print(f"wrote {out}")
    return 0


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
    from .export import export_onnx, verify_onnx

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


COMMANDS = [_add_models, _add_convert, _add_synth, _add_eval, _add_predict, _add_train, _add_bench, _add_export]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segformer", description="Semantic segmentation with transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"segformer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
