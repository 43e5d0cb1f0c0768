"""The main job of `make demo`, offline: generate the synthetic segmentation set, train SegFormer-B0 from scratch
on it for a few minutes of CPU, evaluate it, and write overlays of validation images and the training plots.

Output folder (default demo_out/): data/ (the synthetic set), run/ (config.yaml, log.jsonl, checkpoints/,
final/ (loadable by segformer.load_model), metrics.json, plots/), overlays/ (image | ground truth |
prediction per validation image). A folder written by an earlier demo run is replaced; any other non-empty
folder is left alone (the demo refuses to run there).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import segformer
from segformer.data.datasets import open_dataset
from segformer.data.synthetic import SYNTHETIC_CLASSES, write_synthetic
from segformer.preprocess import ImageProcessor
from segformer.runtime import retain_freed_memory
from segformer.training import TrainConfig, train
from segformer.visualize import render

MARKER = ".segformer-demo"
PARTS = ("data", "run", "overlays", MARKER)


def prepare(out: Path) -> None:
    """Make `out` an empty demo folder: replace an earlier demo's outputs, refuse anything else."""
    if out.exists():
        contents = {p.name for p in out.iterdir()}
        if contents and (MARKER not in contents or contents - set(PARTS)):
            sys.exit(f"demo: {out} is not empty and not an earlier demo's output folder; choose another --out")
        for name in contents:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by examples/demo.py; the next demo run replaces this folder\n")


def write_overlays(model, data: Path, out: Path, scale: tuple[int, int], count: int) -> list[Path]:
    """image | ground truth | prediction strips for the first `count` validation images."""
    val = open_dataset(data, "val")
    processor = ImageProcessor.mmseg(scale)  # the evaluation's test pipeline
    palette = np.array([[40, 40, 40], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]],
                       dtype=np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(count, len(val))):
        image, label = val.load(i)
        pred = segformer.predict(model, image, processor=processor)
        zoom = max(1, 256 // image.shape[0])  # small synthetic images: show them larger (nearest neighbour)
        image, label, pred = (np.repeat(np.repeat(a, zoom, axis=0), zoom, axis=1) for a in (image, label, pred))
        panels = [Image.fromarray(image),
                  render(image, label, len(SYNTHETIC_CLASSES), palette=palette, opacity=0.6),
                  render(image, pred, len(SYNTHETIC_CLASSES), palette=palette, opacity=0.6,
                         class_names=list(SYNTHETIC_CLASSES), legend=True)]
        h = image.shape[0]
        strip = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), h), "white")
        x = 0
        for panel in panels:
            strip.paste(panel, (x, 0))
            x += panel.width + 8
        path = out / f"val_{i:03d}.png"
        strip.save(path)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--iters", type=int, default=2400, help="training iterations (default 2400)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--train-images", type=int, default=2000, help="synthetic training images (default 2000)")
    parser.add_argument("--val-images", type=int, default=50, help="synthetic validation images (default 50)")
    parser.add_argument("--workers", type=int, default=1, help="data loading processes (default 1)")
    parser.add_argument("--overlays", type=int, default=8, help="validation overlays to write (default 8)")
    args = parser.parse_args()
    logging.basicConfig(format="demo: %(message)s")
    logging.getLogger("segformer").setLevel(logging.INFO)
    # One core per data worker, the rest for the model: oversubscribed cores make torch's threads wait on
    # each other (on 2 busy cores, 2 model threads + 1 worker ran several times slower than 1 + 1).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.workers))
    retain_freed_memory()  # as the CLI does: big buffers are reused instead of page-faulted in every step
    start = time.perf_counter()
    out = Path(args.out)
    prepare(out)
    data = write_synthetic(out / "data", num_train=args.train_images, num_val=args.val_images, seed=0,
                           min_size=96, max_size=128)
    print(f"demo: wrote {args.train_images} + {args.val_images} synthetic images ({', '.join(SYNTHETIC_CLASSES)}) "
          f"to {data}")
    # SegFormer-B0 from random weights. The paper's recipe (lr 6e-5, 160k iterations, ImageNet encoder) is far too
    # slow for minutes of CPU. Measured on this synthetic set: whole images at their
    # own resolution (no random rescaling: small shapes and stripes survive), no photometric distortion, no
    # drop-path or decoder dropout, AdamW 6e-4 with the heads at x10 learn fastest per CPU second.
    config = TrainConfig(model="segformer-b0", model_args={"drop_path_rate": 0.0, "decoder_dropout": 0.0},
                         data=str(data), crop_size=(96, 96), scale=(128, 96), ratio_range=(1.0, 1.0),
                         photometric=False, batch_size=args.batch_size, iters=args.iters, lr=6e-4, head_lr_mult=10.0,
                         warmup_iters=50, eval_interval=max(args.iters // 5, 1),
                         checkpoint_interval=max(args.iters // 2, 1), log_interval=25, keep_checkpoints=1,
                         num_workers=args.workers, out=str(out / "run"))
    metrics = train(config)
    model = segformer.load_model(out / "run" / "final")  # what a user gets: the saved model, reloaded
    overlays = write_overlays(model, data, out / "overlays", config.scale, args.overlays)
    minutes = (time.perf_counter() - start) / 60
    ious = ", ".join(f"{name} {iou:.1f}" for name, iou in zip(metrics["classes"], metrics["IoU"], strict=True))
    print(f"\ndemo: SegFormer-B0 trained from scratch for {config.iters} iterations in {minutes:.1f} min "
          f"(data generation and evaluation included)")
    print(f"demo: validation mIoU {metrics['mIoU']:.2f} (aAcc {metrics['aAcc']:.2f}, mAcc {metrics['mAcc']:.2f}) "
          f"over {metrics['num_images']} images")
    print(f"demo: per-class IoU: {ious}")
    print(f"demo: model     {out / 'run' / 'final'}  (segformer.load_model(...) / segformer predict --model ...)")
    print(f"demo: metrics   {out / 'run' / 'metrics.json'}")
    print(f"demo: plots     {out / 'run' / 'plots'}")
    print(f"demo: overlays  {out / 'overlays'} ({len(overlays)} images: input | ground truth | prediction)")


if __name__ == "__main__":
    main()
