"""CPU runtimes behind one interface: PyTorch, onnxruntime and OpenVINO.

A runner is a `torch.nn.Module` mapping normalised pixel_values (B, 3, H, W) to logits, so
`segformer.predict`, `segformer.evaluation.evaluate` or a server take it wherever they take a model:

    model = segformer.load_model("runs/b0/final")
    runner, choice = segformer.runtimes.select_runtime(model, (512, 512))   # "auto": fastest exact path here
    runner = segformer.runtimes.load_runner("model.xml")                     # an exported IR (or .onnx)
    segformer.predict(runner, "image.jpg")

`export_openvino(model, "model.xml")` writes OpenVINO IR; `autocast_dtype("bfloat16", "cpu", model, size)`
says whether bf16 would be a trap here (then "float32").
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .base import RUNTIMES, RuntimeModel, runtime_of
from .precision import autocast_dtype, native_bf16
from .select import Choice, build_runner, select_runtime

FILE_RUNTIMES = {".onnx": "onnxruntime", ".xml": "openvino"}


def is_exported(source) -> bool:
    """Is `source` an exported graph file (.onnx or OpenVINO .xml) rather than a PyTorch model source?"""
    return isinstance(source, (str, Path)) and Path(source).suffix.lower() in FILE_RUNTIMES


def load_runner(source: str | Path, runtime: str | None = None, *, dtype: str = "float32") -> nn.Module:
    """A runner for an exported file: `.onnx` (onnxruntime, or OpenVINO if asked) or `.xml` (OpenVINO)."""
    suffix = Path(source).suffix.lower()
    if suffix not in FILE_RUNTIMES:
        raise ValueError(f"{source}: not an exported model (expected {', '.join(FILE_RUNTIMES)})")
    runtime = FILE_RUNTIMES[suffix] if runtime in (None, "auto") else runtime
    if runtime == "openvino":
        from .openvino import openvino_model

        return openvino_model(source, precision=dtype)
    if runtime == "onnxruntime" and suffix == ".onnx":
        if dtype != "float32":
            raise ValueError(f"onnxruntime runs {source} in float32 only, not {dtype}")
        from .onnx import onnxruntime_model

        return onnxruntime_model(source)
    raise ValueError(f"{source}: runtime {runtime!r} cannot run a {suffix} file (accepted: "
                     f"{FILE_RUNTIMES[suffix]}{', openvino' if suffix == '.onnx' else ''})")


__all__ = ["RUNTIMES", "Choice", "RuntimeModel", "autocast_dtype", "build_runner", "is_exported", "load_runner",
           "native_bf16", "runtime_of", "select_runtime"]
