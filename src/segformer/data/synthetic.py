"""A small synthetic segmentation set in the folder layout, for demos and tests.

Shapes (disc, square, triangle, ring) and a striped texture on a shaded, noisy, desaturated background.
Like real scenes, colour is a clue but not the answer: classes come in colour families that pairs of them
share (disc and ring are warm, square and triangle blue-green, stripes purple on grey), so telling a disc
from a ring or a square from a triangle takes shape. Images vary in size; some hold an ignore (255) patch
of pure noise. Deterministic: sample i of a split depends only on (seed, split, i).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..utils.io import atomic_dir

SYNTHETIC_CLASSES = ("background", "disc", "square", "triangle", "ring", "stripes")
SPLITS = ("train", "val")
MARKER = ".segformer-synthetic"  # only a folder holding it is ever replaced
_LAYOUT = {"images", "masks", "classes.txt", MARKER}
# Hue (0-1) at the centre of each object class's colour family; pairs share one on purpose.
_FAMILY_HUE = {1: 0.02, 2: 0.45, 3: 0.45, 4: 0.02, 5: 0.78}


def _family_colour(rng: np.random.Generator, hue: float) -> np.ndarray:
    """A saturated RGB colour within +-0.06 of `hue`, of random saturation and brightness."""
    h = (hue + rng.uniform(-0.06, 0.06)) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.55, 1.0), rng.uniform(0.5, 0.95))) * 255


def _grey(rng: np.random.Generator) -> np.ndarray:
    """A desaturated RGB colour (saturation <= 0.25) of any hue and brightness: backgrounds, stripe gaps."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.25), rng.uniform(0.25, 0.85))) * 255


def _polygon(cx: float, cy: float, r: float, sides: int, angle: float) -> list[tuple[float, float]]:
    t = angle + 2 * np.pi * np.arange(sides) / sides
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in t]


def _shape_mask(kind: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (h, w) mask of one object of class `kind` at a random place, size and angle."""
    r = rng.uniform(0.15, 0.32) * min(h, w)
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    angle = rng.uniform(0, 2 * np.pi)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == 1:  # disc
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif kind == 2:  # square
        draw.polygon(_polygon(cx, cy, r * 1.1, 4, angle), fill=1)
    elif kind == 3:  # triangle
        draw.polygon(_polygon(cx, cy, r * 1.2, 3, angle), fill=1)
    elif kind == 4:  # ring: the hole shows what lies beneath
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        inner = r * rng.uniform(0.45, 0.6)
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:  # stripes: an ellipse of any aspect filled with a two-colour stripe texture
        ry = r * rng.uniform(0.6, 1.2)
        draw.ellipse([cx - r, cy - ry, cx + r, cy + ry], fill=1)
    return np.asarray(canvas, dtype=bool)


def generate_sample(rng: np.random.Generator, min_size: int = 64,
                    max_size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 (H, W, 3), uint8 label (H, W)) pair; labels index SYNTHETIC_CLASSES, 255 = ignore."""
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx / w + np.sin(theta) * yy / h - 0.5) * rng.uniform(-40, 40)
    image = _grey(rng)[None, None, :] + ramp[..., None] + rng.normal(0, 8, size=(h, w, 3))
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        kind = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
        mask = _shape_mask(kind, h, w, rng)
        fill = _family_colour(rng, _FAMILY_HUE[kind])[None, None, :] + rng.normal(0, 6, size=(h, w, 3))
        if kind == 5:
            period = rng.uniform(5, 9)
            phi = rng.uniform(0, np.pi)
            stripe = np.sin(2 * np.pi * (np.cos(phi) * xx + np.sin(phi) * yy) / period) > 0
            fill = np.where(stripe[..., None], fill, _grey(rng)[None, None, :])
        image[mask] = fill[mask]
        label[mask] = kind
    if rng.random() < 0.35:  # an unlabelled patch of noise
        ph, pw = int(rng.integers(h // 8, h // 4 + 1)), int(rng.integers(w // 8, w // 4 + 1))
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        image[y:y + ph, x:x + pw] = rng.uniform(0, 255, size=(ph, pw, 3))
        label[y:y + ph, x:x + pw] = 255
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def write_synthetic(root: str | Path, num_train: int = 200, num_val: int = 50, seed: int = 0,
                    min_size: int = 64, max_size: int = 160, overwrite: bool = False) -> Path:
    """Write the set to `root` (images/<split>/, masks/<split>/, classes.txt) and return `root`.

    The set is built in a temporary folder beside `root` and moved into place, so a failure leaves no
    half-written set. An existing non-empty `root` is replaced only with `overwrite=True`, and only if it is
    a set this function wrote (its `.segformer-synthetic` marker file) holding nothing else.
    """
    root = Path(root)
    if not 16 <= min_size <= max_size:
        raise ValueError(f"need 16 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"need num_train, num_val >= 0 and at least one image, got {num_train}, {num_val}")
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a folder")
        contents = {p.name for p in root.iterdir()}
        if contents and not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True (--overwrite) to replace it")
        if contents and MARKER not in contents:
            raise FileExistsError(f"{root} was not written by `segformer synth` (it has no {MARKER} file); refusing "
                                  f"to replace a folder that may hold your own data")
        if contents - _LAYOUT:
            raise FileExistsError(f"{root} holds {sorted(contents - _LAYOUT)}, not only a synthetic set "
                                  f"({sorted(_LAYOUT)}); refusing to replace it")
    def fill(tmp: Path) -> None:
        (tmp / MARKER).write_text("written by `segformer synth`; `segformer synth --overwrite` may replace this "
                                  "folder\n", encoding="utf-8")
        (tmp / "classes.txt").write_text("\n".join(SYNTHETIC_CLASSES) + "\n", encoding="utf-8")
        for split_id, (split, count) in enumerate(zip(SPLITS, (num_train, num_val), strict=True)):
            if count == 0:
                continue
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "masks" / split).mkdir(parents=True)
            for i in range(count):
                image, label = generate_sample(np.random.default_rng([seed, split_id, i]), min_size, max_size)
                Image.fromarray(image).save(tmp / "images" / split / f"{i:05d}.png")
                Image.fromarray(label).save(tmp / "masks" / split / f"{i:05d}.png")

    atomic_dir(root, fill, overwrite=True)  # built beside root, then swapped in
    return root
