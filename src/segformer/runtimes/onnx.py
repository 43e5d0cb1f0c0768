"""onnxruntime runner: an exported `.onnx` file, or a PyTorch model exported on the fly (dynamic H, W)."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..export import INPUT_NAME, OUTPUT_NAME, export_onnx
from ..models.base import model_config
from .base import RuntimeModel, config_from_metadata

logger = logging.getLogger(__name__)
TRACE_SIZE = (512, 512)  # graphs are exported with dynamic batch, height and width; this is only the trace input


def require(module: str, extra: str):
    """Import an optional runtime, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(f"this needs {module}: pip install 'segformer[{extra}]'") from exc


def export_temporary(model: nn.Module, directory: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Our dynamic ONNX export of `model` into `directory` (for runtimes that start from ONNX)."""
    start = time.perf_counter()
    path = export_onnx(model, Path(directory) / "model.onnx", size=TRACE_SIZE, dynamic=True, metadata=metadata)
    logger.info("exported %s to ONNX in %.1f s", type(model).__name__, time.perf_counter() - start)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an `.onnx` file (OpenVINO does not carry them into its model)."""
    onnx = require("onnx", "onnx")
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _session(path: str | Path, threads: int | None):
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_model(source: str | Path | nn.Module, *, threads: int | None = None) -> RuntimeModel:
    """onnxruntime (CPU) on an `.onnx` file, or on our export of a PyTorch model (its config is kept)."""
    if isinstance(source, nn.Module):
        with tempfile.TemporaryDirectory() as tmp:
            session = _session(export_temporary(source, tmp), threads)
        config, processor, name = model_config(source), None, type(source).__name__
    else:
        if not Path(source).is_file():
            raise FileNotFoundError(f"ONNX model {source}: no such file")
        session = _session(source, threads)
        config, processor = config_from_metadata(session.get_modelmeta().custom_metadata_map, str(source))
        name = str(source)

    def infer(x):
        return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    return RuntimeModel(infer, "onnxruntime", config, processor, f"onnxruntime on {name}")
