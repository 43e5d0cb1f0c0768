"""Mix-FFN vs a learned positional embedding when the test resolution differs from training (SegFormer Table 6).

Trains SegFormer-B0 twice from scratch with the same budget and seed on the synthetic set at one crop size,
once with Mix-FFN (the 3x3 depthwise conv as the positional cue) and once with `pos_embed="learned"` (an
absolute embedding per stage for the crop size, bilinearly resized at other sizes, no depthwise conv), then
evaluates both on the validation images at the training scale and upscaled 2x and 3x (larger inputs, larger
objects), and on 2x2 / 3x3 mosaics of validation images at the training scale (larger inputs, same object size:
closer to the paper's test, 768x768 training crops vs 1024x2048 whole Cityscapes images).

    .venv/bin/python benchmarks/mixffn_vs_pe.py --out runs/mixffn_vs_pe [--iters 800]

Writes OUT/results.json and prints a Markdown table (the one in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

import segformer
from segformer.data.datasets import SegmentationDataset, open_dataset
from segformer.data.synthetic import write_synthetic
from segformer.evaluation import evaluate
from segformer.runtime import retain_freed_memory
from segformer.training import TrainConfig, train

CROP = (96, 96)
SCALE = (128, 96)  # keep-ratio bound of the training resize and of the 1x test resize
FACTORS = (1, 2, 3)
TILE = (96, 128)  # mosaic tile: validation images padded (image 0, label 255) or cropped to this (h, w)


class Mosaic(SegmentationDataset):
    """k x k tiles of consecutive validation images at their own scale: a larger input, same object size."""

    def __init__(self, dataset: SegmentationDataset, k: int):
        super().__init__(dataset.root, dataset.split, dataset.samples[: len(dataset) // (k * k)],
                         dataset.class_names, dataset.ignore_index)
        self.dataset, self.k = dataset, k

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        (th, tw), k = TILE, self.k
        image = np.zeros((k * th, k * tw, 3), np.uint8)
        label = np.full((k * th, k * tw), self.ignore_index, np.int64)
        for t in range(k * k):
            tile_image, tile_label = self.dataset.load(index * k * k + t)
            h, w = min(th, tile_label.shape[0]), min(tw, tile_label.shape[1])
            y, x = (t // k) * th, (t % k) * tw
            image[y:y + h, x:x + w], label[y:y + h, x:x + w] = tile_image[:h, :w], tile_label[:h, :w]
        return image, label


def train_variant(name: str, pos_embed: str, data: Path, out: Path, iters: int) -> Path:
    """Train one variant with the demo's recipe (same seed and budget for both); returns its final/ folder."""
    config = TrainConfig(model="segformer-b0",
                         model_args={"drop_path_rate": 0.0, "decoder_dropout": 0.0, "pos_embed": pos_embed,
                                     "pos_embed_size": list(CROP)},
                         data=str(data), crop_size=CROP, scale=SCALE, ratio_range=(1.0, 1.0), photometric=False,
                         batch_size=8, iters=iters, lr=6e-4, head_lr_mult=10.0, warmup_iters=50,
                         eval_interval=iters, checkpoint_interval=iters, log_interval=50, keep_checkpoints=1,
                         num_workers=1, seed=0, out=str(out / name))
    train(config)
    return out / name / "final"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mixffn_vs_pe", help="output folder (default runs/mixffn_vs_pe)")
    parser.add_argument("--iters", type=int, default=800, help="training iterations per variant (default 800)")
    parser.add_argument("--train-images", type=int, default=1000, help="synthetic training images (default 1000)")
    parser.add_argument("--val-images", type=int, default=50, help="synthetic validation images (default 50)")
    args = parser.parse_args()
    logging.basicConfig(format="mixffn_vs_pe: %(message)s")
    logging.getLogger("segformer").setLevel(logging.INFO)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    retain_freed_memory()
    out = Path(args.out)
    data = out / "data"
    if not (data / "classes.txt").is_file():
        write_synthetic(data, num_train=args.train_images, num_val=args.val_images, seed=0, min_size=96, max_size=128)
    val = open_dataset(data, "val")
    results = {}
    for name, pos_embed in (("mixffn", "mixffn"), ("learned_pe", "learned")):
        start = time.perf_counter()
        final = out / name / "final"
        if not final.is_dir():
            final = train_variant(name, pos_embed, data, out, args.iters)
        model = segformer.load_model(final).eval()
        row = {"train_minutes": (time.perf_counter() - start) / 60}
        for f in FACTORS:
            scale = (SCALE[0] * f, SCALE[1] * f)
            row[f"{f}x"] = evaluate(model, val, scale=scale, progress=False)["mIoU"]
        for k in (1, 2, 3):  # same object scale, canvas k x k tiles
            row[f"mosaic{k}"] = evaluate(model, Mosaic(val, k), scale=None, progress=False)["mIoU"]
        results[name] = row
        print(name, row, flush=True)
    (out / "results.json").write_text(json.dumps({"iters": args.iters, "crop": CROP, "scale": SCALE,
                                                  "results": results}, indent=2))
    print(f"\n| B0 variant | {' | '.join(f'upscaled {f}x' for f in FACTORS)} | drop 1x -> 3x | "
          "mosaic 1x1 | 2x2 | 3x3 | drop 1x1 -> 3x3 |")
    print(f"|---|{'---|' * (len(FACTORS) + 5)}")
    for name, row in results.items():
        cells = " | ".join(f"{row[f'{f}x']:.2f}" for f in FACTORS)
        mosaic = " | ".join(f"{row[f'mosaic{k}']:.2f}" for k in (1, 2, 3))
        print(f"| {name} | {cells} | {row['1x'] - row[f'{FACTORS[-1]}x']:.2f} | {mosaic} | "
              f"{row['mosaic1'] - row['mosaic3']:.2f} |")


if __name__ == "__main__":
    main()
