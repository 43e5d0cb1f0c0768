"""Peak memory of `segformer.predict` on one huge image (issue 13, item 8): the full-resolution logits used to
be the cost (K x H x W float32); now labels are computed in bands of rows.

Each case runs in a fresh process, which reports its peak RSS (ru_maxrss) before and after `predict`; the model
is a random-init SegFormer-B0 with K classes, the image one colour, resized to 64x64 for the model (as
`segformer predict --size 64`). Compare two source trees side by side (e.g. before/after a change):

    .venv/bin/python benchmarks/huge_image_memory.py --size 12000 --classes 4 150 --src src /path/to/old/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DRIVER = r"""
import inspect, json, resource, sys, time
import numpy as np
import segformer
from segformer.preprocess import ImageProcessor
side, classes = int(sys.argv[1]), int(sys.argv[2])
model = segformer.create_model("segformer-b0", num_classes=classes).eval()
rgb = np.full((side, side, 3), 90, dtype=np.uint8)
extra = {"max_pixels": 0} if "max_pixels" in inspect.signature(segformer.predict).parameters else {}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tick = time.perf_counter()
labels = segformer.predict(model, rgb, processor=ImageProcessor(size=(64, 64)), **extra)
seconds = time.perf_counter() - tick
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_mib": before / 1024, "peak_mib": peak / 1024, "seconds": seconds,
                  "labels_mib": labels.nbytes / 2**20}))
"""


def measure(src: str, side: int, classes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        driver = Path(tmp) / "driver.py"
        driver.write_text(DRIVER)
        out = subprocess.run([sys.executable, str(driver), str(side), str(classes)], env=env, capture_output=True,
                             text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=12000, help="image side in pixels (default 12000)")
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 150])
    parser.add_argument("--src", nargs="+", default=["src"], help="source trees to compare (PYTHONPATH each)")
    args = parser.parse_args()
    for classes in args.classes:
        for src in args.src:
            r = measure(src, args.size, classes)
            print(f"{args.size}x{args.size}, {classes:3d} classes, {src}: peak RSS {r['peak_mib']:7.0f} MiB "
                  f"(+{r['peak_mib'] - r['before_mib']:6.0f} MiB in predict; label map {r['labels_mib']:.0f} MiB; "
                  f"full logits would be {4 * classes * args.size**2 / 2**20:.0f} MiB), {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
