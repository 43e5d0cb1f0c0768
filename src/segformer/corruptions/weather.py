"""Weather corruptions of ImageNet-C: snow, frost, fog and spatter (water drops or mud)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
from PIL import Image
from scipy import ndimage

from . import opencv as cv
from .blur import gaussian_filter, motion_kernel_blur

FROST_TEXTURES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre crop of (H, W, C) `image` by `factor` (bilinear); the result is at least H x W."""
    h = int(np.ceil(image.shape[0] / float(factor)))
    w = int(np.ceil(image.shape[1] / float(factor)))
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return ndimage.zoom(image[top:top + h, left:left + w], (factor, factor, 1), order=1)


def plasma_fractal(size: int, decay: float, rng: np.random.RandomState) -> np.ndarray:
    """A (size, size) diamond-square height map in [0, 1]; `size` is a power of two."""
    heights = np.empty((size, size), dtype=np.float64)
    heights[0, 0] = 0
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = heights[0:size:step, 0:size:step]
        square = corners + np.roll(corners, shift=-1, axis=0)
        square += np.roll(square, shift=-1, axis=1)
        heights[half:size:step, half:size:step] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres = heights[half:size:step, half:size:step]
        corners = heights[0:size:step, 0:size:step]
        left = (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1))
        heights[0:size:step, half:size:step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0))
        heights[half:size:step, 0:size:step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        step //= 2
        wibble /= decay
    heights -= heights.min()
    return heights / heights.max()


def fog(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    strength, decay = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))[severity - 1]
    h, w = x.shape[:2]
    size = 1 << (max(h, w, x.shape[2]) - 1).bit_length()
    x = x / 255.0
    peak = x.max()
    x += strength * plasma_fractal(size, decay, rng)[:h, :w][..., np.newaxis]
    return np.clip(x * peak / (peak + strength), 0, 1) * 255


@lru_cache(maxsize=len(FROST_TEXTURES))
def frost_texture(index: int) -> np.ndarray:
    """One of ImageNet-C's five frost pictures as RGB uint8 (shipped in segformer/assets/frost)."""
    path = resources.files("segformer") / "assets" / "frost" / FROST_TEXTURES[index]
    with resources.as_file(path) as file, Image.open(file) as image:
        return np.asarray(image.convert("RGB"))


def frost(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    image_weight, frost_weight = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[severity - 1]
    texture = frost_texture(rng.randint(5))
    (fh, fw), (h, w) = texture.shape[:2], x.shape[:2]
    scale = max(1.0, h / fh, w / fw) * 1.1  # cover the image, with a margin for the random crop
    width, height = int(np.ceil(fw * scale)), int(np.ceil(fh * scale))
    top, left = rng.randint(0, height - h), rng.randint(0, width - w)
    crop = cv.resize_cubic_u8(texture, width, height, top, left, h, w)  # only the window that is used
    return np.clip(image_weight * x + frost_weight * crop, 0, 255)


def snow(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, keep = (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))[severity - 1]
    x = np.array(x, dtype=np.float32) / 255.0
    flakes = rng.normal(size=x.shape[:2], loc=mean, scale=std)
    flakes = clipped_zoom(flakes[..., np.newaxis], zoom)
    flakes[flakes < threshold] = 0
    flakes = motion_kernel_blur(np.clip(flakes.squeeze(), 0, 1), radius, sigma, rng.uniform(-135, -45))
    flakes = (np.round(flakes * 255).astype(np.uint8) / 255.0)[: x.shape[0], : x.shape[1], np.newaxis]
    grey = cv.rgb_to_gray_f32(x)[..., np.newaxis] * 1.5 + 0.5
    x = keep * x + (1 - keep) * np.maximum(x, grey)
    return np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1) * 255


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """Drop shading of the water spatter: edges of the liquid layer, distance to them, equalised and embossed."""
    layer = (liquid * 255).astype(np.uint8)
    dist = cv.distance_transform_l2_5(255 - cv.canny(layer, 50, 150))
    dist = np.minimum(dist, np.float32(20))
    dist = cv.equalize_hist(cv.box_blur3(dist).astype(np.uint8))
    dist = cv.filter2d_u8(dist, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    return layer * cv.box_blur3(dist).astype(np.float32)


def spatter(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    mean, std, sigma, threshold, intensity, mud = (
        (0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))[severity - 1]
    rgb = x
    x = np.array(x, dtype=np.float32) / 255.0
    liquid = gaussian_filter(rng.normal(size=x.shape[:2], loc=mean, scale=std), sigma)
    liquid[liquid < threshold] = 0
    if not mud:  # pale turquoise water drops
        m = _water_mask(liquid)
        if not m.any():  # no drop survived the threshold (tiny images)
            return x * 255
        m = m / m.max() * np.float32(intensity)  # all channels equal; the reference's alpha channel stays 1
        colour = np.array([175 / 255.0, 238 / 255.0, 238 / 255.0], dtype=np.float32)
        return np.clip(x + m[..., np.newaxis] * colour, 0, 1) * 255
    m = gaussian_filter(np.where(liquid > threshold, 1, 0).astype(np.float32), intensity)
    m[m < 0.8] = 0
    colour = np.array([63 / 255.0, 42 / 255.0, 20 / 255.0]) * np.ones_like(rgb[..., :1], dtype=np.float64)
    colour *= m[..., np.newaxis]
    x *= 1 - m[..., np.newaxis]
    return np.clip(x + colour, 0, 1) * 255
