"""SegFormer++ token merging (Kienzle et al., 2024): faster attention on any SegFormer, no retraining.

Only attention changes. In a block, the keys/values (after the sequence-reduction conv and its
LayerNorm) and/or the queries are merged into fewer tokens, attention runs on those, and the output
is un-merged back to every query position; FFN, patch embeddings and decoder see the full grid.

Two ways to merge a sequence laid out on an h x w grid:
- "bsm", bipartite soft matching (ToMe for Stable Diffusion, deterministic): the top-left token of
  every full sy x sx cell is a destination, all other tokens (leftover rows/columns included) are
  sources. Each source picks its most cosine-similar destination; the r = int(N * ratio) sources with
  the highest similarity merge into theirs (unweighted mean). Un-merge copies a destination's output
  to the sources merged into it. Indices are computed per image, without gradient; gradients flow
  through the gather/scatter, so merged models train.
- "pool": mean over sy x sx windows (ceil mode: edge windows average the tokens they hold); un-merge
  copies a window's output to all of its tokens. (The reference un-merges by nearest interpolation,
  which is the same for 2x2 windows, as in the "2x2" preset, and for sizes the window divides.)

The strategies themselves (presets, parsing) are in `spec.py`.
"""


from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..mit import nchw_to_tokens, tokens_to_nchw
from .spec import StageMerging, TokenMergingConfig

# ---------------------------------------------------------------------------------------------------
# Merging primitives


class BipartiteMerge:
    """The result of one bipartite soft matching on a (B, N, C) sequence.

    `slot[b, i]` is the merged token that token i of image b belongs to (dst tokens first, then the
    unmerged sources, each in row-major order); every image has the same M = N - r merged tokens.
    """

    def __init__(self, slot: torch.Tensor, num_merged: int):
        self.slot = slot
        self.num_merged = num_merged
        counts = torch.zeros(slot.shape[0], num_merged, dtype=torch.float32, device=slot.device)
        self.counts = counts.scatter_add_(1, slot, torch.ones_like(slot, dtype=torch.float32)).unsqueeze(-1)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, M, C): the unweighted mean of each merged token's members.

        Computed as a scatter-sum divided by the member count: the same as scatter_reduce("mean")
        but several times faster on CPU, and it exports to ONNX ("mean" has no ONNX op).
        """
        b, n, c = x.shape
        index = self.slot.unsqueeze(-1).expand(b, n, c)
        return x.new_zeros(b, self.num_merged, c).scatter_add_(1, index, x).div_(self.counts.to(x.dtype))

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, M, C) -> (B, N, C): every token gets its merged token's value."""
        return torch.gather(y, 1, self.slot.unsqueeze(-1).expand(-1, -1, y.shape[-1]))


def _destination_index(height: int, width: int, sy: int, sx: int, device: torch.device) -> torch.Tensor:
    """Per token (row-major), the index of the destination it is, or -1 for a source.

    Destinations are the top-left tokens of the full sy x sx cells; leftover rows/columns are sources.
    Static shapes only (no nonzero), so that it traces and exports.
    """
    rows, cols = height // sy, width // sx
    index = torch.full((height, width), -1, dtype=torch.long, device=device)
    index[: rows * sy : sy, : cols * sx : sx] = torch.arange(rows * cols, device=device).view(rows, cols)
    return index.flatten()


@torch.no_grad()
def bipartite_soft_matching(metric: torch.Tensor, height: int, width: int, stride: tuple[int, int],
                            r: int) -> BipartiteMerge:
    """Match the tokens of `metric` (B, N, C), laid out h x w row-major, removing up to `r` of them.

    Needs at least one full stride cell (height >= sy and width >= sx); r is capped at the number
    of sources.
    """
    b, n, c = metric.shape
    sy, sx = stride
    rows, cols = height // sy, width // sx
    if rows == 0 or cols == 0:
        raise ValueError(f"a {height}x{width} token grid holds no full {sy}x{sx} merge cell")
    num_dst = rows * cols
    r = min(r, n - num_dst)
    dst = metric.reshape(b, height, width, c)[:, : rows * sy : sy, : cols * sx : sx].reshape(b, num_dst, c)
    # Cosine similarity of every token to every destination, scaled by the token's norm: the best
    # destination does not depend on that scale, and dividing only the N maxima by it afterwards
    # spares a normalised copy of the whole (B, N, C) sequence.
    scores = metric @ F.normalize(dst, dim=-1).transpose(1, 2)  # (B, N, Nd)
    best, best_dst = scores.max(dim=-1)
    best = best / torch.linalg.vector_norm(metric, dim=-1).clamp_min(1e-12)
    dst_index = _destination_index(height, width, sy, sx, metric.device)
    is_dst = dst_index >= 0
    merged = best.masked_fill(is_dst, -math.inf).topk(r, dim=-1).indices  # the r sources closest to their dst
    is_merged = torch.zeros_like(best_dst).scatter_(1, merged, 1).bool()
    kept = (~is_merged & ~is_dst).long()  # sources left alone get slots after the destinations
    slot = torch.where(is_dst, dst_index, torch.where(is_merged, best_dst, num_dst + kept.cumsum(1) - 1))
    return BipartiteMerge(slot, n - r)


