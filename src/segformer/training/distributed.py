"""Distributed data parallel helpers: process group from torchrun's environment, SyncBatchNorm (also on CPU),
and small collectives. A single process (WORLD_SIZE unset or 1) never creates a process group."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; with more than one process, join the process group
    (nccl on CUDA, gloo on CPU). `device`: None picks cuda (one GPU per local rank) if available, else cpu."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available; use device: cpu")
        dev = torch.device("cuda", local_rank if world > 1 and dev.index is None else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local_rank, dev)


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


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
