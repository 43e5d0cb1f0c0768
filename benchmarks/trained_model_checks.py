"""Checks that need a trained model: token-merging quality (issue 7) and bf16 agreement (issue 8).

    make demo   # trains SegFormer-B0 on the synthetic set into demo_out/
    .venv/bin/python benchmarks/trained_model_checks.py --run demo_out

1. Token merging: the validation set is scored (mmseg test pipeline, whole image) with the images resized
   keep-ratio so the short side is each of --short (default 128 256 512; from 128 px on, every stage's token
   grid holds its merge cells, which the script checks: no stage may fall back to unmerged), without merging
   and with each SegFormer++ preset on the same weights; mIoU and the change.
2. bf16: per validation image, the argmax of the logits under bf16 autocast vs fp32 (same resizing as the
   evaluation), at the demo's own scale and at each --short; pixel agreement over the whole set, and mIoU.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

import segformer
from segformer.data.datasets import open_dataset
from segformer.data.synthetic import write_synthetic
from segformer.data.transforms import TestTransform
from segformer.evaluation import evaluate


def merging_quality(model, val, scale: tuple[int, int]) -> list[tuple[str, float]]:
    rows = []
    for preset in (None, "hq", "fast", "2x2", "downsample"):
        model.set_token_merging(preset)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="token merging")  # a stage that would not merge
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
    parser.add_argument("--images", type=int, default=0,
                        help="score a fresh synthetic validation set of this many images (same distribution as the "
                             "demo's, another seed) instead of the demo's own 50, for less noise")
    parser.add_argument("--short", type=int, nargs="+", default=[128, 256, 512], help="short sides to evaluate at")
    args = parser.parse_args()
    run = Path(args.run)
    model = segformer.load_model(run / "run" / "final").eval()
    val = open_dataset(run / "data", "val")
    scratch = tempfile.TemporaryDirectory()  # removed when the script ends
    if args.images:  # the demo's image sizes (examples/demo.py), another seed
        root = write_synthetic(Path(scratch.name) / "set", num_train=0, num_val=args.images, seed=1, min_size=96,
                               max_size=128)
        val = open_dataset(root, "val")
    recipe = yaml.safe_load((run / "run" / "config.yaml").read_text())
    own = tuple(recipe["scale"])  # the demo's evaluation scale
    print(f"model {run / 'run' / 'final'}, {len(val)} validation images, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; the demo evaluates at {own}")
    print("\nToken merging (mIoU; change vs none in brackets), images resized keep-ratio to the short side:")
    print("| short side | none | hq | fast | 2x2 | downsample |")
    print("|---|---|---|---|---|---|")
    for short in args.short:
        rows = merging_quality(model, val, (4 * short, short))
        cells = [f"{rows[0][1]:.2f}"] + [f"{m:.2f} ({m - rows[0][1]:+.2f})" for _, m in rows[1:]]
        print(f"| {short} | {' | '.join(cells)} |", flush=True)
    print("\nbf16 autocast vs fp32, argmax agreement over all validation pixels:")
    print("| scale | agreement | mIoU fp32 | mIoU bf16 |")
    print("|---|---|---|---|")
    for scale in [own] + [(4 * short, short) for short in args.short]:
        agree = bf16_agreement(model, val, scale)
        fp32 = evaluate(model, val, scale=scale, progress=False)["mIoU"]
        bf16 = evaluate(model, val, scale=scale, dtype="bfloat16", progress=False)["mIoU"]
        print(f"| {scale} | {agree:.3f}% | {fp32:.2f} | {bf16:.2f} |", flush=True)


if __name__ == "__main__":
    main()
