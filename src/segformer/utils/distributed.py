"""torch.distributed set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), in one place.

A single process (WORLD_SIZE unset or 1) never creates a process group."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) outside torchrun."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: str | None = None, backend: str | None = None) -> DistInfo:
    """Join the process group when torchrun started more than one process (`backend`: None = nccl on CUDA,
    gloo on CPU). `device`: None picks cuda (one GPU per local rank) if available, else cpu."""
    rank, world, local_rank = launch_env()
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available; use device: cpu")
        dev = torch.device("cuda", local_rank if world > 1 and dev.index is None else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local_rank, dev)


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the joined process group; (0, 1) without one."""
    return (dist.get_rank(), dist.get_world_size()) if is_initialized() else (0, 1)


def world_size() -> int:
    return rank_and_world()[1]
