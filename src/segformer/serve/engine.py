"""What the server does with one request, without any web framework: options, decoding under limits,
segmentation through `segformer.predict` (with the forward passes batched), and the three answer formats."""

from __future__ import annotations

import dataclasses
import io
import json
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from importlib import resources

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..data.palettes import get_class_names, get_palette
from ..inference import check_options, predict, run_model
from ..models.base import model_config as config_of
from ..preprocess import ImageProcessor, to_rgb_array
from ..protocol import DEFAULT_CROP, default_stride, predict_processor, recorded_pipeline, resolve_window
from ..runtimes import RUNTIMES, runtime_of
from ..runtimes.loading import load_source, prepare_runner
from ..visualize import overlay
from .batcher import BatchedModel, DynamicBatcher

FORMATS = {"png": "image/png", "json": "application/json", "overlay": "image/jpeg"}
MAX_SCALES = 8
EXAMPLE = "chelsea.jpg"


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


@dataclass
class ServeConfig:
    """`segformer serve` settings (the command's flags)."""

    model: str
    token_merging: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    runtime: str = "auto"  # auto, torch, onnxruntime or openvino: what runs the forward passes (see runtimes/)
    processor: ImageProcessor | None = None  # None: the model's recorded test pipeline (segformer.predict's default)
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_pixels: int = 50_000_000
    max_body_bytes: int = 32 * 2**20

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_pixels", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.runtime not in ("auto", *RUNTIMES):
            raise ValueError(f"unknown runtime {self.runtime!r}; accepted: auto, {', '.join(RUNTIMES)}")
        check_options(dtype=self.dtype, batch_size=self.max_batch)


@dataclass
class SegmentOptions:
    """Query options of `POST /v1/segment`; the same semantics as `segformer predict`."""

    format: str = "png"
    mode: str | None = None  # None, crop, stride: the model's recorded test pipeline, else whole, 512, 2/3 crop
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    rle: bool = False
    opacity: float = 0.5


