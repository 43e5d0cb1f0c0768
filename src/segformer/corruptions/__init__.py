"""The 16 ImageNet-C corruptions of the SegFormer paper's robustness study (Cityscapes-C), on numpy/Pillow/scipy.

`corrupt(image, name, severity, seed)` equals the `imagecorruptions` 1.1.2 package (Hendrycks & Dietterich's
definitions) when that package's global numpy RNG is seeded with `seed` (tests/test_corruptions.py checks all 16
at severities 1 and 5 against it); the same seed always gives the same image. Needs scipy (`pip install
segformer[corruptions]`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("motion_blur", "defocus_blur", "glass_blur", "gaussian_blur"),
    "noise": ("gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"),
    "digital": ("brightness", "contrast", "saturate", "jpeg_compression"),
    "weather": ("snow", "spatter", "fog", "frost"),
}
CORRUPTIONS: tuple[str, ...] = tuple(name for names in GROUPS.values() for name in names)
SEVERITIES = (1, 2, 3, 4, 5)


def _function(name: str) -> Callable[[np.ndarray, int, np.random.RandomState], np.ndarray]:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; accepted: {', '.join(CORRUPTIONS)}")
    try:
        from . import blur, digital, noise, weather
    except ImportError as exc:  # scipy is an optional dependency
        raise ImportError("segformer.corruptions needs scipy: pip install 'segformer[corruptions]'") from exc
    for module in (blur, digital, noise, weather):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(name)  # every name of CORRUPTIONS is defined in one module


def corrupt(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """`image` (uint8, (H, W, 3) RGB or (H, W) grey, at least 32x32) with corruption `name` at `severity` 1..5.

    Returns uint8 (H, W, 3). Random corruptions draw from `numpy.random.RandomState(seed)`.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"corrupt: image must be uint8 (0..255), got {image.dtype}")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"corrupt: image must be (H, W), (H, W, 1) or (H, W, 3), got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if min(image.shape[:2]) < 32:
        raise ValueError(f"corrupt: image must be at least 32x32 pixels, got {image.shape[1]}x{image.shape[0]}")
    if severity not in SEVERITIES:
        raise ValueError(f"corrupt: severity must be an integer 1..5, got {severity!r}")
    out = _function(name)(np.ascontiguousarray(image), int(severity), np.random.RandomState(seed))
    return np.asarray(out).astype(np.uint8)


def parse_corruptions(text: str) -> list[str]:
    """"all", a group name ("blur", "noise", "digital", "weather") or comma-separated names -> corruption names."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            names.extend(CORRUPTIONS)
        elif part in GROUPS:
            names.extend(GROUPS[part])
        elif part in CORRUPTIONS:
            names.append(part)
        else:
            raise ValueError(f"unknown corruption {part!r}: accepted all, {', '.join(GROUPS)}, "
                             f"or names among {', '.join(CORRUPTIONS)}")
    if not names:
        raise ValueError("no corruption named: give all, a group, or comma-separated names")
    return list(dict.fromkeys(names))


def parse_severities(text: str) -> list[int]:
    """"1-5", "3", "1,3,5" -> sorted severities within 1..5."""
    out: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError as exc:
        raise ValueError(f"severities {text!r}: expected e.g. 1-5, 3 or 1,3,5") from exc
    if not out or not out <= set(SEVERITIES):
        raise ValueError(f"severities {text!r}: each must be within 1..5")
    return sorted(out)


__all__ = ["CORRUPTIONS", "GROUPS", "SEVERITIES", "corrupt", "parse_corruptions", "parse_severities"]
