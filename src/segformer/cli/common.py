"""Argument groups, parsers and helpers that several subcommands share (model, runtime, dtype, token merging,
inference window and test-time augmentation, input resize, a JSON output)."""

from __future__ import annotations

import contextlib
import io
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..utils.dtypes import DTYPE_NAMES

EXPORTED_HELP = "hub id, zoo preset, HF directory, checkpoint file, or an exported .onnx / OpenVINO .xml"
RANDOM_HELP = "zoo name (random weights), hub id, HF directory or checkpoint"


def parse_hw(values: list[int] | None, name: str) -> tuple[int, int] | None:
    """One int (square) or two (h w) from the command line."""
    if values is None:
        return None
    if len(values) not in (1, 2) or min(values) < 1:
        raise ValueError(f"{name} takes one or two positive ints (H W), got {values}")
    return (values[0], values[-1])


def add_model_args(p, help: str = EXPORTED_HELP, *, device_help: str = "cpu, cuda, cuda:1, ...",
                   dtype_help: str = "autocast dtype", token_merging: bool = True) -> None:
    """--model, --device, --dtype and (unless off) --token-merging."""
    p.add_argument("--model", required=True, help=help)
    p.add_argument("--device", help=f"{device_help} (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help=dtype_help)
    if token_merging:
        p.add_argument("--token-merging", help="SegFormer++ strategy: hq, fast, 2x2, downsample, or a YAML file")


def add_window_args(p, crop_extra: str = "") -> None:
    """--mode, --crop, --stride: whole-image or sliding-window inference."""
    p.add_argument("--mode", choices=["whole", "slide"],
                   help="inference mode (default: the model's recorded test pipeline, else whole)")
    p.add_argument("--crop", type=int, nargs="+", metavar="N",
                   help=f"slide window: H W, or one int (default: the recorded one, else 512){crop_extra}")
    p.add_argument("--stride", type=int, nargs="+", metavar="N",
                   help="slide stride: H W, or one int (default: the recorded one, else 2/3 of --crop)")


def add_tta_args(p, scales_default: list[float] | None = None) -> None:
    """--scales and --flip: test-time augmentation."""
    p.add_argument("--scales", type=float, nargs="+", default=scales_default,
                   help="multi-scale test ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped runs (test-time augmentation)")


def add_json_args(p, what: str, also: str = "") -> None:
    """--json OUT and --overwrite."""
    p.add_argument("--json", metavar="OUT", help=f"write {what} to this JSON file")
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing --json{also} file")


def json_out(args) -> Path | None:
    """The --json path, refused before any work when it exists without --overwrite."""
    out = Path(args.json) if args.json else None
    if out is not None and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    return out


def device_of(args) -> str:
    """--device, else cuda when there is one, else cpu."""
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def launch_place() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun launched it; (0, 1) outside torchrun."""
    from ..utils.distributed import launch_env

    rank, world, _ = launch_env()
    return rank, world


def process_device(device: str, world: int) -> str:
    """`device`, with one GPU per process when torchrun started several on "cuda"."""
    from ..utils.distributed import launch_env

    return f"cuda:{launch_env()[2]}" if device == "cuda" and world > 1 else device


@contextlib.contextmanager
def process_group(world: int) -> Iterator[None]:
    """A gloo process group for the CLI's file jobs when torchrun started several processes (joined in step)."""
    import torch.distributed as dist

    if world > 1:
        dist.init_process_group("gloo")
        dist.barrier()
    try:
        yield
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def sum_over_processes(values: list[int], world: int) -> list[int]:
    """`values` summed over the processes of the group (itself with one process)."""
    import torch
    import torch.distributed as dist

    counts = torch.tensor(values)
    if world > 1:
        dist.all_reduce(counts)
    return [int(v) for v in counts]


def save_png(picture, path) -> None:
    """Write a PIL image or an integer array (8-bit, or 16-bit grey) as PNG, atomically (temp file + rename)."""
    from PIL import Image

    from ..utils.io import atomic_write

    picture = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def add_resize_args(p) -> None:
    """The input resize flags of `predict` and `serve`."""
    p.add_argument("--resize", choices=["fixed", "keep-ratio", "none"],
                   help="fixed: --size, aspect ignored (HF); keep-ratio: into --scale (mmseg); none. Default: the "
                        "model's recorded test pipeline (a trained model), else fixed in whole mode, none in slide")
    p.add_argument("--size", type=int, nargs="+", metavar="N", help="--resize fixed: H W, or one int (default 512)")
    p.add_argument("--scale", type=int, nargs=2, metavar=("LONG", "SHORT"), default=[2048, 512],
                   help="--resize keep-ratio bound (default 2048 512)")
    p.add_argument("--size-divisor", type=int, metavar="N",
                   help="then round each side up to a multiple of N (mmseg ResizeToMultiple, e.g. 32)")


def processor_from_args(args):
    """The `ImageProcessor` the resize flags ask for (--size or --size-divisor alone: fixed, as before); None (the
    model's recorded test pipeline) without any of them."""
    from ..preprocess import ImageProcessor

    if args.resize is None and args.size is None and args.size_divisor is None:
        return None
    if args.resize == "keep-ratio":
        return ImageProcessor.mmseg(tuple(args.scale), size_divisor=args.size_divisor)
    size = (parse_hw(args.size, "--size") or (512, 512)) if args.resize in ("fixed", None) else None
    return ImageProcessor(size=size, size_divisor=args.size_divisor)


def parse_size(text: str, name: str) -> tuple[int, int]:
    """"HxW" or "N" (square) from the command line."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError(f"{name} takes HxW or one positive int (e.g. 512x1024 or 512), got {text!r}")
    return parts[0], parts[-1]


def load_for_bench(spec: str, token_merging: str | None):
    """A zoo name (random weights) or any `load_model` source, with token merging applied if asked."""
    from .. import create_model, list_models, load_model
    from ..models import SegFormer

    model = create_model(spec) if spec in list_models() else load_model(spec)
    if token_merging is not None and not isinstance(model, SegFormer):
        raise ValueError(f"--token-merging: model {spec} ({type(model).__name__}) has no token merging")
    return model


class PlainLines(io.TextIOBase):
    """A text stream for logs: progress-bar redraws ("\\r" + status) become one plain line at most every
    `interval` seconds (and the last status before any other output or the bar's close); other text passes."""

    def __init__(self, stream, interval: float = 30.0):
        self.stream, self.interval = stream, interval
        self.pending: str | None = None
        self.last, self.at_line_start = -math.inf, True

    def _line(self, text: str) -> None:
        self.stream.write(("" if self.at_line_start else "\n") + text + "\n")
        self.at_line_start = True

    def _flush_pending(self) -> None:
        if self.pending is not None:
            self._line(self.pending)
            self.pending, self.last = None, time.monotonic()

    def write(self, text: str) -> int:
        if "\r" in text:
            head, *statuses = [part.rstrip() for part in text.split("\r")]
            if head.strip():
                self._line(head)
            statuses = [part for part in statuses if part.strip()]
            if statuses:
                self.pending = statuses[-1]
            if time.monotonic() - self.last >= self.interval:
                self._flush_pending()
            return len(text)
        if not text:
            return 0
        self._flush_pending()
        if not (text == "\n" and self.at_line_start):
            self.stream.write(text)
            self.at_line_start = text.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextlib.contextmanager
def plain_progress_lines(seconds: float = 30.0) -> Iterator[None]:
    """When stderr is not a terminal, progress bars write a plain line at most every `seconds` instead of
    carriage-return redraws that fill log files."""
    if sys.stderr.isatty() or isinstance(sys.stderr, PlainLines):
        yield
        return
    saved = sys.stderr
    sys.stderr = PlainLines(saved, seconds)
    try:
        yield
    finally:
        sys.stderr._flush_pending()
        sys.stderr = saved
