"""Zero-shot robustness to corruptions (the SegFormer paper's Cityscapes-C study) on any dataset.

Every validation image is corrupted before the test pipeline (as Cityscapes-C corrupts the original images),
with image k of the split drawing from seed `seed + k`, so a run repeats exactly. The result holds the clean
metrics, the mIoU per corruption and severity, the mean per corruption and per group, and the overall mean.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .corruptions import CORRUPTIONS, GROUPS, corrupt
from .data.datasets import SegmentationDataset
from .evaluation import evaluate
from .utils.io import atomic_write

logger = logging.getLogger(__name__)


class CorruptedDataset(SegmentationDataset):
    """`dataset` whose images carry corruption `name` at `severity`; image k uses seed `seed + k`."""

    def __init__(self, dataset: SegmentationDataset, name: str, severity: int, seed: int = 0):
        super().__init__(dataset.root, dataset.split, dataset.samples, dataset.class_names, dataset.ignore_index)
        self.dataset, self.name, self.severity, self.seed = dataset, name, severity, seed
        self.kind, self.scale = dataset.kind, dataset.scale

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.dataset.load(index)
        return corrupt(image, self.name, self.severity, self.seed + index), label


def evaluate_corruptions(model: torch.nn.Module, dataset: SegmentationDataset, corruptions: Sequence[str] = CORRUPTIONS,
                         severities: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0, **eval_kwargs) -> dict:
    """Clean and corrupted mIoU of `model` on `dataset`; `eval_kwargs` go to `evaluation.evaluate`.

    Returns {"clean": metrics, "mIoU": {name: {severity: mIoU}}, "corruption_mean": {name: mean},
    "group_mean": {group: mean over its evaluated corruptions}, "mean": mean over all corrupted runs,
    "corruptions", "severities", "seed"}.
    """
    eval_kwargs.setdefault("progress", False)
    clean = evaluate(model, dataset, **eval_kwargs)
    logger.info("clean: mIoU %.2f", clean["mIoU"])
    table: dict[str, dict[int, float]] = {}
    for name in corruptions:
        table[name] = {}
        for severity in severities:
            metrics = evaluate(model, CorruptedDataset(dataset, name, severity, seed), **eval_kwargs)
            table[name][severity] = metrics["mIoU"]
            logger.info("%s severity %d: mIoU %.2f", name, severity, metrics["mIoU"])
    per_corruption = {name: float(np.mean(list(row.values()))) for name, row in table.items()}
    groups = {group: float(np.mean([per_corruption[n] for n in names if n in per_corruption]))
              for group, names in GROUPS.items() if any(n in per_corruption for n in names)}
    return {"clean": clean, "mIoU": table, "corruption_mean": per_corruption, "group_mean": groups,
            "mean": float(np.mean(list(per_corruption.values()))), "corruptions": list(corruptions),
            "severities": list(severities), "seed": seed}


def _json_ready(value):
    """NaN -> None (JSON has no NaN) and int dict keys -> str, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def save_json(result: dict, path: str | Path, overwrite: bool = False, **extra) -> Path:
    """Write `result` (plus `extra` keys, e.g. settings) as JSON, atomically."""
    text = json.dumps(_json_ready({**result, **extra}), indent=2)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite)


def plot_heatmap(result: dict, path: str | Path, title: str = "", overwrite: bool = False) -> Path:
    """A corruption x severity heat map of mIoU (cells annotated), with the clean mIoU and the means."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names, severities = result["corruptions"], result["severities"]
    grid = np.array([[result["mIoU"][n][s] for s in severities] for n in names], dtype=float)
    clean = result["clean"]["mIoU"]
    fig, ax = plt.subplots(figsize=(1.1 * len(severities) + 4.5, 0.38 * len(names) + 1.8))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(clean, np.nanmax(grid)), aspect="auto")
    for i in range(len(names)):
        for j in range(len(severities)):
            value = grid[i, j]
            colour = "white" if value < 0.5 * clean else "black"
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    labels = [f"{n} ({g})" for n in names for g, members in GROUPS.items() if n in members]
    ax.set_yticks(range(len(names)), [f"{label}  mean {result['corruption_mean'][n]:.1f}"
                                      for label, n in zip(labels, names, strict=True)], fontsize=8)
    ax.set_xlabel("severity")
    groups = ", ".join(f"{g} {v:.1f}" for g, v in result["group_mean"].items())
    ax.set_title(f"{title + ': ' if title else ''}mIoU, clean {clean:.1f}, corrupted mean {result['mean']:.1f}\n"
                 f"{groups}", fontsize=9)
    fig.colorbar(image, ax=ax, label="mIoU")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110), overwrite)
    finally:
        plt.close(fig)


__all__ = ["CorruptedDataset", "evaluate_corruptions", "plot_heatmap", "save_json"]
