"""Training losses: cross-entropy on logits upsampled to the label size (ignore index, optional class weights),
plus the auxiliary heads' losses with their weights (SETR).

Without class weights the model's own `loss` is used (SegFormer: cross-entropy; SETR: main + aux_weight x each
auxiliary head), so training optimises exactly what the model defines. Like HF and `F.cross_entropy`, the mean
is over labelled pixels (weighted by their class weights); mmseg's default divides by all pixels, ignored ones
included, which only rescales the gradient by the labelled fraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models import segmentation_loss


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or similar `.module`) wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class SegmentationLoss:
    """`loss(model, pixel_values, labels)`: forward (with auxiliary outputs when the model has auxiliary
    heads) and the training loss. `model` may be DDP-wrapped: the forward goes through the wrapper."""

    def __init__(self, ignore_index: int = 255, class_weights: Sequence[float] | None = None):
        self.ignore_index = ignore_index
        self.class_weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None

    def __call__(self, model: nn.Module, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        core = unwrap(model)
        num_aux = len(getattr(core, "aux_heads", None) or ())
        if num_aux:
            logits, aux = model(pixel_values, return_aux=True)
        else:
            logits, aux = model(pixel_values), []
        num_classes = logits.shape[1]
        if self.class_weight is not None and len(self.class_weight) != num_classes:
            raise ValueError(f"class_weights has {len(self.class_weight)} values but the model predicts "
                             f"{num_classes} classes")
        if self.class_weight is None and hasattr(core, "loss"):
            return core.loss(logits, labels, aux) if num_aux else core.loss(logits, labels)
        total = segmentation_loss(logits, labels, self.ignore_index, self.class_weight)
        aux_weight = getattr(getattr(core, "config", None), "aux_weight", 0.0)
        for extra in aux:
            total = total + aux_weight * segmentation_loss(extra, labels, self.ignore_index, self.class_weight)
        return total
