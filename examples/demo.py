"""The main job of `make demo`, offline: build a SegFormer-B0, segment the bundled example image and write
a colour overlay. (Random weights until a trained checkpoint is given with --model.)"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

import segformer
from segformer.visualize import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--model", default=None, help="checkpoint / HF directory / hub id (default: random B0)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = segformer.load_model(args.model) if args.model else segformer.create_model("segformer-b0")
    image_path = resources.files("segformer") / "assets" / "chelsea.jpg"
    image = np.asarray(Image.open(image_path).convert("RGB"))
    start = time.perf_counter()
    labels = segformer.predict(model, image)
    seconds = time.perf_counter() - start
    picture = render(image, labels, model.config.num_classes, class_names=model.config.class_names, legend=True)
    path = out / "chelsea_overlay.png"
    picture.save(path)
    print(f"segmented {image.shape[1]}x{image.shape[0]} in {seconds:.2f} s; "
          f"{len(np.unique(labels))} classes present; overlay: {path}")


if __name__ == "__main__":
    main()
