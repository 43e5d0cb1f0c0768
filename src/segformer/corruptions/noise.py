"""Noise corruptions of ImageNet-C: gaussian, shot (Poisson), impulse (salt & pepper) and speckle."""

from __future__ import annotations

import numpy as np


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = (60, 25, 12, 5, 3)[severity - 1]
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / float(c), 0, 1) * 255


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Each value (per channel) is replaced with probability c, by 0 or 1 with equal odds.

    The draws come from a `numpy.random.Generator` seeded by the next integer of `rng`, as scikit-image's
    `random_noise(mode="s&p", seed=...)` draws them.
    """
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    generator = np.random.default_rng(rng.randint(2**32))
    out = x / 255.0
    flipped = generator.random(out.shape) <= c
    salted = generator.random(out.shape) <= 0.5
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out * 255


def speckle_noise(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = (0.15, 0.2, 0.35, 0.45, 0.6)[severity - 1]
    x = x / 255.0
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255
