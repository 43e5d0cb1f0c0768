"""Distributed data parallel helpers for training: SyncBatchNorm (also on CPU) and small collectives. The process
group itself is set up by `segformer.utils.distributed` (re-exported here for the trainer)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from ..utils.distributed import DistInfo, destroy, init_distributed, is_initialized, world_size

__all__ = ["DistInfo", "destroy", "init_distributed", "is_initialized", "world_size", "all_reduce_sum",
           "gather_objects", "barrier", "CPUSyncBatchNorm", "convert_sync_batchnorm"]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; `t` itself on one process)."""
    if world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def gather_objects(obj) -> list:
    """Every rank's `obj`, by rank (a one-element list on one process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every process, for CPU tensors under gloo.

    Hand-written because torch's `nn.SyncBatchNorm` accepts only GPU tensors. Mean and variance come from
    differentiable all-reduces (`torch.distributed.nn`), so gradients flow through the shared statistics
    exactly as in one process holding the whole batch. Eval mode (and a single process) is plain BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0, 2, 3]
        count = all_reduce_sum(torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device))
        mean = dist_fn.all_reduce(x.float().sum(dims)) / count
        centred = x.float() - mean[None, :, None, None]
        var = dist_fn.all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), momentum)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d synchronised across processes: torch's SyncBatchNorm on GPU, `CPUSyncBatchNorm` on CPU.
    Parameter and buffer names (and so checkpoints) are unchanged."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            setattr(model, name, sync.to(next(child.buffers(), torch.empty(0)).device))
        else:
            convert_sync_batchnorm(child, device)
    return model
