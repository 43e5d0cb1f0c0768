"""Helpers shared by the tests: where the MMSegmentation and MMPose oracles live, weight randomisation, and a
SegFormer that goes wrong at a chosen training step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segformer.models.segmentor import SegFormer

ROOT = Path(__file__).resolve().parents[1]
MMSEG_PYTHON = Path(os.environ.get("SEGFORMER_MMSEG_PYTHON", ROOT / ".venv-mmseg" / "bin" / "python"))
ORACLES = ROOT / "tests" / "oracles"
# The project's own stand-in for mmcv's compiled ops, so that mmseg imports on mmcv-lite.
MMCV_SHIM = ORACLES / "mmcv_ops_shim.py"


def mmseg_oracle() -> tuple[str, str]:
    """(python, shim path) of the MMSegmentation oracle venv; skips the test, saying why, when absent."""
    if not MMSEG_PYTHON.exists():
        pytest.skip(f"MMSegmentation oracle venv absent ({MMSEG_PYTHON}); `make test` creates it (.venv-mmseg)")
    return str(MMSEG_PYTHON), str(MMCV_SHIM)


def mmseg_python() -> Path:
    """The MMSegmentation oracle venv's python (MMSegmentation 1.2.2 in its own venv, never imported here);
    skips the test, saying why, when the venv is absent."""
    if not MMSEG_PYTHON.is_file():
        reason = (f"MMSegmentation oracle venv not found at {MMSEG_PYTHON}: `make test` creates it "
                  f"(.venv-mmseg); set SEGFORMER_MMSEG_PYTHON to use another")
        print(f"SKIP: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return MMSEG_PYTHON


def run_oracle(script: str | Path, args: list[str], timeout: int = 900) -> None:
    """Run a tests/oracles script in the MMSegmentation venv; a failure fails the test with its stderr."""
    proc = subprocess.run([str(mmseg_python()), str(ORACLES / script), *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"mmseg oracle {Path(script).name} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")


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


class FaultAt(SegFormer):
    """A SegFormer whose `at`-th training forward goes through `fault` (what goes wrong is the subclass's)."""

    def __init__(self, config, at: int):
        super().__init__(config)
        self.calls, self.at = 0, at

    def forward(self, x, *args, **kwargs):
        out = super().forward(x, *args, **kwargs)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = self.fault(out)
        return out

    def fault(self, out):
        raise NotImplementedError
