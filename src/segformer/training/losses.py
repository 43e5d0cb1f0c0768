"""Training losses: cross-entropy on logits upsampled to the label size (ignore index, optional class weights),
or a weighted list of cross-entropy, dice and focal losses (`losses`), plus the auxiliary heads' losses with
their weights (SETR).

A `SegmentationModel` computes its own loss (`SegmentationModel.loss`: SegFormer cross-entropy; SETR main +
aux_weight x each auxiliary head), so training optimises exactly what the model defines. Like HF and
`F.cross_entropy`, the mean is over labelled pixels (weighted by their class weights); mmseg's default divides by
all pixels, ignored ones included, which only rescales the gradient by the labelled fraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models import SegmentationModel, segmentation_loss
from ..models.loss import combined_loss, parse_losses


class TrainingForward(nn.Module):
    """`model` whose forward returns (logits, auxiliary logits): `forward_aux` for a `SegmentationModel`, plain
    logits and no auxiliary ones for any other model. Training wraps this (not the model) in
    DistributedDataParallel, so the auxiliary heads' forward goes through the wrapper too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if isinstance(self.model, SegmentationModel):
            return self.model.forward_aux(pixel_values)
        return self.model(pixel_values), []


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper and a `TrainingForward`."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return model.model if isinstance(model, TrainingForward) else model


class SegmentationLoss:
    """`loss(model, pixel_values, labels)`: forward (with auxiliary outputs when the model has auxiliary
    heads) and the training loss. `model` may be a `TrainingForward`, DDP-wrapped or not: the forward goes
    through the wrapper."""

    def __init__(self, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 losses: Sequence[dict] | None = None):
        self.ignore_index = ignore_index
        self.class_weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.terms = parse_losses(losses) if losses else ()  # () : the model's own loss (cross-entropy)

    def __call__(self, model: nn.Module, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        core = unwrap(model)
        forward = model if core is not model else TrainingForward(model)
        logits, aux = forward(pixel_values)
        num_classes = logits.shape[1]
        weight = self.class_weight
        if weight is not None and len(weight) != num_classes:
            raise ValueError(f"class_weights has {len(weight)} values but the model predicts {num_classes} classes")
        if not isinstance(core, SegmentationModel):
            if self.terms:
                return combined_loss(logits, labels, self.terms, self.ignore_index, weight)
            return segmentation_loss(logits, labels, self.ignore_index, weight)
        # the model's own ignore index, unless class weights ask for the weighted loss on the data's labels
        ignore = self.ignore_index if weight is not None else None
        return core.loss(logits, labels, aux, class_weight=weight, ignore_index=ignore, losses=self.terms)
