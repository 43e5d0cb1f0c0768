"""OpenVINO (optional `.[openvino]` extra): IR export (xml + bin, dynamic H and W, our metadata in its
rt_info), an exact float32 runner, and int8 post-training quantization of the encoder's linear layers
with NNCF (`export_openvino(..., calibration=...)`).

The IR is converted from our ONNX export: on this project's machine OpenVINO ran that graph 1.2x faster
than our eager PyTorch (B0 at 512 x 512, 2 threads: 4.60x vs 3.84x HF's eager float32), and faster than
`ov.convert_model` on the module. Compilation
asks for f32 inference precision explicitly: on CPUs with native bf16 (AVX512_BF16, AMX) OpenVINO
otherwise runs in bf16 by default, which is not the model's function.

The runner compiles a static-shape copy of the graph for the input shapes it runs repeatedly (`ShapeCompiler`):
OpenVINO's CPU plugin merges a Transpose into the layout Reorder beside it only in static graphs, and our
(B, N, C) tokens meet every convolution through such a pair (B0 1024x2048: 1.3 s of 5.5 s in copies).
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..export import INPUT_NAME
from ..models.base import model_config
from ..utils.io import atomic_files, check_free
from .base import RuntimeModel, config_from_metadata, metadata
from .onnx import export_temporary, read_metadata, require
from .probe import cache_dir, weights_key

logger = logging.getLogger(__name__)
RT_SECTION = "segformer"  # rt_info["segformer"][key] holds each metadata string
PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
# The decoder (and the classifier) stay float32 under int8: only the encoder's MatMuls are quantized.
INT8_IGNORED = {"patterns": [".*decode_head.*"], "types": ["Convolution", "GroupConvolution"]}
MAX_STATIC_SHAPES = 4  # static compiles kept per runner (each holds its own activation memory)
MAX_STATIC_COMPILES = 8  # static compiles per runner in all: a stream of many sizes then runs the dynamic graph


def _ov():
    return require("openvino", "openvino")


@functools.cache
def _core():
    """One `ov.Core` per process, as OpenVINO advises: a model read through a Core that is then destroyed can
    outlive the frontend library that made it, and cloning it for a static-shape compile later crashed
    (segfault) in a long-lived process."""
    return _ov().Core()


def convert(model: nn.Module, meta: dict[str, str] | None = None):
    """An `ov.Model` of our dynamic ONNX export of `model`, with `meta` in its rt_info."""
    ov = _ov()
    with tempfile.TemporaryDirectory() as tmp:
        ov_model = ov.convert_model(str(export_temporary(model, tmp)))
    for key, value in (meta or {}).items():
        ov_model.set_rt_info(value, [RT_SECTION, key])
    return ov_model


def convert_cached(model: nn.Module):
    """`convert(model)`, kept as IR in the cache folder (`probe.cache_dir()/openvino/`) under a digest of the
    weights, so that a later run reads it back in a fraction of a second instead of exporting again."""
    root = cache_dir()
    if root is None:
        return convert(model)
    path = root / "openvino" / f"{weights_key(model)}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        return _core().read_model(str(path))
    ov_model = convert(model)
    try:
        _save(ov_model, path)
    except OSError as exc:
        logger.warning("could not cache the OpenVINO model in %s: %s", path.parent, exc)
    return ov_model


def _save(ov_model, path: Path, overwrite: bool = True) -> None:
    """NAME.xml + NAME.bin, float32 weights, written atomically (`utils.io.atomic_files`), the bin first: the
    xml finds NAME.bin by its own name, so a reader that sees the xml sees its complete weights."""
    def fill(tmp: Path) -> None:
        _ov().save_model(ov_model, str(tmp / path.name), compress_to_fp16=False)

    atomic_files([path.with_suffix(".bin"), path], fill, overwrite)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def compile_model(ov_model, *, precision: str = "float32", threads: int | None = None):
    """Compile for the CPU at `precision` ("float32": exact; "bfloat16"), latency mode, torch's thread count."""
    _check_precision(precision)
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
    return _core().compile_model(ov_model, "CPU", config)


