"""Top-down keypoint geometry and the MSRA heatmap codec, with MMPose 1.x semantics (checked against it).

- A person box becomes a center and a scale (box size x 1.25), widened or heightened to the input's aspect,
  and a similarity transform maps that (optionally rotated) window onto the network input (w x h).
- `encode`: one Gaussian per keypoint (radius 3 sigma) on the heatmap grid (input / 4); a keypoint whose
  window misses the grid, or that is unlabelled, gets target weight 0.
- `decode`: the argmax of each heatmap, moved a quarter pixel toward the higher neighbour (MMPose's
  `refine_keypoints`, border rules included), scaled back to input pixels; the score is the maximum.
- Flip test: the heatmaps of the mirrored input, mirrored back, left/right channels swapped and shifted one
  column right (`shift_heatmap=True`), averaged with the plain ones.
Coordinates are pixel indices (x right, y down), as MMPose and OpenCV use them.
"""

from __future__ import annotations

import numpy as np
import torch

PADDING = 1.25  # GetBBoxCenterScale


def box_to_center_scale(box_xyxy: np.ndarray, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Center (x, y) and scale (w, h) x padding of boxes (..., 4) given as x1, y1, x2, y2."""
    box = np.asarray(box_xyxy, dtype=np.float32)
    return (box[..., 2:] + box[..., :2]) * 0.5, (box[..., 2:] - box[..., :2]) * padding


def fix_aspect_ratio(scale: np.ndarray, aspect: float) -> np.ndarray:
    """Grow the shorter side of (w, h) so that w / h == aspect (TopdownAffine)."""
    scale = np.asarray(scale, dtype=np.float32)
    w, h = scale[..., 0], scale[..., 1]
    wide = w > h * aspect
    return np.stack([np.where(wide, w, h * aspect), np.where(wide, w / aspect, h)], axis=-1).astype(np.float32)


def warp_matrix(center: np.ndarray, scale: np.ndarray, rotation: float, output_size: tuple[int, int]) -> np.ndarray:
    """2x3 matrix taking image pixels to the output (w, h): the window of width scale[0] around `center`,
    rotated by `rotation` degrees, fills the output (the aspect is the caller's, see `fix_aspect_ratio`)."""
    factor = output_size[0] / float(scale[0])
    theta = np.deg2rad(rotation)
    cos, sin = np.cos(theta) * factor, np.sin(theta) * factor
    linear = np.array([[cos, sin], [-sin, cos]])
    shift = np.array([output_size[0] * 0.5, output_size[1] * 0.5]) - linear @ np.asarray(center, dtype=np.float64)
    return np.concatenate([linear, shift[:, None]], axis=1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    linear = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear, -linear @ matrix[:, 2:]], axis=1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 2x3 matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def input_to_image(keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]
                   ) -> np.ndarray:
    """Keypoints decoded in input pixels back to image pixels (TopdownPoseEstimator, no rotation at test)."""
    size = np.asarray(input_size, dtype=np.float32)
    center, scale = np.asarray(center, dtype=np.float32), np.asarray(scale, dtype=np.float32)
    return keypoints / size * scale[..., None, :] + center[..., None, :] - 0.5 * scale[..., None, :]


class HeatmapCodec:
    """MMPose's `MSRAHeatmap` (not unbiased): `input_size` (w, h), `heatmap_size` (W, H), `sigma`."""

    def __init__(self, input_size: tuple[int, int], heatmap_size: tuple[int, int] | None = None, sigma: float = 2.0):
        self.input_size = tuple(int(v) for v in input_size)
        self.heatmap_size = tuple(int(v) for v in heatmap_size or (input_size[0] // 4, input_size[1] // 4))
        self.sigma = float(sigma)
        self.scale_factor = (np.array(self.input_size) / self.heatmap_size).astype(np.float32)

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (K, 2) in input pixels, visibility (K,) -> heatmaps (K, H, W) float32, weights (K,)."""
        width, height = self.heatmap_size
        points = np.asarray(keypoints, dtype=np.float32) / self.scale_factor
        weights = np.asarray(visible, dtype=np.float32).copy()
        heatmaps = np.zeros((len(points), height, width), dtype=np.float32)
        radius = self.sigma * 3
        size = 2 * radius + 1
        grid = np.arange(0, size, 1, dtype=np.float32)
        center = size // 2
        gaussian = np.exp(-((grid[None, :] - center) ** 2 + (grid[:, None] - center) ** 2) / (2 * self.sigma ** 2))
        for k, point in enumerate(points):
            if weights[k] < 0.5:
                continue
            mu = (point + 0.5).astype(np.int64)  # truncation toward zero, as MMPose
            left, top = (mu - radius).astype(np.int64)
            right, bottom = (mu + radius + 1).astype(np.int64)
            if left >= width or top >= height or right < 0 or bottom < 0:
                weights[k] = 0
                continue
            x0, x1, y0, y1 = max(0, left), min(width, right), max(0, top), min(height, bottom)
            patch = gaussian[y0 - top:y1 - top, x0 - left:x1 - left]
            np.maximum(heatmaps[k, y0:y1, x0:x1], patch, out=heatmaps[k, y0:y1, x0:x1])
        return heatmaps, weights

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps (..., K, H, W) -> keypoints (..., K, 2) in input pixels and scores (..., K)."""
        heatmaps = np.asarray(heatmaps, dtype=np.float32)
        *lead, height, width = heatmaps.shape
        flat = heatmaps.reshape(-1, height * width)
        index = flat.argmax(axis=1)
        scores = flat[np.arange(len(flat)), index]
        y, x = np.divmod(index, width)
        locs = np.stack([x, y], axis=-1).astype(np.float32)
        locs[scores <= 0] = -1
        locs += _quarter_shift(flat.reshape(-1, height, width), locs.astype(np.int64))
        return (locs * self.scale_factor).reshape(*lead, 2), scores.reshape(lead)


def _quarter_shift(maps: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """+-0.25 toward the higher neighbour per axis, with MMPose's border rules (x needs 1 < x < W-1 and
    0 < y < H; y needs 1 < y < H-1 and 0 < x < W; otherwise no shift on that axis)."""
    n, height, width = maps.shape
    x, y = xy[:, 0], xy[:, 1]
    rows = np.arange(n)
    ok_x = (x > 1) & (x < width - 1) & (y > 0) & (y < height)
    ok_y = (y > 1) & (y < height - 1) & (x > 0) & (x < width)
    xc, yc = np.clip(x, 1, width - 2), np.clip(y, 1, height - 2)
    yr, xr = np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)
    dx = np.where(ok_x, maps[rows, yr, xc + 1] - maps[rows, yr, xc - 1], 0)
    dy = np.where(ok_y, maps[rows, yc + 1, xr] - maps[rows, yc - 1, xr], 0)
    return np.sign(np.stack([dx, dy], axis=-1)).astype(np.float32) * np.float32(0.25)


def flip_heatmaps(heatmaps: torch.Tensor, flip_indices: list[int], shift: bool = True) -> torch.Tensor:
    """Heatmaps of a mirrored input, mirrored back: flipped along W, channel k taken from flip_indices[k], and
    (shift) moved one column right, the first column kept (MMPose's `flip_heatmaps`, mode 'heatmap')."""
    if len(flip_indices) != heatmaps.shape[1]:
        raise ValueError(f"flip_indices has {len(flip_indices)} entries for {heatmaps.shape[1]} heatmaps")
    out = heatmaps.flip(-1)[:, list(flip_indices)]
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out
