"""Pick the runtime for a model: the one asked for, or with `runtime="auto"` the fastest exact one here.

"auto" runs on the CPU in float32 only. It converts the model to OpenVINO (when installed), checks that
the logits agree with PyTorch (max abs diff <= 1e-4 on the probe input), times both, interleaved, at the
input size the caller will use, and keeps the faster. The verdict is cached per architecture, size and
machine (`probe.py`), so later runs skip the timing; the converted model is cached too, per weights.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch
from torch import nn

from ..models.base import SegmentationModel, input_channels
from .base import RUNTIMES, check_runtime
from .probe import cached, probe_key, store, time_interleaved

logger = logging.getLogger(__name__)
EXACT_TOLERANCE = 1e-4
# Bumped when what "openvino" runs changes (2: static-shape compiles), so older cached verdicts are probed again.
GRAPH_VERSION = 2
Measure = Callable[[dict[str, Callable[[], object]]], dict[str, float]]


@dataclasses.dataclass
class Choice:
    """Which runtime runs the model, and why (`seconds`: the probe's medians when one ran or was cached)."""

    runtime: str
    reason: str
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    cached: bool = False

    def describe(self) -> str:
        timing = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in self.seconds.items())
        source = " (cached probe)" if self.cached else ""
        return f"runtime {self.runtime}: {self.reason}" + (f" [{timing}{source}]" if timing else "")


def build_runner(model: nn.Module, runtime: str, dtype: str = "float32",
                 size: tuple[int, int] | None = None) -> nn.Module:
    """`model` itself for "torch", else our export of it compiled by that runtime (float32; OpenVINO also
    bfloat16). `size`: the (H, W) the caller will run, which OpenVINO compiles a static-shape graph for."""
    check_runtime(runtime)
    if runtime == "torch":
        return model
    if runtime == "onnxruntime":
        if dtype != "float32":
            raise ValueError(f"onnxruntime runs our export in float32 only, not {dtype}; use --runtime torch or "
                             f"openvino for bfloat16")
        from .onnx import onnxruntime_model

        return onnxruntime_model(model)
    from .openvino import openvino_model

    static = [(1, input_channels(model), *size)] if size is not None else []
    return openvino_model(model, precision=dtype, static_shapes=static)


def _auto_blocker(model: nn.Module, device: str, dtype: str) -> str | None:
    """Why "auto" must stay with PyTorch, or None."""
    if torch.device(device).type != "cpu":
        return f"auto on {device}: PyTorch is the only GPU runtime here"
    if dtype != "float32":
        return f"auto in {dtype}: the probe compares exact float32 paths only"
    if not isinstance(model, SegmentationModel) or model.token_merging is not None:
        return "auto: only plain SegFormer/SETR models are exported"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "auto: OpenVINO is not installed (pip install 'segformer[openvino]')"
    return None


def _probe(model: nn.Module, runner: nn.Module, size: tuple[int, int], measure: Measure) -> tuple[dict, float]:
    x = torch.randn(1, input_channels(model), *size, generator=torch.Generator().manual_seed(0))
    model.eval()

    def ours():
        with torch.inference_mode():
            return model(x)

    with torch.inference_mode():
        got, want = runner(x), model(x)
    diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    return measure({"torch": ours, "openvino": lambda: runner(x)}), diff


def select_runtime(model: nn.Module, size: tuple[int, int], *, runtime: str = "auto", device: str = "cpu",
                   dtype: str = "float32", measure: Measure = time_interleaved) -> tuple[nn.Module, Choice]:
    """(the module to run, the choice). `size`: the (H, W) of one forward pass (the resized image, or the
    slide window). `measure` times the candidates (injected by tests)."""
    if runtime != "auto":
        check_runtime(runtime)
        return build_runner(model, runtime, dtype, size), Choice(runtime, "asked for")
    blocker = _auto_blocker(model, device, dtype)
    if blocker is not None:
        return model, Choice("torch", blocker)
    import openvino

    key = probe_key("runtime", model, size, openvino=openvino.__version__, graph=GRAPH_VERSION)
    hit = cached(key)
    if hit is not None and hit.get("runtime") in RUNTIMES:
        choice = Choice(hit["runtime"], hit.get("reason", ""), hit.get("seconds", {}), cached=True)
        return (build_runner(model, choice.runtime, size=size) if choice.runtime != "torch" else model), choice
    runner = build_runner(model, "openvino", size=size)
    seconds, diff = _probe(model, runner, size, measure)
    if diff > EXACT_TOLERANCE:
        choice = Choice("torch", f"auto: OpenVINO differs from PyTorch by {diff:.1e} > {EXACT_TOLERANCE}", seconds)
    else:
        best = min(seconds, key=seconds.get)
        choice = Choice(best, f"auto: fastest at {size[0]}x{size[1]}", seconds)
    store(key, dataclasses.asdict(choice) | {"cached": True})
    logger.info(choice.describe())
    return (runner if choice.runtime == "openvino" else model), choice