class ShapeCompiler:
    """Runs an `ov.Model` with dynamic input shape, compiled per shape: a shape gets a static-shape compile
    (faster: see the module docstring) when declared up front (`static_shapes`: the size the caller will run)
    or when it comes the second time (a stream of one size); a shape seen once runs on one dynamic compile, so
    a folder of images of many sizes does not pay a compile per image. At most MAX_STATIC_SHAPES static
    compiles are kept (the least recently used is dropped) and MAX_STATIC_COMPILES made, so sizes that come
    and go cannot make it compile without end. Calls are serialised (an infer request runs one
    input at a time), so threads may share a runner."""

    def __init__(self, ov_model, *, precision: str = "float32", threads: int | None = None,
                 static_shapes: Iterable[tuple[int, ...]] = ()):
        _check_precision(precision)
        self.ov_model, self.options = ov_model, {"precision": precision, "threads": threads}
        self.static: OrderedDict[tuple[int, ...], tuple] = OrderedDict()
        self.seen: set[tuple[int, ...]] = set()
        self.dynamic, self.compiles = None, 0
        self.lock = threading.Lock()
        for shape in static_shapes:
            self._compile_static(tuple(shape))

    def _compile(self, ov_model) -> tuple:
        compiled = compile_model(ov_model, **self.options)
        return compiled.create_infer_request(), compiled.output(0)

    def _compile_static(self, shape: tuple[int, ...]) -> tuple:
        ov_model = self.ov_model.clone()
        ov_model.reshape({INPUT_NAME: list(shape)})
        self.static[shape] = self._compile(ov_model)
        self.compiles += 1
        while len(self.static) > MAX_STATIC_SHAPES:
            self.static.popitem(last=False)
        return self.static[shape]

    def request(self, shape: tuple[int, ...]) -> tuple:
        """(infer request, output) that runs inputs of `shape`."""
        if shape in self.static:
            self.static.move_to_end(shape)
            return self.static[shape]
        if shape in self.seen and self.compiles < MAX_STATIC_COMPILES:
            return self._compile_static(shape)
        self.seen.add(shape)
        if self.dynamic is None:
            self.dynamic = self._compile(self.ov_model)
        return self.dynamic

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            request, output = self.request(tuple(x.shape))
            return request.infer({INPUT_NAME: x}, share_inputs=True)[output].copy()


def _read_meta(ov_model) -> dict[str, str]:
    if not ov_model.has_rt_info([RT_SECTION]):
        return {}
    section = ov_model.get_rt_info()[RT_SECTION]
    return {str(k): str(v.astype(str)) if hasattr(v, "astype") else str(v) for k, v in dict(section).items()}


def openvino_model(source: str | Path | nn.Module, *, precision: str = "float32", threads: int | None = None,
                   static_shapes: Iterable[tuple[int, ...]] = ()) -> RuntimeModel:
    """OpenVINO (CPU) on an IR `.xml` file (or an `.onnx` file), or on our export of a PyTorch model (cached
    per weights, see `convert_cached`). `static_shapes`: input shapes (B, C, H, W) to compile for up front."""
    if isinstance(source, nn.Module):
        ov_model, name = convert_cached(source), type(source).__name__
        config, processor = model_config(source), None
    else:
        if not Path(source).is_file():
            raise FileNotFoundError(f"OpenVINO model {source}: no such file")
        ov_model, name = _core().read_model(str(source)), str(source)
        meta = read_metadata(source) if Path(source).suffix.lower() == ".onnx" else _read_meta(ov_model)
        config, processor = config_from_metadata(meta, name)
    infer = ShapeCompiler(ov_model, precision=precision, threads=threads, static_shapes=static_shapes)
    return RuntimeModel(infer, "openvino", config, processor, f"openvino {PRECISIONS[precision]} on {name}")


def quantize_int8(ov_model, samples: Iterable[np.ndarray], subset_size: int = 300):
    """NNCF post-training static quantization (int8) of the encoder's MatMuls, calibrated on `samples`
    (normalised float32 (1, 3, H, W) arrays); convolutions and the decoder stay float32."""
    nncf = require("nncf", "openvino")
    dataset = nncf.Dataset(list(samples), lambda x: {INPUT_NAME: x})
    return nncf.quantize(ov_model, dataset, subset_size=subset_size, model_type=nncf.ModelType.TRANSFORMER,
                         ignored_scope=nncf.IgnoredScope(**INT8_IGNORED, validate=False))


def export_openvino(model: nn.Module, path: str | Path, *, processor=None, calibration: Iterable[np.ndarray] = None,
                    subset_size: int = 300, overwrite: bool = False) -> Path:
    """Write `model` as OpenVINO IR (`path` = NAME.xml, plus NAME.bin beside it), dynamic batch, H and W,
    float32 weights, with config, class names and test pipeline (`processor`) in its rt_info.
    With `calibration` (normalised images), the encoder's linear layers are quantized to int8 first."""
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"OpenVINO IR goes to a .xml file (weights beside it in .bin), got {path}")
    for target in (path, path.with_suffix(".bin")):  # before the (slow) conversion
        check_free(target, overwrite)
    meta = metadata(model, processor)
    ov_model = convert(model.eval().float().cpu(), meta)
    if calibration is not None:
        ov_model = quantize_int8(ov_model, calibration, subset_size)
        ov_model.set_rt_info("int8", [RT_SECTION, "quantization"])
    _save(ov_model, path, overwrite)
    return path