class PoolMerge:
    """Mean pooling of an h x w token grid over sy x sx windows (ceil mode), and its copy-back."""

    def __init__(self, height: int, width: int, stride: tuple[int, int]):
        self.height, self.width = height, width
        self.sy, self.sx = stride
        self.rows, self.cols = -(-height // self.sy), -(-width // self.sx)
        self.num_merged = self.rows * self.cols

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h*w, C) -> (B, ceil(h/sy)*ceil(w/sx), C); edge windows average the tokens they hold."""
        # count_include_pad=False: identical in PyTorch without padding, and keeps ONNX runtimes from
        # counting the ceil-mode overhang.
        pooled = F.avg_pool2d(tokens_to_nchw(x, self.height, self.width), (self.sy, self.sx), (self.sy, self.sx),
                              ceil_mode=True, count_include_pad=False)
        return nchw_to_tokens(pooled)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, M, C) -> (B, h*w, C): each token gets its window's value."""
        b, _, c = y.shape
        grid = y.reshape(b, self.rows, 1, self.cols, 1, c).expand(b, self.rows, self.sy, self.cols, self.sx, c)
        grid = grid.reshape(b, self.rows * self.sy, self.cols * self.sx, c)
        return grid[:, : self.height, : self.width].reshape(b, self.height * self.width, c)


# ---------------------------------------------------------------------------------------------------
# The attention hook


class StageTokenMerging(nn.Module):
    """The `token_merging` child of every `EfficientSelfAttention` of one stage (one instance, shared; no
    parameters, so state dicts are unchanged, and `print(model)` shows it).

    Called as hook(attn, x, xkv, height, width); returns attention output for all N query positions.
    A sequence whose grid is too small for its merge cell runs unmerged (warned once per stage).
    """

    def __init__(self, stage: int, setting: StageMerging):
        super().__init__()
        self.stage = stage
        self.setting = setting
        self._warned = False

    def forward(self, attn: nn.Module, x: torch.Tensor, xkv: torch.Tensor, height: int, width: int) -> torch.Tensor:
        s = self.setting
        if s.kv_mode is not None:
            sr = attn.sr_ratio
            kv_merge = self._grouping(s.kv_mode, s.kv_ratio, s.kv_stride, xkv, height // sr, width // sr, "keys/values")
            if kv_merge is not None:
                xkv = kv_merge.merge(xkv)
        q_merge = None
        if s.q_mode is not None:
            q_merge = self._grouping(s.q_mode, s.q_ratio, s.q_stride, x, height, width, "queries")
        if q_merge is None:
            return attn.attend(x, xkv)
        return q_merge.unmerge(attn.attend(q_merge.merge(x), xkv))

    def _grouping(self, mode: str, ratio: float, stride: tuple[int, int], x: torch.Tensor, height: int, width: int,
                  what: str) -> BipartiteMerge | PoolMerge | None:
        if mode == "pool":
            return PoolMerge(height, width, stride)
        if height < stride[0] or width < stride[1]:
            if not self._warned:
                self._warned = True
                warnings.warn(f"token merging: stage {self.stage + 1} {what} grid {height}x{width} is smaller than "
                              f"its {stride[0]}x{stride[1]} merge cell; that stage runs without merging there "
                              "(input too small; warned once)", stacklevel=1)
            return None
        r = int(x.shape[1] * ratio)
        return bipartite_soft_matching(x, height, width, stride, r) if r > 0 else None

    def extra_repr(self) -> str:
        return f"stage={self.stage + 1}, {self.setting}"


def apply_token_merging(encoder: nn.Module, config: TokenMergingConfig | None) -> None:
    """Install (or, for None, remove) the per-stage hooks on a MixTransformer's attention layers."""
    for i, stage in enumerate(encoder.stages):
        setting = config.stages[i] if config is not None else None
        hook = StageTokenMerging(i, setting) if setting is not None and setting.active else None
        for block in stage.blocks:
            block.attn.token_merging = hook


class HalfResolution(nn.Module):
    """Halves the image before the encoder, as the reference's `down_sample` baseline (nearest: every other
    pixel); SegFormer's input module under the "downsample" strategy (`nn.Identity` otherwise)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.interpolate(pixel_values, scale_factor=0.5, mode="nearest")
