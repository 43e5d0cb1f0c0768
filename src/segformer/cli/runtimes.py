"""`--runtime` for predict, eval, bench and serve: load a model or an exported file and pick what runs it."""

from __future__ import annotations

import argparse
import os
import sys

RUNTIME_ENV = "SEGFORMER_RUNTIME"
CHOICES = ["auto", "torch", "onnxruntime", "openvino"]


def add_runtime_arg(p: argparse.ArgumentParser) -> None:
    default = os.environ.get(RUNTIME_ENV, "auto")
    p.add_argument("--runtime", choices=CHOICES, default=default if default in CHOICES else "auto",
                   help="what runs the model on the CPU: auto (default; OpenVINO when installed and faster here for "
                        "this model and input size, by a short timed probe cached in ~/.cache/segformer; else "
                        "PyTorch), torch, onnxruntime or openvino (our ONNX export converted on the fly). "
                        f"An exported .onnx or .xml --model needs no conversion. Default from ${RUNTIME_ENV}.")


def forward_size(processor, mode: str, crop: tuple[int, int] | None, first_image) -> tuple[int, int]:
    """The (H, W) of one forward pass: the slide window, or the first image after the processor's resize."""
    if mode == "slide" and crop is not None:
        return crop
    if processor.size is not None and processor.size_divisor is None:
        return tuple(processor.size)
    from PIL import Image

    with Image.open(first_image) as image:  # reads the header only
        width, height = image.size
    return processor.resize_steps(height, width)[-1]


def choose_runtime(model, runtime: str, *, device: str, dtype: str, size: tuple[int, int]):
    """(module to run, autocast dtype) for a model from `load_source`, the choice printed."""
    from ..runtimes.loading import prepare_runner

    runner, dtype, choice = prepare_runner(model, runtime, device=device, dtype=dtype, size=size)
    print(choice, file=sys.stderr)
    return runner, dtype
