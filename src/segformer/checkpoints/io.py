"""Reading and writing checkpoint files safely: safetensors or `torch.load(weights_only=True)`, never
arbitrary unpickling; writes go to a temporary file renamed into place (`utils.io.atomic_write`)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..utils.io import atomic_write

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_WRAPPERS = ("state_dict", "model", "module", "model_state")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)", re.IGNORECASE)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, meta) from one checkpoint file. `meta` holds what sits beside the weights:
    safetensors metadata, or an mmseg/NVlabs `meta` entry (e.g. `CLASSES`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    obj = torch_load(path)
    return _unwrap(obj, path)


def torch_load(path: str | Path) -> object:
    """`torch.load(path, weights_only=True)` on the CPU, with a ValueError naming the file when it holds code or
    objects beyond tensors and plain containers (refused, nothing of it runs) or is not a PyTorch file at all."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = _GLOBAL.search(str(exc))
        if blocked is None:  # e.g. random bytes: "Unsupported operand"
            raise ValueError(_unreadable(Path(path), exc)) from None
        raise ValueError(
            f"{path}: refused: the file holds code or Python objects beyond tensors and plain containers (it "
            f"references {blocked.group(1)}); nothing of it was run. Only load such a file in a tool you trust it "
            f"with, and re-save just the tensors (the state_dict, or .safetensors)") from None
    except Exception as exc:  # a corrupt file can fail anywhere in torch.load (IndexError, EOFError, ...)
        raise ValueError(_unreadable(Path(path), exc)) from None


def _numpy_globals() -> list:
    """What rebuilding a numpy array of numbers needs: MMEngine checkpoints (MMPose's, SegFormer++'s pose ones) keep
    numpy arrays in their `meta` (e.g. the keypoint sigmas). It rebuilds data only; object arrays stay refused.
    Files written with numpy 1.x name the rebuild function under `numpy.core`, numpy 2 under `numpy._core`."""
    import numpy as np

    rebuild = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    dtypes = {type(np.dtype(code)) for code in np.typecodes["All"] if code != "O"}
    return [rebuild, (rebuild, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, *dtypes]


def _detail(exc: BaseException) -> str:
    """The informative line of a torch.load error (its weights_only errors open with advice we do not give)."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else type(exc).__name__


def _unreadable(path: Path, exc: BaseException) -> str:
    return (f"{path}: not a readable PyTorch checkpoint ({_detail(exc)}); accepted: {', '.join(CHECKPOINT_SUFFIXES)} "
            f"files of tensors and plain containers")


def _unwrap(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    meta: dict = {}
    if isinstance(obj, dict):
        if isinstance(obj.get("meta"), dict):
            meta = obj["meta"]
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: no state dict of tensors found (top-level type {type(obj).__name__}); "
                         f"expected a dict of tensors, possibly under 'state_dict' or 'model'")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    return sd, meta


def write_safetensors(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str],
                      overwrite: bool) -> Path:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), overwrite)


def write_torch(path: Path, obj: dict, overwrite: bool) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), overwrite)


def class_names(meta: dict) -> list[str] | None:
    """Class names where mmseg 1.x (meta.dataset_meta.classes) or mmseg 0.x / NVlabs (meta.CLASSES) keep them."""
    names = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")
    return [str(n) for n in names] if names else None
