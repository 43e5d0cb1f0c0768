"""Short timed probes and their on-disk cache, keyed by architecture, input size and machine.

A probe times candidates round by round (interleaved, so they share the machine's load) and keeps the
median of each. Results are cached in `$SEGFORMER_CACHE_DIR/probes.json` (default
`~/.cache/segformer`) under a key that names what decides speed: the model's architecture (its config
without class names; weights do not matter), the input size, the thread count, the CPU and the library
versions. `SEGFORMER_CACHE_DIR=` (empty) turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..models.base import SegmentationModel, model_config
from ..utils import timing
from ..utils.io import write_json

logger = logging.getLogger(__name__)
CACHE_ENV = "SEGFORMER_CACHE_DIR"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else `platform.processor()`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def probe_key(kind: str, model: nn.Module, size: tuple[int, int], **extra) -> str:
    """A stable key for a probe of `kind` on `model`'s architecture at `size` on this machine."""
    config = model_config(model)
    arch = {k: v for k, v in config.to_dict().items() if k != "class_names"} if config is not None \
        else type(model).__name__
    merging = model.token_merging if isinstance(model, SegmentationModel) else None
    parts = {"kind": kind, "arch": arch, "size": list(size), "threads": torch.get_num_threads(), "cpu": cpu_name(),
             "torch": torch.__version__, "merging": str(merging), **extra}
    digest = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{kind}:{digest}"


def cache_dir() -> Path | None:
    """Where probes and converted models are cached; None when SEGFORMER_CACHE_DIR is set empty."""
    root = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "segformer"))
    return Path(root) if root else None


def weights_key(model: nn.Module) -> str:
    """A digest of `model`'s architecture and every weight and buffer (what a converted graph depends on)."""
    digest = hashlib.sha1(probe_key("weights", model, (0, 0)).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def _cache_file() -> Path | None:
    root = cache_dir()
    return root / "probes.json" if root else None


def cached(key: str) -> dict | None:
    path = _cache_file()
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get(key)
    except (OSError, ValueError):
        logger.warning("probe cache %s is unreadable; probing again", path)
        return None


def store(key: str, value: dict) -> None:
    """Add one result to the cache (atomically; a cache that cannot be written is only logged)."""
    path = _cache_file()
    if path is None:
        return
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data[key] = value
    try:
        write_json(path, data)
    except OSError as exc:
        logger.warning("could not write the probe cache %s: %s", path, exc)


def time_interleaved(candidates: dict[str, Callable[[], object]], runs: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate, run round by round after `warmup` rounds."""
    times = timing.time_interleaved(candidates, runs=runs, warmup=warmup)
    return {k: statistics.median(v) for k, v in times.items()}
