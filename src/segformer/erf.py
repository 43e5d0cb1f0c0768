"""Effective receptive fields (Luo et al., 2016; the SegFormer paper's Figure 3) of a SegFormer.

For each encoder stage and for the decoder output, the gradient of the centre pixel's activation (summed over
channels, after a ReLU, as RepLKNet measures it) with respect to the input pixels; its absolute value summed
over the colour channels and averaged over images is the ERF map. `erf_area` is the share of input pixels
whose contribution is at least `threshold` of the map's peak.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models.base import SegmentationModel
from .utils.io import atomic_write

TARGETS = ("stage1", "stage2", "stage3", "stage4", "decoder")


def _outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four encoder maps and the decoder's logits of a SegFormer for input `x`."""
    features = model.encoder(x)
    outputs = {f"stage{i + 1}": f for i, f in enumerate(features)}
    outputs["decoder"] = model.decode_head(features)
    return outputs


def _centre_gradient(model: nn.Module, x: torch.Tensor, target: str) -> np.ndarray:
    """|d relu(out[:, :, centre]).sum() / d x| summed over batch and channels: (H, W)."""
    x = x.detach().clone().requires_grad_(True)
    out = _outputs(model, x)[target]
    h, w = out.shape[-2:]
    F.relu(out[:, :, h // 2, w // 2]).sum().backward()
    return x.grad.abs().sum(dim=(0, 1)).cpu().numpy().astype(np.float64)


def effective_receptive_fields(model: nn.Module, images: Iterable[torch.Tensor],
                               targets: tuple[str, ...] = TARGETS) -> dict[str, np.ndarray]:
    """Mean ERF map (H, W) per target over `images` (normalised (1, 3, H, W) tensors, all of one size).

    The model runs in eval mode; its parameters get no gradient (only the input does).
    """
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown ERF targets {sorted(unknown)}; accepted: {', '.join(TARGETS)}")
    if not isinstance(model, SegmentationModel):
        raise ValueError("effective_receptive_fields needs a SegFormer (encoder + decode_head)")
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    sums: dict[str, np.ndarray] = {}
    count = 0
    try:
        for x in images:
            if sums and x.shape[-2:] != next(iter(sums.values())).shape:
                raise ValueError(f"ERF images must share one size: got {tuple(x.shape[-2:])} after "
                                 f"{next(iter(sums.values())).shape}")
            for target in targets:
                grad = _centre_gradient(model, x, target)
                sums[target] = sums.get(target, 0) + grad
            count += 1
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    if count == 0:
        raise ValueError("effective_receptive_fields got no images")
    return {t: sums[t] / count for t in targets}


def erf_area(erf: np.ndarray, threshold: float = 0.01) -> float:
    """Share of pixels (0..1) whose ERF value is at least `threshold` times the peak."""
    peak = float(erf.max())
    return 0.0 if peak <= 0 else float((erf >= threshold * peak).mean())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_erf_figures(erfs: dict[str, np.ndarray], out_dir: str | Path, title: str = "",
                     overwrite: bool = False) -> list[Path]:
    """One PNG per target (log-scaled, peak-normalised heat map) and erf.png with all side by side."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    written = []
    shown = {t: np.log1p(m / max(float(m.max()), 1e-30) * 1000) / np.log1p(1000) for t, m in erfs.items()}
    for target, image in shown.items():
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(image, cmap="RdYlGn", vmin=0, vmax=1)
        ax.set_title(f"{target}: {100 * erf_area(erfs[target]):.1f}% of pixels >= 1% of peak", fontsize=9)
        ax.axis("off")
        written.append(_save(fig, out_dir / f"erf_{target}.png", overwrite, plt))
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.6), squeeze=False)
    for ax, (target, image) in zip(axes[0], shown.items(), strict=True):
        ax.imshow(image, cmap="RdYlGn", vmin=0, vmax=1)
        ax.set_title(f"{target} ({100 * erf_area(erfs[target]):.1f}%)", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{title + ': ' if title else ''}effective receptive field (log scale, % of pixels >= 1% of "
                 "peak)", fontsize=10)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "erf.png", overwrite, plt))
    return written


def _save(fig, path: Path, overwrite: bool, plt) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), overwrite)
    finally:
        plt.close(fig)


__all__ = ["TARGETS", "effective_receptive_fields", "erf_area", "save_erf_figures"]
