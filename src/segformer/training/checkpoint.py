"""Training checkpoints: everything `--resume` needs to continue exactly, written atomically.

A checkpoint (`checkpoints/iter_0001000.pt`) holds the model, optimiser, gradient scaler, the iteration (the
schedule is a function of it), the data position (micro-batches consumed per process), every process's RNG
states and the config. It is written to a temporary file in the same folder and renamed into place, so a crash
mid-write never leaves a truncated checkpoint under the real name. It holds only tensors and plain Python
values, so it loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.io import torch_load
from ..utils.io import atomic_write

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"iter_(\d+)\.pt")


def rng_state() -> dict:
    """This process's RNG states: torch (CPU and every CUDA device), numpy's global and Python's."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"iter_{iteration:07d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the run's checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("iter_*.pt") if (m := _NAME.fullmatch(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: Path, iteration: int, state: dict, keep: int = 0) -> Path:
    """Write `state` as the checkpoint of `iteration` (atomically), then delete all but the newest `keep`
    (0 keeps all)."""
    path = checkpoint_path(run_dir, iteration)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    if keep:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def find_checkpoint(resume: str | Path, run_dir: Path | None) -> Path:
    """The checkpoint `resume` names: a file, a run directory (its newest), or "auto" (the newest in `run_dir`)."""
    target = Path(run_dir) if str(resume) == "auto" and run_dir is not None else Path(resume)
    if target.is_file():
        return target
    if target.is_dir():
        found = list_checkpoints(target)
        if not found:
            raise FileNotFoundError(f"--resume: no checkpoints (iter_*.pt) in {target / CHECKPOINT_DIR}: the run "
                                    f"stopped before its first one; start it over with --overwrite")
        return found[-1][1]
    raise FileNotFoundError(f"--resume: {target} is neither a checkpoint file nor a run directory")


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `save_checkpoint` (tensors and plain values only: weights_only)."""
    state = torch_load(path)
    missing = {"iteration", "model", "optimizer", "config"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"{path}: not a training checkpoint (missing {sorted(missing)})")
    return state
