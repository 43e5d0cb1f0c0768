"""Peak memory of `segformer.predict(mode="slide")` on a huge image (acceptance: 8192x8192, B0, 150 classes, CPU,
under 3 GB peak RSS).

    .venv/bin/python benchmarks/predict_memory.py --size 8192 --classes 150 --crop 512 --stride 341

Random weights and a random image (memory does not depend on either). Prints one markdown row for RESULTS.md:
peak RSS of the whole process (imports, model, image and label map included), the part added by `predict`, and
the wall time. For comparison, the float32 logits that MMSegmentation's `slide_inference` (and any
"accumulate full logits, then argmax" implementation) allocates are K x H x W x 4 bytes: 40 GB here, more than
this machine has, so the reference cannot run this case at all.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import segformer
from segformer.preprocess import ImageProcessor


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="segformer-b0")
    parser.add_argument("--size", type=int, default=8192, help="image side (square)")
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--stride", type=int, default=341)
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = segformer.create_model(args.model, num_classes=args.classes).eval()
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    kw = dict(mode="slide", processor=ImageProcessor(size=None), crop_size=(args.crop, args.crop),
              stride=(args.stride, args.stride), batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    segformer.inference.predict(model, image[:args.crop + 64, :args.crop + 64], **kw)  # warm-up
    before = peak_rss_mib()
    start = time.perf_counter()
    labels = segformer.inference.predict(model, image, **kw)
    elapsed = time.perf_counter() - start
    peak = peak_rss_mib()
    full_logits = args.classes * args.size * args.size * 4 / 2**30
    print(f"| predict slide {args.model} {args.size}x{args.size}, {args.classes} classes, crop {args.crop} stride "
          f"{args.stride}, {args.device} {args.dtype}, {torch.get_num_threads()} threads "
          f"| peak RSS {peak / 1024:.2f} GiB (predict added {(peak - before) / 1024:.2f} GiB) | {elapsed:.0f} s "
          f"| full float32 logits would be "
          f"{full_logits:.1f} GiB | labels {labels.dtype} {labels.shape} |")


if __name__ == "__main__":
    main()
