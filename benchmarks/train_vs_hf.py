"""A user's first training run: `segformer train` with only the obvious flags vs transformers' B0 with a plain loop.

    .venv/bin/python benchmarks/train_vs_hf.py --work /tmp/train_vs_hf [--dataset weave|aerial] [--seed N]

Two folder datasets made here (not the demo's synthetic set), 240 training and 60 validation images each, of
160..224 px per side, seeded:
- "weave": a colour-gradient background (class 0) with 3 to 6 overlapping ellipses and rotated rectangles, each
  filled with one of four textures: stripes, checks, dots, flat (classes 1..4). Colours are drawn from one shared
  pool, so only the texture tells the classes apart.
- "aerial": top-down scenes at a random ground resolution (objects 0.6-1.6x their mean size): grass, roads with
  dashed centre lines, buildings (two-faced roofs, shadows), tree clusters, water; colours overlap between classes.

Ours: `segformer train --model segformer-b0 --data D --crop 128 --batch-size 8 --iters N --lr 6e-4 --out R`
(nothing else: warm-up, intervals, workers and augmentation come from the run-length defaults; `--seed N` adds
`--set seed=N`), run as a subprocess. Its score is the one the run reports (the model's recorded test pipeline,
which `segformer eval` also uses). Transformers: `SegformerForSemanticSegmentation(SegformerConfig(num_labels=5))`
(B0) from random weights, like ours, trained by a plain loop with the same budget: N AdamW steps at lr 6e-4 (torch
defaults otherwise) on batches of 8 random 128x128 crops with random horizontal flips, its own loss (`labels=`),
seeded by --seed. Both models are then scored by `segformer.evaluation.evaluate` on the validation split at the
images' own size (whole image, no resize; transformers' loop saves its model every fifth of the run, each is
scored), and ours also with its recorded protocol. Results go to <work>/results_<N>_<dataset>_s<seed>.json
(`--set KEY=VALUE`, for diagnostics, adds a setting to our run and its name to the folder and results file).
On a loaded machine run the parts side by side:

    python benchmarks/train_vs_hf.py --work W --only ours & python benchmarks/train_vs_hf.py --work W --only hf
    python benchmarks/train_vs_hf.py --work W --only score
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASSES = ("background", "stripes", "checks", "dots", "flat")
POOL = np.array([[230, 60, 50], [40, 160, 70], [50, 90, 220], [240, 200, 40], [150, 60, 190], [30, 190, 200],
                 [250, 130, 30], [120, 120, 120], [245, 245, 245], [20, 20, 30]], dtype=np.float32)


def _texture(kind: int, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) in [0, 1]: the mix between two colours for texture class `kind` (1..4)."""
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    period = rng.uniform(6, 12)
    if kind == 1:  # stripes
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    if kind == 2:  # checks
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == 3:  # dots on a grid
        du = (u % period) - period / 2
        dv = (v % period) - period / 2
        return (du ** 2 + dv ** 2 < (period / 3.5) ** 2).astype(np.float32)
    return np.zeros_like(u, dtype=np.float32)  # flat


