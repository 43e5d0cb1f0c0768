"""Mix-FFN vs a learned positional embedding when the test resolution differs from training (SegFormer Table 6).

Trains SegFormer-B0 twice from scratch with the same budget and seed on the synthetic set at one crop size,
once with Mix-FFN (the 3x3 depthwise conv as the positional cue) and once with `pos_embed="learned"` (an
absolute embedding per stage for the crop size, bilinearly resized at other sizes, no depthwise conv), then
evaluates both on the validation images at the training scale and upscaled 2x and 3x.

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

import torch

import segformer
from segformer.data.datasets import open_dataset
from segformer.data.synthetic import write_synthetic
from segformer.evaluation import evaluate
from segformer.runtime import retain_freed_memory
from segformer.training import TrainConfig, train

CROP = (96, 96)
SCALE = (128, 96)  # keep-ratio bound of the training resize and of the 1x test resize
FACTORS = (1, 2, 3)


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
        results[name] = row
        print(name, row, flush=True)
    (out / "results.json").write_text(json.dumps({"iters": args.iters, "crop": CROP, "scale": SCALE,
                                                  "results": results}, indent=2))
    print(f"\n| B0 variant | {' | '.join(f'mIoU at {f}x' for f in FACTORS)} | drop 1x -> 3x |")
    print(f"|---|{'---|' * len(FACTORS)}---|")
    for name, row in results.items():
        cells = " | ".join(f"{row[f'{f}x']:.2f}" for f in FACTORS)
        print(f"| {name} | {cells} | {row['1x'] - row[f'{FACTORS[-1]}x']:.2f} |")


if __name__ == "__main__":
    main()
