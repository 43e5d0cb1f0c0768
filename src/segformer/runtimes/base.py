"""One interface for every runtime: a compiled graph wrapped as a `torch.nn.Module` whose forward maps
normalised `pixel_values` (B, 3, H, W) to logits, exactly as our PyTorch models do. `inference.predict`,
`evaluation.evaluate` and a server can therefore take a runner wherever they take a model.

Exported files carry their metadata (strings): the model config (so class count and names come back),
the class names alone (for other tools) and the test pipeline (resize and normalisation).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..models.base import config_from_dict, model_config
from ..preprocess import ImageProcessor
from ..protocol import predict_processor

RUNTIMES = ("torch", "onnxruntime", "openvino")
META_CONFIG, META_CLASSES, META_PIPELINE = "segformer_config", "class_names", "test_pipeline"
_PIPELINE_FIELDS = ("size", "keep_ratio_scale", "size_divisor", "backend", "rescale_factor", "mean", "std")


class RuntimeModel(nn.Module):
    """A model run by another runtime (`runtime`: "onnxruntime" or "openvino") behind the module interface.

    `infer` takes a float32 (B, 3, H, W) array and returns float32 logits (B, K, h, w). There are no
    parameters; outputs come back on the input's device. `config` is the exported model's config (or None).
    """

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], runtime: str, config=None,
                 processor: ImageProcessor | None = None, description: str = ""):
        super().__init__()
        self._infer, self.runtime, self.config, self.processor = infer, runtime, config, processor
        self.description = description or runtime

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(pixel_values.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(np.asarray(self._infer(x))).to(pixel_values.device)

    def extra_repr(self) -> str:
        return self.description


def runtime_of(model: nn.Module) -> str:
    """"torch" for a PyTorch model, else the runtime that runs the wrapped graph."""
    return getattr(model, "runtime", "torch") if isinstance(model, RuntimeModel) else "torch"


def metadata(model: nn.Module, processor: ImageProcessor | None = None) -> dict[str, str]:
    """The strings stored in an exported file: config (with the recorded `test_pipeline`: mode and window),
    class names and the input pipeline (`segformer.predict`'s default for the model unless `processor` says
    otherwise: the recorded keep-ratio resize of a trained model, else HF's fixed 512 x 512; normalisation)."""
    processor = predict_processor(model, "whole") if processor is None else processor
    config = model_config(model)
    pipeline = {k: getattr(processor, k) for k in _PIPELINE_FIELDS}
    out = {META_PIPELINE: json.dumps(pipeline)}
    if config is not None:
        out[META_CONFIG] = json.dumps(config.to_dict())
        out[META_CLASSES] = json.dumps(config.class_names)
    return out


def config_from_metadata(meta: dict[str, str], source: str):
    """The config and test pipeline stored by `metadata` (None for either that is absent)."""
    config = processor = None
    try:
        if META_CONFIG in meta:
            config = config_from_dict(json.loads(meta[META_CONFIG]))
        if META_PIPELINE in meta:
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(meta[META_PIPELINE]).items()}
            names = {f.name for f in dataclasses.fields(ImageProcessor)}
            processor = ImageProcessor(**{k: v for k, v in fields.items() if k in names})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: unreadable segformer metadata ({exc}); re-export the model") from exc
    return config, processor


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; accepted: {', '.join(RUNTIMES)}")
