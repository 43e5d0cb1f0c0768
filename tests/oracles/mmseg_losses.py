"""MMSegmentation 1.2.2 as an oracle for the decode head's loss list: for each case (a `loss_decode` list such as
[{"type": "DiceLoss", "loss_weight": 3.0}]), build the losses with mmseg's registry, resize the logits to the
labels as `BaseDecodeHead.loss_by_feat` does, sum the losses and write the total and its gradient w.r.t. the
logits.

Run it with the MMSegmentation venv's interpreter (never imported by the test suite):

    .venv-mmseg/bin/python tests/oracles/mmseg_losses.py INPUT.npz CASES.json OUTPUT.npz

INPUT.npz holds `logits` (B, K, h, w) float32 and `labels` (B, H, W) int64 (255 = ignored). OUTPUT.npz gets
`loss_<i>` and `grad_<i>` per case.

mmseg's FocalLoss computes on CPU tensors with a path that indexes `one_hot[:, num_classes]` (one column, not
the first num_classes) and fails on any multi-class input; its other path, taken for CUDA tensors, calls mmcv's
compiled `sigmoid_focal_loss`. Here the logits report `is_cuda` and `torch.cuda.is_available()` is True, so
mmseg runs that path, with the project's plain-PyTorch stand-in for the op (mmcv_ops_shim.py).
"""

from __future__ import annotations

import json
import sys
import warnings

import mmcv_ops_shim  # noqa: E402,F401  (sibling script; must precede any mmseg import)

warnings.filterwarnings("ignore")
import mmseg.models  # noqa: E402,F401  (registers the losses)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmseg.models.utils import resize  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402


class ReportsCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA (results of torch ops on it keep the class)."""

    @property
    def is_cuda(self) -> bool:
        return True


def main(inputs: str, cases: str, output: str) -> None:
    init_default_scope("mmseg")
    data = np.load(inputs)
    labels = torch.from_numpy(data["labels"]).long()
    results = {}
    on_cpu = torch.cuda.is_available
    for i, case in enumerate(json.loads(open(cases).read())):
        losses = [MODELS.build(spec) for spec in case]
        logits = torch.from_numpy(data["logits"]).requires_grad_(True)
        seg_logits = resize(logits, size=labels.shape[1:], mode="bilinear", align_corners=False)
        torch.cuda.is_available = lambda: True  # only while mmseg's losses run (mmengine's logger asks too)
        try:
            total = sum(loss(seg_logits.as_subclass(ReportsCuda), labels, weight=None, ignore_index=255)
                        for loss in losses)
        finally:
            torch.cuda.is_available = on_cpu
        total = total.as_subclass(torch.Tensor)
        total.backward()
        results[f"loss_{i}"] = total.detach().numpy()
        results[f"grad_{i}"] = logits.grad.numpy()
    np.savez(output, **results)


if __name__ == "__main__":
    main(*sys.argv[1:4])
