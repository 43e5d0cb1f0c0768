"""Optimisers with the papers' parameter-wise rules, and the iteration-based warm-up + poly schedule.

Rules (mmseg's `paramwise_cfg` of the SegFormer and SETR configs): the decode and auxiliary heads train at
`head_lr_mult` x the base lr; parameters the model names in `no_weight_decay()` (norms, positional parameters)
get no weight decay. `no_decay="mmseg"` reproduces MMSegmentation 1.x exactly: its rule matches the substring
"norm" in its own parameter names, and its MiT calls the LayerNorm closing each stage `layers.i.2`, so those
keep their weight decay (NVlabs' original MiT names them `norm1..4`, which the "model" rule follows).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..models import SegmentationModel
from .config import TrainConfig

HEAD_PREFIXES = ("decode_head.", "aux_heads.")
_STAGE_NORM = re.compile(r"encoder\.stages\.\d+\.norm\.(weight|bias)")


def no_decay_names(model: nn.Module, rule: str = "model") -> set[str]:
    """Names of the parameters trained without weight decay under `rule` ("model", "mmseg" or "none").

    "model" asks the model (`no_weight_decay()`; a model without it has no exemptions); "mmseg" is the same
    minus the MiT's stage-closing LayerNorms, as mmseg's name matching does."""
    if rule == "none":
        return set()
    names = set(model.no_weight_decay()) if isinstance(model, SegmentationModel) else set()
    if rule == "mmseg":
        names = {n for n in names if not _STAGE_NORM.fullmatch(n)}
    elif rule != "model":
        raise ValueError(f"unknown no_decay rule {rule!r}; accepted: model, mmseg, none")
    return names


def param_groups(model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 10.0,
                 no_decay: str = "model") -> list[dict]:
    """Trainable parameters in up to four groups (body / head x decay / no decay), as (name, parameter) pairs.
    Each group carries its base `lr`, `weight_decay` and a `name`; the schedule scales `lr` from the group's
    `initial_lr`."""
    exempt = no_decay_names(model, no_decay)
    unknown = exempt - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"no_weight_decay() names parameters the model does not have: {sorted(unknown)[:5]}")
    groups: dict[tuple[bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head, decay = name.startswith(HEAD_PREFIXES), name not in exempt
        key = (head, decay)
        if key not in groups:
            groups[key] = {"name": f"{'head' if head else 'body'}{'' if decay else '_no_decay'}", "params": [],
                           "lr": lr * head_lr_mult if head else lr, "weight_decay": weight_decay if decay else 0.0}
        groups[key]["params"].append((name, p))  # named: torch keeps them as the group's "param_names"
    for group in groups.values():
        group["initial_lr"] = group["lr"]
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum) over `param_groups(model, ...)` with the config's rules."""
    groups = param_groups(model, config.lr, config.weight_decay, config.head_lr_mult, config.no_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; accepted: adamw, sgd")


class LRSchedule:
    """Linear warm-up then poly decay, by iteration, as mmengine's `LinearLR` + `PolyLR` (the lr iteration t
    trains with, t counted from 0):

        t < W:  base * (r + (1 - r) * t / (W - 1))                      (reaches base at t = W - 1)
        t >= W: min_lr + (base - min_lr) * (1 - (t - W) / (T - W - 1)) ** power

    with W = warmup_iters, r = warmup_ratio, T = total iterations; `min_lr` is absolute (the same for every
    group, as mmengine's eta_min). `base` is each group's `initial_lr`."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, warmup_iters: int = 0,
                 warmup_ratio: float = 1e-6, power: float = 1.0, min_lr: float = 0.0):
        self.optimizer, self.total_iters = optimizer, total_iters
        self.warmup_iters, self.warmup_ratio, self.power, self.min_lr = warmup_iters, warmup_ratio, power, min_lr
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def lr_at(self, t: int, base: float) -> float:
        """The lr of a group with base lr `base` at iteration t."""
        if t < self.warmup_iters:
            return base * (self.warmup_ratio + (1 - self.warmup_ratio) * t / max(self.warmup_iters - 1, 1))
        span = max(self.total_iters - self.warmup_iters - 1, 1)
        return self.min_lr + (base - self.min_lr) * (1 - min(t - self.warmup_iters, span) / span) ** self.power

    def set(self, t: int) -> float:
        """Set every group's lr for iteration t; returns the first group's."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(t, group["initial_lr"])
        return self.optimizer.param_groups[0]["lr"]


def build_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRSchedule:
    return LRSchedule(optimizer, config.iters, config.warmup_iters, config.warmup_ratio, config.power,
                      config.min_lr)
