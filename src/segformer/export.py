"""ONNX export (optional `.[onnx]` extra) and its check against PyTorch with onnxruntime.

We use torch's TorchScript-based exporter (`dynamo=False`): it needs only `onnx`, while the
torch.export-based default of torch >= 2.9 also needs `onnxscript`. The graph is traced at
`size`; with `dynamic=True` batch, height and width stay symbolic, so one file serves any input
size (every shape-dependent choice in our models computes the same function either way).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .models import input_channels
from .utils.io import atomic_write

INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("ONNX export needs the onnx extra: pip install 'segformer[onnx]'") from exc


def export_onnx(model: nn.Module, path: str | Path, *, size: tuple[int, int] = (512, 512), batch: int = 1,
                dynamic: bool = False, opset: int = 17, overwrite: bool = False,
                metadata: dict[str, str] | None = None) -> Path:
    """Write `model` (eval mode, float32, CPU) as an ONNX graph `pixel_values` -> `logits`, atomically.

    dynamic: keep batch, height and width symbolic (otherwise the graph only accepts `batch x 3 x size`).
    metadata: strings stored in the file's `metadata_props` (`runtimes.base.metadata`: config, class names,
    test pipeline).
    """
    _require_onnx()
    path = Path(path)
    if path.exists() and not overwrite:  # checked before the (slow) trace
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if min(size) < 32:
        raise ValueError(f"export size must be at least 32x32 (four stride-2+ stages), got {size}")
    model = model.eval().float().cpu()
    x = torch.randn(batch, input_channels(model), *size)
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}} if dynamic else None

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # tracer notes on Python-level shape checks; verify_onnx is the real check
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), tmp, dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
        if metadata:
            import onnx

            graph = onnx.load(tmp)
            onnx.helper.set_model_props(graph, metadata)
            onnx.save(graph, tmp)

    return atomic_write(path, write, overwrite)


def verify_onnx(model: nn.Module, path: str | Path, sizes: list[tuple[int, int]], batch: int = 1,
                seed: int = 0, runner: nn.Module | None = None) -> list[float]:
    """Max abs difference between onnxruntime (CPU) and PyTorch logits, one random input per size.
    `runner`: another module to compare instead of onnxruntime on `path` (e.g. an OpenVINO runner)."""
    if runner is None:
        _require_onnx()
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def runner(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    model = model.eval().float().cpu()
    gen = torch.Generator().manual_seed(seed)
    diffs = []
    for height, width in sizes:
        x = torch.randn(batch, input_channels(model), height, width, generator=gen)
        with torch.inference_mode():
            expected = model(x).numpy()
            got = runner(x).numpy()
        if got.shape != expected.shape:
            raise RuntimeError(f"{path}: the runtime returned {got.shape} for input {tuple(x.shape)}, PyTorch "
                               f"{expected.shape} (exported without dynamic=True?)")
        diffs.append(float(np.abs(got - expected).max()))
    return diffs
