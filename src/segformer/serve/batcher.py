"""Dynamic batching: forward passes asked for by many request threads run together as one batch.

`BatchedModel` stands in for the model inside `segformer.predict`, so every request goes through the package's
own image-level path (decoding, resizing, sliding windows, test-time augmentation, argmax at the original size)
and only the forward pass is shared. Each `forward(x)` is handed to a `DynamicBatcher`, whose thread waits up to
`max_wait_ms` after the first pending input for more, groups the inputs by shape (a lone odd size runs in the same
round, alone), concatenates each group into batches of up to `max_batch` images, runs the model once per batch and
hands each caller its slice of the logits.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from torch import nn

from ..inference import run_model

log = logging.getLogger(__name__)


@dataclass
class _Job:
    x: torch.Tensor
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        return tuple(self.x.shape[1:]), self.x.dtype, self.x.device


class DynamicBatcher:
    """Runs `model` on inputs submitted from any thread, batching those that arrive within `max_wait_ms`.

    `on_batch(size)` is called after every forward pass (for metrics). The queue itself is unbounded: callers
    bound the number of requests in flight (the server's `--max-queue`), and each request waits for its result
    before it submits again, so at most that many inputs are ever pending.
    """

    def __init__(self, model: nn.Module, *, max_batch: int = 8, max_wait_ms: float = 10.0,
                 dtype: str | torch.dtype | None = None, on_batch: Callable[[int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.model, self.max_batch, self.max_wait = model, max_batch, max_wait_ms / 1000.0
        self.dtype, self.on_batch = dtype, on_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="segformer-batcher", daemon=True)
        self._stopped = False

    def start(self) -> DynamicBatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Run what is pending, then end the thread; later submissions fail."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join()

    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, x: torch.Tensor) -> Future:
        """A future of the float32 logits `run_model(model, x)` (x: a batch of one or more images)."""
        if self._stopped:
            raise RuntimeError("the batcher has stopped (the server is shutting down)")
        job = _Job(x)
        self._queue.put(job)
        return job.future

    def _collect(self) -> tuple[list[_Job], bool]:
        """The jobs of one round (blocking for the first), and whether the batcher was told to stop."""
        first = self._queue.get()
        if first is None:
            return [], True
        jobs, images = [first], first.x.shape[0]
        deadline = time.monotonic() + self.max_wait
        while images < self.max_batch:
            try:
                job = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            images += job.x.shape[0]
        return jobs, False

    def _batches(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Jobs grouped by input shape, in arrival order, cut into batches of at most `max_batch` images."""
        groups: dict[tuple, list[list[_Job]]] = {}
        for job in jobs:
            batches = groups.setdefault(job.key, [[]])
            if batches[-1] and sum(j.x.shape[0] for j in batches[-1]) + job.x.shape[0] > self.max_batch:
                batches.append([])
            batches[-1].append(job)
        return [batch for batches in groups.values() for batch in batches]

    def _run(self, batch: list[_Job]) -> None:
        try:
            x = batch[0].x if len(batch) == 1 else torch.cat([job.x for job in batch])
            logits = run_model(self.model, x, self.dtype)
        except Exception as exc:  # every caller of this batch gets the error; the batcher goes on
            log.exception("forward pass of a batch of %d input(s) failed", len(batch))
            for job in batch:
                job.future.set_exception(exc)
            return
        start = 0
        for job in batch:
            job.future.set_result(logits[start:start + job.x.shape[0]])
            start += job.x.shape[0]
        if self.on_batch is not None:
            self.on_batch(int(x.shape[0]))

    def _loop(self) -> None:
        stop = False
        while not stop:
            jobs, stop = self._collect()
            for batch in self._batches(jobs):
                self._run(batch)


class BatchedModel(nn.Module):
    """The model as `segformer.predict` sees it, with every forward pass run by a `DynamicBatcher`.

    Parameters (and so the device) are the wrapped model's; the outputs are its float32 logits.
    """

    def __init__(self, model: nn.Module, batcher: DynamicBatcher):
        super().__init__()
        self.model = model
        self._batcher = batcher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._batcher.submit(x).result()
