"""A small synthetic pose set in COCO keypoint format: stick figures with COCO's 17 joints on noisy backgrounds.

Each image holds one or two figures of random size, lean and limb angles. The left limbs are drawn in a warm
colour, the right limbs in a cool one and the trunk and head in grey, so left and right can be told apart
(as a real person's facing direction tells them) and the flip augmentation has something to learn.
Written as `ROOT/annotations/{train,val}.json` + `ROOT/images/{train,val}/*.png`, the layout
`segformer.data.keypoints.open_keypoints` reads. Deterministic: sample i of a split depends only on (seed, split, i).
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..utils.io import atomic_dir
from .keypoints import COCO_KEYPOINTS, COCO_SKELETON

SPLIT_SEEDS = {"train": 0, "val": 1}
_LEFT = {1, 3, 5, 7, 9, 11, 13, 15}  # COCO's left_* joints
_RIGHT = {2, 4, 6, 8, 10, 12, 14, 16}


def _unit(angle: float) -> np.ndarray:
    """Direction at `angle` radians from straight down (image y grows downward)."""
    return np.array([np.sin(angle), np.cos(angle)])


def figure(rng: np.random.Generator, hip: np.ndarray, size: float) -> np.ndarray:
    """(17, 2) COCO joints of a random stick figure whose hips centre at `hip`, about `size` pixels tall."""
    t = size / 3.2  # torso length
    lean = rng.normal(0, 0.15)
    up, side = -_unit(lean), np.array([np.cos(lean), -np.sin(lean)])  # side points to the figure's left
    neck = hip + up * t
    p = np.zeros((17, 2))
    p[5], p[6] = neck + side * 0.38 * t, neck - side * 0.38 * t  # shoulders
    p[11], p[12] = hip + side * 0.25 * t, hip - side * 0.25 * t  # hips
    p[0] = neck + up * 0.55 * t + side * rng.normal(0, 0.08) * t  # nose
    p[1], p[2] = p[0] + up * 0.12 * t + side * 0.12 * t, p[0] + up * 0.12 * t - side * 0.12 * t  # eyes
    p[3], p[4] = p[0] + up * 0.05 * t + side * 0.26 * t, p[0] + up * 0.05 * t - side * 0.26 * t  # ears
    for s, sign in ((0, 1), (1, -1)):  # left then right limbs
        arm = lean + sign * rng.uniform(0.1, 2.6)
        p[7 + s] = p[5 + s] + _unit(arm) * 0.5 * t
        p[9 + s] = p[7 + s] + _unit(arm + sign * rng.uniform(-0.4, 1.6)) * 0.45 * t
        leg = lean + sign * rng.uniform(-0.15, 0.7)
        p[13 + s] = p[11 + s] + _unit(leg) * 0.6 * t
        p[15 + s] = p[13 + s] + _unit(leg + sign * rng.uniform(-1.2, 0.2)) * 0.55 * t
    return p


def _colour(rng: np.random.Generator, hue: float, sat: float) -> tuple[int, ...]:
    rgb = colorsys.hsv_to_rgb((hue + rng.uniform(-0.05, 0.05)) % 1, sat, rng.uniform(0.6, 0.95))
    return tuple(int(255 * c) for c in rgb)


def _draw(draw: ImageDraw.ImageDraw, rng: np.random.Generator, joints: np.ndarray, size: float) -> None:
    width = max(2, int(size / 22))
    colours = {"left": _colour(rng, 0.02, 0.85), "right": _colour(rng, 0.6, 0.85), "mid": _colour(rng, 0.3, 0.1)}
    for a, b in COCO_SKELETON:
        side = "left" if {a, b} <= _LEFT | {0} and (a in _LEFT or b in _LEFT) else (
            "right" if {a, b} <= _RIGHT | {0} and (a in _RIGHT or b in _RIGHT) else "mid")
        draw.line([tuple(joints[a]), tuple(joints[b])], fill=colours[side], width=width)
    head = np.linalg.norm(joints[3] - joints[4]) * 0.7
    draw.ellipse([*(joints[0] - head), *(joints[0] + head)], outline=colours["mid"], width=max(1, width // 2))
    for k, (x, y) in enumerate(joints):
        r = width * 0.8
        fill = colours["left"] if k in _LEFT else colours["right"] if k in _RIGHT else colours["mid"]
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c * 0.7) for c in fill))


def make_sample(rng: np.random.Generator, image_size: int = 160) -> tuple[np.ndarray, list[np.ndarray]]:
    """(RGB image, [joints (17, 3) per figure with visibility]) of one synthetic scene."""
    base = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.2, 0.8))) * 255
    noise = rng.normal(0, 12, (image_size, image_size, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    people = []
    for _ in range(rng.integers(1, 3)):
        size = rng.uniform(0.45, 0.85) * image_size
        hip = np.array([rng.uniform(0.25, 0.75), rng.uniform(0.45, 0.65)]) * image_size
        joints = figure(rng, hip, size)
        _draw(draw, rng, joints, size)
        inside = (joints >= 0).all(axis=1) & (joints <= image_size - 1).all(axis=1)
        people.append(np.concatenate([joints, np.where(inside, 2, 0)[:, None]], axis=1))
    return np.asarray(image), people


def _annotation(joints: np.ndarray, ann_id: int, image_id: int) -> dict:
    labelled = joints[joints[:, 2] > 0, :2]
    lo, hi = labelled.min(axis=0) - 6, labelled.max(axis=0) + 6
    w, h = hi - lo
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": float(w * h),
            "bbox": [float(lo[0]), float(lo[1]), float(w), float(h)], "num_keypoints": int(len(labelled)),
            "keypoints": [round(float(v), 2) for v in joints.reshape(-1)]}


def write_synthetic_pose(root: str | Path, num_train: int = 400, num_val: int = 100, seed: int = 0,
                         image_size: int = 160) -> Path:
    """Write the synthetic pose set under `root` (which must be empty or absent), atomically; returns `root`."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose a new folder for the synthetic pose set")
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_KEYPOINTS),
                "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON]}

    def fill(folder: Path) -> None:
        for split, count in (("train", num_train), ("val", num_val)):
            (folder / "images" / split).mkdir(parents=True, exist_ok=True)
            images, annotations = [], []
            for i in range(count):
                rng = np.random.default_rng([seed, SPLIT_SEEDS[split], i])
                image, people = make_sample(rng, image_size)
                name = f"{split}_{i:05d}.png"
                Image.fromarray(image).save(folder / "images" / split / name)
                images.append({"id": i + 1, "file_name": name, "width": image_size, "height": image_size})
                annotations += [_annotation(j, len(annotations) + n + 1, i + 1) for n, j in enumerate(people)]
            (folder / "annotations").mkdir(exist_ok=True)
            payload = {"images": images, "annotations": annotations, "categories": [category]}
            (folder / "annotations" / f"{split}.json").write_text(json.dumps(payload), encoding="utf-8")

    atomic_dir(root, fill, overwrite=True)  # built beside root (empty or absent), then moved in whole
    return root