def _ints(text: str, name: str) -> tuple[int, int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise RequestError(400, f"{name} takes one or two positive ints (e.g. {name}=512 or {name}=512,768), "
                                f"got {text!r}")
    return values[0], values[-1]


def query_flag(text: str, name: str) -> bool:
    if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise RequestError(400, f"{name} takes true or false, got {text!r}")
    return text.lower() in ("1", "true", "yes")


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise RequestError(400, f"{name} takes a number, got {text!r}") from None


def parse_options(query: Mapping[str, str]) -> SegmentOptions:
    """SegmentOptions from query parameters; a RequestError(400) names the first bad or unknown one."""
    known = {f.name for f in dataclasses.fields(SegmentOptions)}
    unknown = sorted(set(query) - known)
    if unknown:
        raise RequestError(400, f"unknown query parameter(s) {unknown}; accepted: {', '.join(sorted(known))}")
    opts = SegmentOptions(format=query.get("format", "png"), mode=query.get("mode"))
    if opts.format not in FORMATS:
        raise RequestError(400, f"format={opts.format!r} is not offered; accepted: {', '.join(FORMATS)}")
    if "crop" in query:
        opts.crop = _ints(query["crop"], "crop")
    if "stride" in query:
        opts.stride = _ints(query["stride"], "stride")
    if "scales" in query:
        opts.scales = tuple(_number(v, "scales") for v in query["scales"].split(","))
        if len(opts.scales) > MAX_SCALES or not all(0 < s <= 4 for s in opts.scales):
            raise RequestError(400, f"scales takes 1 to {MAX_SCALES} numbers in (0, 4], got {query['scales']!r}")
    opts.flip = query_flag(query["flip"], "flip") if "flip" in query else False
    opts.rle = query_flag(query["rle"], "rle") if "rle" in query else False
    if "opacity" in query:
        opts.opacity = _number(query["opacity"], "opacity")
        if not 0.0 <= opts.opacity <= 1.0:
            raise RequestError(400, f"opacity must be in [0, 1], got {query['opacity']!r}")
    try:
        window = opts.crop or DEFAULT_CROP
        check_options(mode=opts.mode or "whole", crop_size=window, stride=opts.stride or default_stride(window),
                      scales=opts.scales)
    except ValueError as exc:
        raise RequestError(400, str(exc)) from None
    return opts


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an encoded image, as `segformer predict` reads files (EXIF orientation applied).
    The pixel count is read from the header and checked before anything is decoded."""
    if not data:
        raise RequestError(400, "empty body: send the image as the raw request body or as a multipart file field")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise RequestError(413, f"image has more than {2 * Image.MAX_IMAGE_PIXELS} pixels (Pillow's decompression "
                                f"bomb limit); this server accepts at most {max_pixels} (--max-pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise RequestError(400, f"the body ({len(data)} bytes, starting {data[:8]!r}) is not an image Pillow can "
                                f"read (PNG, JPEG, WebP, BMP, TIFF...)") from None
    width, height = image.size
    if width * height > max_pixels:
        raise RequestError(413, f"image is {width}x{height} = {width * height} pixels; this server accepts at most "
                                f"{max_pixels} (--max-pixels)")
    try:
        image.load()
        return to_rgb_array(ImageOps.exif_transpose(image))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise RequestError(400, f"corrupt {image.format} image: {exc}") from None


def rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a boolean (H, W) mask: run lengths in column-major order, zeros first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]]))
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])
    return {"size": list(mask.shape), "counts": counts.tolist()}


def encode_png(labels: np.ndarray) -> bytes:
    """The label map as `segformer predict` writes it (8-bit, or 16-bit grey above 256 classes)."""
    buf = io.BytesIO()
    Image.fromarray(labels).save(buf, format="PNG")
    return buf.getvalue()


class Segmenter:
    """The loaded model and everything the server needs to answer segmentation requests."""

    def __init__(self, config: ServeConfig, on_batch=None):
        self.config = config
        model = load_source(config.model, config.runtime, device=config.device, dtype=config.dtype,
                            token_merging=config.token_merging)
        model_config = config_of(model)
        self.task = model_config.task if model_config is not None else None
        if self.task not in ("segmentation", "pose"):
            raise ValueError(f"model {config.model} has no segmentation or pose head "
                             f"(task: {self.task or 'encoder'})")
        if model_config.num_classes > 65536:
            raise ValueError(f"model {config.model} has {model_config.num_classes} classes; PNG label maps hold at "
                             f"most 65536")
        self.model, self.model_config = model, model_config
        self.num_classes = model_config.num_classes
        self.palette = get_palette(self.num_classes)
        self.class_names = list(model_config.class_names or get_class_names(self.num_classes))
        self.runner, self.dtype, self.runtime_choice = self._runner()
        self.batcher = DynamicBatcher(self.runner, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                                      dtype=self.dtype, on_batch=on_batch).start()
        self.batched = BatchedModel(self.model, self.batcher).eval()

    def _runner(self):
        """(module that runs the forward passes, autocast dtype, the runtime choice in words): --runtime, probed
        at the forward size of the bundled example ("auto"); pose models run on PyTorch."""
        cfg = self.config
        if self.task == "pose":
            if cfg.runtime not in ("auto", "torch") or runtime_of(self.model) != "torch":
                raise ValueError(f"model {cfg.model} is a pose model: it runs on PyTorch only (--runtime torch)")
            return self.model, cfg.dtype, "runtime torch: pose models run on PyTorch"
        height, width = decode_image(example_bytes(), cfg.max_pixels).shape[:2]
        size = self.processor("whole").resize_steps(height, width)[-1]
        return prepare_runner(self.model, cfg.runtime, device=cfg.device, dtype=cfg.dtype, size=size)

    def close(self) -> None:
        self.batcher.stop()

    def processor(self, mode: str) -> ImageProcessor:
        """The --resize flags' processor, else the model's recorded test pipeline (segformer.predict's default)."""
        return self.config.processor or predict_processor(self.model, mode)

    def warm_up(self, pool: Executor | None = None, concurrency: int = 1) -> None:
        """A forward pass on a full batch of the bundled example, then `concurrency` requests at once (in `pool`,
        one per thread), so that the first users do not pay for lazy initialisation and each thread reaches its
        working-set memory before the server is ready (with freed memory retained, RSS then stays flatter)."""
        rgb = decode_image(example_bytes(), self.config.max_pixels)
        x = self.processor("whole")([rgb] * self.config.max_batch)["pixel_values"].to(self.config.device)
        run_model(self.runner, x, self.dtype)
        work, opts = (self.segment, SegmentOptions()) if self.task == "segmentation" else (self.keypoints, None)
        requests = [(pool.submit if pool else _now)(work, example_bytes(), opts)
                    for _ in range(concurrency if pool else 1)]
        for request in requests:
            request.result()

    def labels(self, rgb: np.ndarray, opts: SegmentOptions) -> np.ndarray:
        mode, crop, stride = resolve_window(self.model, opts.mode, opts.crop, opts.stride)
        processor = self.processor(mode)
        return predict(self.batched, rgb, mode=mode, processor=processor, crop_size=crop, stride=stride,
                       scales=opts.scales, flip=opts.flip, dtype=self.dtype,
                       max_pixels=self.config.max_pixels)  # the server's own limit, already checked

    def segment(self, data: bytes, opts: SegmentOptions) -> tuple[bytes, str, float]:
        """(body, media type, seconds spent) of the answer to one request."""
        start = time.perf_counter()
        if self.task != "segmentation":
            raise RequestError(400, f"model {self.config.model} is a {self.task} model: POST the image to "
                                    f"/v1/keypoints (optionally ?boxes=x1,y1,x2,y2;...)")
        rgb = decode_image(data, self.config.max_pixels)
        labels = self.labels(rgb, opts)
        if opts.format == "png":
            return encode_png(labels), FORMATS["png"], time.perf_counter() - start
        if opts.format == "overlay":
            buf = io.BytesIO()
            picture = Image.fromarray(overlay(rgb, labels, self.palette, opts.opacity))
            picture.save(buf, format="JPEG", quality=90, subsampling=0)  # 4:4:4: label edges stay sharp
            return buf.getvalue(), FORMATS["overlay"], time.perf_counter() - start
        summary = self.summary(labels, opts.rle)
        summary["latency_ms"] = round(1000 * (time.perf_counter() - start), 2)
        return json.dumps(summary).encode(), FORMATS["json"], time.perf_counter() - start

    def keypoints(self, data: bytes, opts=None) -> tuple[bytes, str, float]:
        """(JSON body, media type, seconds spent) of a pose model's answer: keypoints of the people in the boxes."""
        from ..pose_inference import predict_keypoints
        from .pose import PoseOptions, meta_for, people_json

        start, opts = time.perf_counter(), opts or PoseOptions()
        if self.task != "pose":
            raise RequestError(400, f"model {self.config.model} is a {self.task} model: POST the image to "
                                    f"/v1/segment")
        rgb = decode_image(data, self.config.max_pixels)
        meta = meta_for(self.model_config.class_names)
        points, scores = predict_keypoints(self.batched, rgb, opts.boxes, meta=meta, flip_test=opts.flip)
        answer = {"height": rgb.shape[0], "width": rgb.shape[1], "names": list(meta.names),
                  "people": people_json(points, scores, opts.boxes, rgb.shape),
                  "latency_ms": round(1000 * (time.perf_counter() - start), 2)}
        return json.dumps(answer).encode(), FORMATS["json"], time.perf_counter() - start

    def summary(self, labels: np.ndarray, with_masks: bool = False) -> dict:
        """Per-class pixel areas (largest first) and, if asked, each present class's RLE mask."""
        counts = np.bincount(labels.ravel(), minlength=self.num_classes)
        present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
        classes = [{"id": c, "name": self.class_names[c], "color": [int(v) for v in self.palette[c]],
                    "pixels": int(counts[c]), "share": float(counts[c] / labels.size)} for c in present]
        out = {"height": int(labels.shape[0]), "width": int(labels.shape[1]), "classes": classes}
        if with_masks:
            out["masks"] = {str(c): rle(labels == c) for c in present}
        return out

    def describe(self) -> dict:
        """`GET /v1/model`: what is served and how inputs are treated."""
        cfg, mc = self.config, self.model_config
        return {
            "source": str(cfg.model), "name": mc.name, "architecture": type(self.model).__name__,
            "task": self.task,
            "num_classes": self.num_classes, "classes": self.class_names,
            "palette": [[int(v) for v in rgb] for rgb in self.palette[:self.num_classes]],
            "input": dataclasses.asdict(self.processor("whole")),
            "test_pipeline": recorded_pipeline(self.model), "token_merging": mc.to_dict().get("token_merging"),
            "dtype": self.dtype, "device": str(cfg.device),
            "runtime": runtime_of(self.runner), "runtime_choice": self.runtime_choice,
            "batching": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms},
            "limits": {"max_pixels": cfg.max_pixels, "max_body_bytes": cfg.max_body_bytes,
                       "max_queue": cfg.max_queue},
            "formats": list(FORMATS), "modes": ["whole", "slide"],
        }


def _now(fn, *args) -> Future:
    """`fn(*args)` run at once, as a finished future (warm-up without a pool)."""
    future = Future()
    future.set_result(fn(*args))
    return future


def example_bytes() -> bytes:
    """The bundled example image (a cat photograph, see segformer/assets/README.md)."""
    return resources.files("segformer").joinpath("assets", EXAMPLE).read_bytes()
