"""Segmentation losses on logits upsampled bilinearly to the label size, as HF and mmseg: cross-entropy (the
default), and MMSegmentation 1.2.2's dice and sigmoid focal losses, composed with weights as mmseg's
`loss_decode` lists (`parse_losses`, `combined_loss`).

Cross-entropy:

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

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

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


def _upsampled(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) float32 logits at the labels' size."""
    logits = logits.float()
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, use_sigmoid: bool = True,
              naive_dice: bool = False, eps: float = 1e-3) -> torch.Tensor:
    """MMSegmentation 1.2.2's `DiceLoss`: per image, one dice over all classes' (sigmoid, or softmax) maps
    against the one-hot labels, 1 - dice averaged over the batch. As there, an ignored pixel's one-hot row is
    all zero (its prediction still counts in the denominator), and a class index equal to `ignore_index` is
    left out. V-Net form 2|PT| / (|P|^2 + |T|^2) (each with + eps), or (2|PT| + eps) / (|P| + |T| + eps)
    with `naive_dice`."""
    logits = _upsampled(logits, labels)
    num_classes = logits.shape[1]
    probs = logits.sigmoid() if use_sigmoid or num_classes == 1 else logits.softmax(dim=1)
    target = F.one_hot(labels.long().clamp(0, num_classes), num_classes + 1)[..., :num_classes]
    target = target.permute(0, 3, 1, 2).to(probs.dtype)
    keep = torch.arange(num_classes, device=probs.device) != ignore_index
    probs, target = probs[:, keep].flatten(1), target[:, keep].flatten(1)
    overlap = (probs * target).sum(1)
    if naive_dice:
        dice = (2 * overlap + eps) / (probs.sum(1) + target.sum(1) + eps)
    else:
        dice = 2 * overlap / ((probs * probs).sum(1) + eps + (target * target).sum(1) + eps)
    return (1 - dice).mean()


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, gamma: float = 2.0,
               alpha: float | Sequence[float] = 0.5) -> torch.Tensor:
    """MMSegmentation 1.2.2's `FocalLoss` (sigmoid; the computation of mmcv's `sigmoid_focal_loss` op, which
    mmseg uses): per pixel and class, -alpha (1 - p)^gamma log p for the labelled class and -(1 - alpha)
    p^gamma log(1 - p) for the others, p = sigmoid(logit); ignored pixels weigh 0 and, as there, the mean is
    over all pixels x classes. `alpha` may be one value per class."""
    logits = _upsampled(logits, labels)
    num_classes = logits.shape[1]
    scores = logits.permute(0, 2, 3, 1).reshape(-1, num_classes)
    labels = labels.reshape(-1).long()
    valid = labels != ignore_index
    target = F.one_hot(labels.masked_fill(~valid, 0), num_classes).to(scores.dtype)
    alpha = torch.as_tensor(alpha, dtype=scores.dtype, device=scores.device)
    p = scores.sigmoid()
    positive = alpha * (1 - p).pow(gamma) * F.softplus(-scores)  # -log p = softplus(-x)
    negative = (1 - alpha) * p.pow(gamma) * F.softplus(scores)  # -log(1 - p) = softplus(x)
    loss = torch.where(target.bool(), positive, negative) * valid.unsqueeze(1)
    return loss.sum() / loss.numel()


# Each loss type's options beyond `type` and `weight`, with their defaults (mmseg's).
LOSS_OPTIONS = {
    "cross_entropy": {},
    "dice": {"use_sigmoid": True, "naive_dice": False, "eps": 1e-3},
    "focal": {"gamma": 2.0, "alpha": 0.5},
}
MMSEG_NAMES = {"CrossEntropyLoss": "cross_entropy", "DiceLoss": "dice", "FocalLoss": "focal"}


@dataclass(frozen=True)
class LossTerm:
    """One entry of a loss list: `weight` x the loss of `type` with `options`."""

    type: str
    weight: float = 1.0
    options: dict = field(default_factory=dict)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                 class_weight: torch.Tensor | None = None) -> torch.Tensor:
        if self.type == "cross_entropy":
            return self.weight * segmentation_loss(logits, labels, ignore_index, class_weight)
        loss = dice_loss if self.type == "dice" else focal_loss
        return self.weight * loss(logits, labels, ignore_index, **self.options)


def _loss_error(where: str, what: str, name: str, accepted: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, accepted, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"{where}: unknown {what} {name!r}{hint}; accepted: {', '.join(accepted)}")


def _option_ok(default, value, per_class: bool = False) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if per_class and isinstance(value, list):
        return bool(value) and all(_option_ok(default, v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_losses(spec: Sequence[dict], where: str = "losses") -> tuple[LossTerm, ...]:
    """Loss terms from a list of mappings such as `[{type: cross_entropy, weight: 1.0}, {type: dice, weight:
    3.0}]` (mmseg's `loss_decode` list; its names CrossEntropyLoss / DiceLoss / FocalLoss are accepted too).
    Unknown types and keys are errors naming the entry and what is accepted."""
    if not isinstance(spec, Sequence) or isinstance(spec, str) or not spec:
        raise ValueError(f"{where}: expected a non-empty list of {{type: ..., weight: ...}} mappings, got {spec!r}")
    terms = []
    for i, entry in enumerate(spec):
        here = f"{where}[{i}]"
        if not isinstance(entry, dict) or "type" not in entry:
            raise ValueError(f"{here}: expected a mapping with a `type` ({', '.join(LOSS_OPTIONS)}), got {entry!r}")
        kind = MMSEG_NAMES.get(entry["type"], entry["type"])
        if kind not in LOSS_OPTIONS:
            raise _loss_error(here, "loss type", str(entry["type"]), list(LOSS_OPTIONS))
        options = {k: v for k, v in entry.items() if k not in ("type", "weight")}
        for key, value in options.items():
            if key not in LOSS_OPTIONS[kind]:
                raise _loss_error(f"{here} ({kind})", "key", str(key), ["type", "weight", *LOSS_OPTIONS[kind]])
            if not _option_ok(LOSS_OPTIONS[kind][key], value, per_class=key == "alpha"):
                kind_of = "true or false" if isinstance(LOSS_OPTIONS[kind][key], bool) else "a number"
                per_class = " (or one per class)" if key == "alpha" else ""
                raise ValueError(f"{here} ({kind}): {key} must be {kind_of}{per_class}, got {value!r}")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"{here}: weight must be a number >= 0, got {weight!r}")
        terms.append(LossTerm(kind, float(weight), {**LOSS_OPTIONS[kind], **options}))
    return tuple(terms)


def combined_loss(logits: torch.Tensor, labels: torch.Tensor, terms: Sequence[LossTerm], ignore_index: int = 255,
                  class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The weighted sum of `terms` (cross-entropy takes `class_weight`)."""
    return sum(term(logits, labels, ignore_index, class_weight) for term in terms)
