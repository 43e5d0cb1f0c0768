"""Lets MMSegmentation 1.2.2 import on top of mmcv-lite, which has no compiled `mmcv._ext`.

mmcv-lite's `mmcv/ops/__init__.py` imports every op module eagerly and most of them load `mmcv._ext`, so
`import mmcv.ops` fails, and mmseg imports `mmcv.ops` at import time: `point_sample` (mask_classification.py,
models/utils/point_sample.py, san_head.py) and `sigmoid_focal_loss` (losses/focal_loss.py). The models the
oracles build (MiT/SegFormer, ViT/SETR) call none of them.

Importing this module (before mmseg) puts an `mmcv.ops` package in `sys.modules` whose attributes resolve
lazily: the pure-Python point-sampling functions come from mmcv's own `point_sample.py`, `sigmoid_focal_loss`
is a plain-PyTorch stand-in written here from mmcv's kernel (mmseg's FocalLoss calls it; the loss parity test
needs it), every other op is an `UnavailableOp` that raises, naming the op, only when something calls or
instantiates it. The package's
`__path__` is mmcv's ops folder, so `import mmcv.ops.<module>` still finds pure-Python modules and still raises
ImportError for compiled ones (mmcv.cnn catches that for MultiScaleDeformableAttention).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import mmcv

# Functions that mmcv implements in plain PyTorch, by the module that holds them.
PURE_PYTHON = {
    "point_sample": "point_sample",
    "bilinear_grid_sample": "point_sample",
    "rel_roi_point_to_rel_img_point": "point_sample",
}


class UnavailableOp:
    """Stands in for a compiled mmcv op; using it says which op needs a full mmcv build."""

    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"mmcv.ops.{self.__name__} needs mmcv's compiled ops, which mmcv-lite lacks; "
                                  f"the oracle shim (tests/oracles/mmcv_ops_shim.py) only stands in for it")

    def __repr__(self) -> str:
        return f"<unavailable mmcv op {self.__name__}>"


def sigmoid_focal_loss(input, target, gamma: float = 2.0, alpha: float = 0.25, weight=None, reduction: str = "mean"):
    """mmcv's compiled `sigmoid_focal_loss` in plain PyTorch (its CUDA kernel's arithmetic, autograd for the
    backward): input (N, C) logits, target (N,) class indices; per element, with p = sigmoid(x),
    -alpha (1 - p)^gamma log(max(p, FLT_MIN)) at the target class, -(1 - alpha) p^gamma log(max(1 - p, FLT_MIN))
    elsewhere, times weight[target] if given; "mean" divides the sum by N (mmcv's choice), "sum", or "none"."""
    import torch

    tiny = torch.finfo(torch.float32).tiny
    p = input.sigmoid()
    positive = target.unsqueeze(1) == torch.arange(input.shape[1], device=input.device)
    term_p = (1 - p).pow(gamma) * p.clamp(min=tiny).log()
    term_n = p.pow(gamma) * (1 - p).clamp(min=tiny).log()
    out = torch.where(positive, -alpha * term_p, -(1 - alpha) * term_n)
    if weight is not None:
        out = out * weight[target].unsqueeze(1)
    if reduction == "mean":
        return out.sum() / input.shape[0]
    return out.sum() if reduction == "sum" else out


STAND_INS = {"sigmoid_focal_loss": sigmoid_focal_loss}


def _resolve(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    if name in STAND_INS:
        value = STAND_INS[name]
    elif name in PURE_PYTHON:
        value = getattr(importlib.import_module(f"mmcv.ops.{PURE_PYTHON[name]}"), name)
    else:
        value = UnavailableOp(name)
    setattr(ops, name, value)  # resolve once
    return value


ops = types.ModuleType("mmcv.ops", "mmcv-lite stand-in (tests/oracles/mmcv_ops_shim.py)")
ops.__path__ = [str(Path(mmcv.__file__).parent / "ops")]
ops.__getattr__ = _resolve
sys.modules["mmcv.ops"] = ops
mmcv.ops = ops
