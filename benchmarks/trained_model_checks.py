"""Checks that need a trained model: token-merging quality (issue 7) and bf16 agreement (issue 8).

    make demo   # trains SegFormer-B0 on the synthetic set into demo_out/
    .venv/bin/python benchmarks/trained_model_checks.py --run demo_out

1. Token merging: the validation set is scored (mmseg test pipeline, whole image) with the images upscaled
   keep-ratio so the short side is --short (default 512; every stage's token grid then holds its merge
   cells), without merging and with each SegFormer++ preset on the same weights; mIoU and the drop.
2. bf16: per validation image, the argmax of the logits under bf16 autocast vs fp32 (same resizing as the
   evaluation), at the demo's own scale and at --short; pixel agreement over the whole set, and bf16 mIoU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

import segformer
from segformer.data.datasets import open_dataset
from segformer.data.transforms import TestTransform
from segformer.evaluation import evaluate


def merging_quality(model, val, scale: tuple[int, int]) -> list[tuple[str, float]]:
    rows = []
    for preset in (None, "hq", "fast", "2x2", "downsample"):
        model.set_token_merging(preset)
        rows.append((preset or "none", evaluate(model, val, scale=scale, progress=False)["mIoU"]))
    model.set_token_merging(None)
    return rows


@torch.inference_mode()
def bf16_agreement(model, val, scale: tuple[int, int]) -> float:
    transform = TestTransform(scale)
    same = total = 0
    for i in range(len(val)):
        image, label = transform(*val.load(i))
        x = image.unsqueeze(0)
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).float()
        size = label.shape[-2:]
        a = F.interpolate(fp32, size=size, mode="bilinear", align_corners=False).argmax(1)
        b = F.interpolate(bf16, size=size, mode="bilinear", align_corners=False).argmax(1)
        same += int((a == b).sum())
        total += a.numel()
    return 100.0 * same / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="demo_out", help="a demo output folder (default demo_out)")
    parser.add_argument("--short", type=int, default=512, help="short side for the upscaled evaluation")
    args = parser.parse_args()
    run = Path(args.run)
    model = segformer.load_model(run / "run" / "final").eval()
    val = open_dataset(run / "data", "val")
    recipe = yaml.safe_load((run / "run" / "config.yaml").read_text())
    own = tuple(recipe["scale"])  # the demo's evaluation scale
    big = (4 * args.short, args.short)
    print(f"model {run / 'run' / 'final'}, {len(val)} validation images, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"\nToken merging, images upscaled keep-ratio into {big} (short side {args.short}):")
    print("| strategy | mIoU | change |")
    print("|---|---|---|")
    rows = merging_quality(model, val, big)
    for name, miou in rows:
        print(f"| {name} | {miou:.2f} | {miou - rows[0][1]:+.2f} |")
    print("\nbf16 autocast vs fp32, argmax agreement over all validation pixels:")
    print("| scale | agreement | mIoU fp32 | mIoU bf16 |")
    print("|---|---|---|---|")
    for scale in (own, big):
        agree = bf16_agreement(model, val, scale)
        fp32 = evaluate(model, val, scale=scale, progress=False)["mIoU"]
        bf16 = evaluate(model, val, scale=scale, dtype="bfloat16", progress=False)["mIoU"]
        print(f"| {scale} | {agree:.3f}% | {fp32:.2f} | {bf16:.2f} |", flush=True)


if __name__ == "__main__":
    main()
