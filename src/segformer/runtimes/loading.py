"""A model source (a PyTorch model or an exported graph) and the runtime that runs it, for the commands that take
`--runtime auto|torch|onnxruntime|openvino` (predict, eval, serve)."""

from __future__ import annotations

from torch import nn

from .base import RuntimeModel
from .precision import autocast_dtype
from .select import select_runtime


def load_source(source: str, runtime: str, *, device: str, dtype: str, token_merging: str | None = None) -> nn.Module:
    """Our PyTorch model (on `device`, eval mode), or the runner of an exported .onnx / .xml file."""
    from ..checkpoints import load_model
    from . import is_exported, load_runner

    if not is_exported(source):
        model = load_model(source, **({"token_merging": token_merging} if token_merging else {}))
        return model.to(device).eval()
    if device != "cpu":
        raise ValueError(f"--model {source}: exported graphs run on the CPU here, not {device}")
    if token_merging:
        raise ValueError("--token-merging applies to PyTorch models, not to an exported graph")
    return load_runner(source, runtime, dtype=dtype)


def prepare_runner(model: nn.Module, runtime: str, *, device: str, dtype: str,
                   size: tuple[int, int]) -> tuple[nn.Module, str, str]:
    """(module to run, autocast dtype, the choice in words) for a model from `load_source`; `size` is the (H, W)
    of one forward pass. bfloat16 on a CPU where it would be slower becomes float32 (with a warning); other
    runtimes than PyTorch run float32."""
    if isinstance(model, RuntimeModel):
        return model, "float32", f"runtime {model.runtime}: exported file ({model.description})"
    dtype = autocast_dtype(dtype, device, model, size)
    runner, choice = select_runtime(model, size, runtime=runtime, device=device, dtype=dtype)
    return runner, dtype if choice.runtime == "torch" else "float32", choice.describe()
