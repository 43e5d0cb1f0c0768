"""Digital corruptions of ImageNet-C: brightness, contrast, saturation and JPEG compression."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> HSV in [0, 1] (scikit-image's `rgb2hsv` arithmetic)."""
    out = np.empty_like(rgb)
    value = rgb.max(-1)
    delta = rgb.max(-1) - rgb.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        saturation = delta / value
        saturation[delta == 0.0] = 0.0
        for channel, offset, (a, b) in ((0, 0.0, (1, 2)), (1, 2.0, (2, 0)), (2, 4.0, (0, 1))):
            idx = rgb[..., channel] == value
            hue = (rgb[idx, a] - rgb[idx, b]) / delta[idx]
            out[idx, 0] = hue if channel == 0 else offset + hue
        hue = (out[..., 0] / 6.0) % 1.0
    hue[delta == 0.0] = 0.0
    out[..., 0], out[..., 1], out[..., 2] = hue, saturation, value
    out[np.isnan(out)] = 0
    return out


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] -> RGB in [0, 1] (scikit-image's `hsv2rgb` arithmetic)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = np.stack([sector] * 3, axis=-1).astype(np.uint8) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.choose(sector, np.stack([np.stack(c, axis=-1) for c in choices]))


def brightness(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    x = rgb_to_hsv(x / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(hsv_to_rgb(x), 0, 1) * 255


def contrast(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    x = x / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def saturate(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    scale, shift = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))[severity - 1]
    x = rgb_to_hsv(x / 255.0)
    x[:, :, 1] = np.clip(x[:, :, 1] * scale + shift, 0, 1)
    return np.clip(hsv_to_rgb(x), 0, 1) * 255


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buffer = BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))
