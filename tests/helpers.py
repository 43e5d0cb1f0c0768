"""Helpers shared by the tests: where the MMSegmentation and MMPose oracles live, and weight randomisation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MMSEG_PYTHON = Path(os.environ.get("SEGFORMER_MMSEG_PYTHON", ROOT / ".venv-mmseg" / "bin" / "python"))
# The project's own stand-in for mmcv's compiled ops, so that mmseg imports on mmcv-lite.
MMCV_SHIM = ROOT / "tests" / "oracles" / "mmcv_ops_shim.py"


def mmseg_oracle() -> tuple[str, str]:
    """(python, shim path) of the MMSegmentation oracle venv; skips the test, saying why, when absent."""
    if not MMSEG_PYTHON.exists():
        pytest.skip(f"MMSegmentation oracle venv absent ({MMSEG_PYTHON}); `make test` creates it (DESIGN.md 8)")
    return str(MMSEG_PYTHON), str(MMCV_SHIM)


def randomise(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random biases, norm affines and BN statistics, so that no layer is the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
    return model


MMPOSE_PYTHON = Path(os.environ.get("SEGFORMER_MMPOSE_PYTHON", ROOT / ".venv-mmpose" / "bin" / "python"))


def mmpose_oracle() -> tuple[str, str]:
    """(python, shim path) of the MMPose oracle venv; skips the test, saying why, when absent."""
    if not MMPOSE_PYTHON.exists():
        pytest.skip(f"MMPose oracle venv absent ({MMPOSE_PYTHON}); `make test` creates it (.venv-mmpose/.installed)")
    return str(MMPOSE_PYTHON), str(MMCV_SHIM)
