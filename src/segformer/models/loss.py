"""The segmentation loss: cross-entropy on logits upsampled bilinearly to the label size, as HF and mmseg.

The same numbers as `F.cross_entropy(F.interpolate(logits, size), labels, weight, ignore_index)`, computed
in a layout that is twice as fast on CPU, where this loss is most of a small model's training step (B0,
batch 8, 256x256, 150 classes: the upsampled logits are 79M floats that log-softmax, its backward and the
upsampling's backward each stream through memory):
- the logits are upsampled channels-last, so each pixel's K scores are contiguous and log-softmax runs
  along the innermost dimension (PyTorch's softmax over dim 1 of an NCHW map is strided and slow);
- forward keeps the softmax and backward is written by hand: the closed form (softmax - one_hot) x weight /
  total is one pass over the upsampled map, where autograd's log-softmax + NLL backward takes four.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class _PixelCrossEntropy(torch.autograd.Function):
    """Weighted mean cross-entropy of (P, K) float32 scores against (P,) targets, ignoring `ignore_index`."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, target: torch.Tensor, ignore_index: int,
                class_weight: torch.Tensor | None) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)  # kept for backward: softmax - one_hot needs no second exp pass
        valid = target != ignore_index
        index = target.masked_fill(~valid, 0).unsqueeze(1)
        weight = valid.to(scores.dtype) if class_weight is None else class_weight[index.squeeze(1)] * valid
        picked = probs.gather(1, index).squeeze(1)
        log_picked = picked.log()
        tiny = picked < 1e-30  # log(p) loses precision (or is -inf) there: take those rows' log-softmax exactly
        if bool(tiny.any()):
            rows = tiny.nonzero().squeeze(1)
            log_picked[rows] = torch.log_softmax(scores[rows], dim=-1).gather(1, index[rows]).squeeze(1)
        total = weight.sum()
        total = torch.where(total > 0, total, torch.ones_like(total))  # nothing labelled: loss 0, as mmseg
        loss = -(log_picked * weight).sum() / total
        ctx.save_for_backward(probs, index, weight, total)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        probs, index, weight, total = ctx.saved_tensors
        scale = (weight * (grad_loss / total)).unsqueeze(1)
        grad = probs * scale  # softmax x scale, then minus scale at the target
        grad.scatter_add_(1, index, -scale)
        return grad, None, None, None


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                      class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of (B, K, h, w) logits, resized bilinearly to the (B, H, W) labels, in float32.

    Like `F.cross_entropy`, the mean is over labelled pixels, weighted by `class_weight` (K,) if given. A batch
    with no labelled pixel (every label `ignore_index`, a valid input) gives loss 0 and zero gradients, as
    MMSegmentation's loss does, where `F.cross_entropy` gives NaN (0 / 0).
    """
    if labels.dim() != 3 or logits.dim() != 4 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"need logits (B, K, h, w) and labels (B, H, W), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    num_classes = logits.shape[1]
    logits = logits.float().contiguous(memory_format=torch.channels_last)
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    scores = logits.permute(0, 2, 3, 1).reshape(-1, num_classes)  # a view when channels-last
    if class_weight is not None:
        class_weight = class_weight.to(scores.device, torch.float32)
    return _PixelCrossEntropy.apply(scores, labels.reshape(-1).long(), ignore_index, class_weight)
