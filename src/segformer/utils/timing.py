"""Timing several candidates side by side: interleaved round by round, so that all of them see the same machine
load (on a shared machine compare medians, or ratios of them, never absolute numbers)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (a no-op on CPU), so that a timer reads the work's end."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(candidates: dict[str, Callable[[], object]], *, runs: int = 10, warmup: int = 2,
                     device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Seconds per call of each candidate: `warmup` untimed rounds, then `runs` timed rounds, each round calling
    every candidate once in turn."""
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(warmup):
        for step in candidates.values():
            step()
    for _ in range(runs):
        for name, step in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times