def _shape_mask(yy: np.ndarray, xx: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ay, ax = rng.uniform(18, 60, size=2)
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    if rng.random() < 0.5:
        return (u / ax) ** 2 + (v / ay) ** 2 <= 1
    return (np.abs(u) <= ax) & (np.abs(v) <= ay)


def make_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) uint8 image and its (H, W) uint8 label map."""
    height, width = (int(v) for v in rng.integers(160, 225, size=2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = POOL[rng.choice(len(POOL), 2, replace=False)]
    t = ((xx / width) * rng.uniform(-1, 1) + (yy / height) * rng.uniform(-1, 1)) % 1.0
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(3, 7))):
        kind = int(rng.integers(1, 5))
        mask = _shape_mask(yy, xx, height, width, rng)
        a, b = POOL[rng.choice(len(POOL), 2, replace=False)]
        mix = _texture(kind, yy, xx, rng)[..., None]
        image[mask] = (a * (1 - mix) + b * mix)[mask]
        label[mask] = kind
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


AERIAL_CLASSES = ("grass", "road", "building", "tree", "water")
ROOFS = np.array([[170, 70, 60], [120, 110, 105], [150, 100, 70], [90, 100, 130], [200, 190, 170],
                  [60, 60, 65]], dtype=np.float32)


def _smooth_noise(height: int, width: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.uniform(-1, 1, size=(height // cell + 2, width // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def make_aerial_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A top-down scene at a random ground resolution (objects 0.6-1.6x their mean size): grass (0), roads (1),
    buildings (2) with shadows, trees (3) in clusters, water (4) blobs. Colours overlap (grey roofs and roads,
    dark-green trees on grass), so shape and context matter as well as colour."""
    height, width = (int(v) for v in rng.integers(160, 225, size=2))
    zoom = rng.uniform(0.6, 1.6)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    grass = np.array([90, 140, 60], np.float32) + rng.uniform(-25, 25, 3)
    image = grass + 25 * _smooth_noise(height, width, 24, rng)[..., None]
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(0, 3))):  # water: a random walk of discs
        y, x = rng.uniform(0, height), rng.uniform(0, width)
        mask = np.zeros((height, width), bool)
        for _ in range(int(rng.integers(4, 10))):
            y, x = y + rng.normal(0, 12 * zoom), x + rng.normal(0, 12 * zoom)
            mask |= (yy - y) ** 2 + (xx - x) ** 2 <= (rng.uniform(8, 18) * zoom) ** 2
        water = np.array([40, 80, 140], np.float32) + rng.uniform(-20, 20, 3)
        image[mask] = (water + 12 * _smooth_noise(height, width, 16, rng)[..., None])[mask]
        label[mask] = 4
    for _ in range(int(rng.integers(1, 4))):  # roads: straight bands with a dashed centre line
        theta, offset = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3) * min(height, width)
        across = (xx - width / 2) * np.cos(theta) + (yy - height / 2) * np.sin(theta) - offset
        along = -(xx - width / 2) * np.sin(theta) + (yy - height / 2) * np.cos(theta)
        half = rng.uniform(3, 6) * zoom
        mask = np.abs(across) <= half
        image[mask] = rng.uniform(95, 150)
        image[(np.abs(across) <= 0.8) & ((along // (6 * zoom)) % 2 == 0)] = 225
        label[mask] = 1
    for _ in range(int(rng.integers(2, 7))):  # buildings: rotated rectangles with a shadow to the south-east
        cy, cx, theta = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0, np.pi)
        ay, ax = rng.uniform(5, 15, size=2) * zoom
        for shift, is_shadow in ((3 * zoom, True), (0.0, False)):
            u = (xx - cx - shift) * np.cos(theta) + (yy - cy - shift) * np.sin(theta)
            v = -(xx - cx - shift) * np.sin(theta) + (yy - cy - shift) * np.cos(theta)
            mask = (np.abs(u) <= ax) & (np.abs(v) <= ay)
            if is_shadow:
                image[mask] *= 0.55
            else:
                roof = ROOFS[rng.integers(len(ROOFS))] + rng.uniform(-15, 15, 3)
                image[mask] = (roof * (1 + 0.15 * np.sign(u))[..., None])[mask]  # two roof faces
                label[mask] = 2
    for _ in range(int(rng.integers(1, 4))):  # trees: clusters of round crowns, lit from the north-west
        y, x = rng.uniform(0, height), rng.uniform(0, width)
        for _ in range(int(rng.integers(3, 12))):
            ty, tx, r = y + rng.normal(0, 14 * zoom), x + rng.normal(0, 14 * zoom), rng.uniform(3, 7) * zoom
            d2 = (yy - ty) ** 2 + (xx - tx) ** 2
            mask = d2 <= r ** 2
            light = 1 + 0.35 * np.clip(-((yy - ty) + (xx - tx)) / (2 * r), -1, 1)
            image[mask] = (np.array([40, 85, 35], np.float32) * light[..., None])[mask]
            label[mask] = 3
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


DATASETS = {"weave": (make_sample, CLASSES), "aerial": (make_aerial_sample, AERIAL_CLASSES)}


def make_dataset(root: Path, train: int = 240, val: int = 60, seed: int = 2026, kind: str = "weave") -> Path:
    """The weave folder dataset at `root` (kept if complete)."""
    if (root / "classes.txt").is_file():
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = DATASETS[kind][0](rng)
            Image.fromarray(image).save(root / "images" / split / f"{i:04d}.png")
            Image.fromarray(label).save(root / "masks" / split / f"{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(DATASETS[kind][1]) + "\n")
    return root


def run_ours(data: Path, out: Path, iters: int, lr: float, sets: list[str] = ()) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "segformer.cli", "train", "--model", "segformer-b0", "--data", str(data),
           "--crop", "128", "--batch-size", "8", "--iters", str(iters), "--lr", str(lr), "--out", str(out)]
    cmd += [arg for item in sets for arg in ("--set", item)]
    print("ours:", " ".join(cmd[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return time.perf_counter() - start, json.loads((out / "metrics.json").read_text())


def _hf_batch(dataset, rng: np.random.Generator, crop: int = 128, batch: int = 8):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images, labels = [], []
    for index in rng.integers(0, len(dataset), size=batch):
        image, label = dataset.load(int(index))
        y, x = rng.integers(0, image.shape[0] - crop + 1), rng.integers(0, image.shape[1] - crop + 1)
        image, label = image[y:y + crop, x:x + crop], label[y:y + crop, x:x + crop]
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        images.append((torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255 - mean) / std)
        labels.append(torch.from_numpy(label.copy()).long())
    return torch.stack(images), torch.stack(labels)


def run_hf(data: Path, iters: int, lr: float, out: Path, every: int, seed: int = 0):
    """The plain loop; the model is saved (HF layout) to out/step_N every `every` steps and at the end."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from segformer.data.datasets import open_dataset

    torch.manual_seed(seed)
    train_set = open_dataset(data, "train")
    model = SegformerForSemanticSegmentation(SegformerConfig(num_labels=train_set.num_classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    start = time.perf_counter()
    for step in range(1, iters + 1):
        images, labels = _hf_batch(train_set, rng)
        loss = model(pixel_values=images, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            print(f"transformers: step {step}/{iters} loss {loss.item():.4f} "
                  f"{(time.perf_counter() - start) / step:.2f} s/step", flush=True)
        if step % every == 0 or step == iters:
            model.save_pretrained(out / f"step_{step}")
    return time.perf_counter() - start, model


class _Logits(torch.nn.Module):
    """A model seen as a bare logits function: no recorded test pipeline, so `evaluate` does not resize a folder
    dataset's images (both models are scored at the images' own size)."""

    def __init__(self, inner, hf: bool):
        super().__init__()
        self.inner, self.hf = inner, hf

    def forward(self, x):
        return self.inner(pixel_values=x).logits if self.hf else self.inner(x)


def score(model, data: Path, **protocol) -> dict:
    from segformer.data.datasets import open_dataset
    from segformer.evaluation import evaluate

    result = evaluate(model, open_dataset(data, "val"), progress=False, **protocol)
    return {k: round(result[k], 2) for k in ("mIoU", "aAcc", "mAcc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the dataset, the runs and results.json")
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="weave")
    parser.add_argument("--seed", type=int, default=0, help="both runs' seed (ours: --set seed=N when N != 0)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="diagnostics only: a setting for our run (e.g. power=0); its folder is named after it")
    parser.add_argument("--only", choices=["ours", "hf", "score"],
                        help="one part: the two trainings can run as separate processes, then --only score")
    args = parser.parse_args()
    data = make_dataset(args.work / args.dataset, kind=args.dataset)
    sets = args.sets + ([f"seed={args.seed}"] if args.seed else [])
    base = f"{args.iters}_{args.dataset}_s{args.seed}"
    tag = "".join(f"_{item.replace('=', '-')}" for item in args.sets)
    run, hf_dir = args.work / f"ours_{base}{tag}", args.work / f"hf_{base}"
    timing = {}
    if args.only in (None, "ours"):
        timing["ours_wall_s"] = round(run_ours(data, run, args.iters, args.lr, sets)[0], 1)
    if args.only in (None, "hf"):
        timing["hf_train_s"] = round(run_hf(data, args.iters, args.lr, hf_dir, max(1, args.iters // 5),
                                            args.seed)[0], 1)
    if args.only in ("ours", "hf"):
        name = f"timing_ours_{base}{tag}.json" if args.only == "ours" else f"timing_hf_{base}.json"
        (args.work / name).write_text(json.dumps(timing) + "\n")
        return
    write_results(args, data, run, hf_dir, base, tag)


def write_results(args, data: Path, run: Path, hf_dir: Path, base: str, tag: str = "") -> None:
    """Both models scored on the validation split, at every saved step of the transformers loop."""
    from transformers import SegformerForSemanticSegmentation

    import segformer

    ours_log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    ours = segformer.load_model(run / "final")
    results = {"dataset": args.dataset, "seed": args.seed, "iters": args.iters, "lr": args.lr,
               "ours_run_mIoU": {r["iter"]: round(r["mIoU"], 2) for r in ours_log if "mIoU" in r},
               "ours_final_recorded_protocol": score(ours, data),
               "ours_final_native": score(_Logits(ours, hf=False).eval(), data)}
    results["hf_native"] = {}
    for step_dir in sorted(hf_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1])):
        hf = SegformerForSemanticSegmentation.from_pretrained(step_dir)
        results["hf_native"][int(step_dir.name.split("_")[1])] = score(_Logits(hf, hf=True).eval(), data)
    for name in (f"timing_ours_{base}{tag}.json", f"timing_hf_{base}.json"):
        if (args.work / name).is_file():
            results.update(json.loads((args.work / name).read_text()))
    (args.work / f"results_{base}{tag}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
