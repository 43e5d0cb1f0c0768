"""Pictures (Pillow) of label maps (a colour mask, an alpha-blended overlay, an optional legend) and of pose
skeletons."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.palettes import get_class_names, get_palette


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 colours; labels outside the palette (e.g. ignore 255) are black."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be an (H, W) array, got shape {labels.shape}")
    palette = np.asarray(palette, dtype=np.uint8)
    table = np.concatenate([palette, np.zeros((1, 3), np.uint8)])  # the last row colours out-of-range labels
    index = labels.astype(np.int64)
    index[(index < 0) | (index >= len(palette))] = len(palette)
    return table[index]


def overlay(image: np.ndarray | Image.Image, labels: np.ndarray, palette: np.ndarray,
            opacity: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: `(1 - opacity) * image + opacity * colour`; pixels whose label is outside the palette
    (ignore, unlabelled) show the image unchanged."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    labels = np.asarray(labels)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != labels.shape:
        raise ValueError(f"image must be (H, W, 3) with the label map's size {labels.shape}, got {rgb.shape}")
    colours = colorize(labels, palette).astype(np.float32)
    blended = (1.0 - opacity) * rgb.astype(np.float32) + opacity * colours
    out = np.rint(blended).astype(np.uint8)
    outside = (labels < 0) | (labels >= len(palette))
    out[outside] = rgb[outside]
    return out


def add_legend(picture: np.ndarray | Image.Image, labels: np.ndarray, palette: np.ndarray,
               class_names: Sequence[str]) -> Image.Image:
    """`picture` with a panel on its right listing the classes present in `labels`, largest area first."""
    picture = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture))
    flat = np.asarray(labels).ravel()
    counts = np.bincount(flat[(flat >= 0) & (flat < len(palette))].astype(np.int64), minlength=len(palette))
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    if not present:
        return picture
    font_size = max(10, picture.height // 40)
    font = ImageFont.load_default(font_size)
    row = font_size + font_size // 2
    rows = max(1, (picture.height - row // 2) // row)
    cols = math.ceil(len(present) / rows)
    text_width = max(font.getlength(f"{c} {class_names[c]}") for c in present)
    col_width = int(row + text_width + font_size)
    panel = Image.new("RGB", (picture.width + cols * col_width, picture.height), "white")
    panel.paste(picture.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(panel)
    for i, c in enumerate(present):
        x = picture.width + (i // rows) * col_width + font_size // 2
        y = row // 2 + (i % rows) * row
        draw.rectangle([x, y, x + font_size, y + font_size], fill=tuple(int(v) for v in palette[c]), outline="black")
        draw.text((x + row, y), f"{c} {class_names[c]}", fill="black", font=font)
    return panel


def render(image: np.ndarray | Image.Image, labels: np.ndarray, num_classes: int, *,
           palette: np.ndarray | None = None, class_names: Sequence[str] | None = None, opacity: float = 0.5,
           legend: bool = False) -> Image.Image:
    """The overlay picture the CLI writes: `overlay(...)`, plus `add_legend` when asked. The palette and class
    names default to those of the class count (`segformer.data.palettes.get_palette`)."""
    palette = get_palette(num_classes) if palette is None else np.asarray(palette, dtype=np.uint8)
    if len(palette) < num_classes:
        raise ValueError(f"a palette of {len(palette)} colours cannot show {num_classes} classes")
    picture = overlay(image, labels, palette, opacity)
    if not legend:
        return Image.fromarray(picture)
    names = list(class_names) if class_names is not None else get_class_names(num_classes)
    if len(names) < num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes")
    return add_legend(picture, labels, palette, names)


def draw_keypoints(image: np.ndarray | Image.Image, keypoints: np.ndarray, scores: np.ndarray,
                   skeleton: Sequence[tuple[int, int]], flip_indices: Sequence[int] | None = None,
                   threshold: float = 0.3, boxes: np.ndarray | None = None) -> Image.Image:
    """People's skeletons over an RGB image: keypoints (N, K, 2) with scores (N, K); links and joints whose
    score is below `threshold` are left out. Left-side joints (those `flip_indices` maps to a higher index) are
    orange, right-side blue, the rest green; optional boxes (N, 4, x1 y1 x2 y2) in white."""
    picture = Image.fromarray(np.asarray(image)).convert("RGB")
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 200))
    k = keypoints.shape[1] if keypoints.ndim == 3 else 0
    flips = list(flip_indices) if flip_indices is not None else list(range(k))
    colour = [(255, 128, 0) if flips[j] > j else (51, 153, 255) if flips[j] < j else (0, 200, 0) for j in range(k)]
    for n, (points, conf) in enumerate(zip(keypoints, scores)):
        if boxes is not None:
            draw.rectangle([float(v) for v in boxes[n]], outline=(255, 255, 255), width=1)
        for a, b in skeleton:
            if conf[a] >= threshold and conf[b] >= threshold:
                draw.line([tuple(points[a]), tuple(points[b])], fill=colour[b], width=width)
        for j, (x, y) in enumerate(points):
            if conf[j] >= threshold:
                draw.ellipse([x - width, y - width, x + width, y + width], fill=colour[j])
    return picture
