"""Lets MMSegmentation 1.2.2 import on top of mmcv-lite, which has no compiled `mmcv._ext`.

mmcv-lite's `mmcv/ops/__init__.py` imports every op module eagerly and most of them load `mmcv._ext`, so
`import mmcv.ops` fails, and mmseg imports `mmcv.ops` at import time: `point_sample` (mask_classification.py,
models/utils/point_sample.py, san_head.py) and `sigmoid_focal_loss` (losses/focal_loss.py). The models the
oracles build (MiT/SegFormer, ViT/SETR) call none of them.

Importing this module (before mmseg) puts an `mmcv.ops` package in `sys.modules` whose attributes resolve
lazily: the pure-Python point-sampling functions come from mmcv's own `point_sample.py`, every other op is an
`UnavailableOp` that raises, naming the op, only when something calls or instantiates it. The package's
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


def _resolve(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    if name in PURE_PYTHON:
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
