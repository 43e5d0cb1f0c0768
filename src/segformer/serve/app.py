"""The FastAPI application of `segformer serve`: routes, limits, admission control and Prometheus metrics.

The model loads (and warms up) in a background thread, so `/healthz` answers at once and `/readyz` turns 200
when the model is ready. Segmentation (decoding, `segformer.predict`, encoding) runs in a pool of
2 x `max_batch` threads (at least 4): the event loop only reads bodies and writes answers, so health checks are
answered while a batch runs. A request is admitted before its body is read; past `max_queue` requests in flight
the server answers 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from .engine import RequestError, Segmenter, ServeConfig, example_bytes, parse_options
from .pose import parse_pose_options

log = logging.getLogger(__name__)
ROUTES = ("/", "/example.jpg", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/segment", "/v1/keypoints")
CLIENT_CLOSED = 499  # nginx's code for a client that went away before the answer


class Metrics:
    """The server's Prometheus collectors, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("segformer_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("segformer_request_seconds", "time from request to answer", ["route"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
                                 registry=self.registry)
        self.batch_size = Histogram("segformer_batch_size", "images per forward pass",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=self.registry)
        self.queue_depth = Gauge("segformer_queue_depth", "segmentation requests admitted and not yet answered",
                                 registry=self.registry)
        self.pending = Gauge("segformer_batcher_pending", "forward passes waiting for the batcher",
                             registry=self.registry)


class ServerState:
    """The segmenter once loaded, the thread pool, and the count of requests in flight."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self.segmenter: Segmenter | None = None
        self.error: str | None = None
        # Enough threads to fill two batches (one running, one forming); admitted requests beyond wait for a
        # thread holding only their encoded body, so at most this many images are decoded at once.
        self.workers = min(config.max_queue, max(4, 2 * config.max_batch))
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="segformer-request")
        self.in_flight = 0
        self._lock = threading.Lock()

    def load(self) -> None:
        try:
            segmenter = Segmenter(self.config, on_batch=self.metrics.batch_size.observe)
            segmenter.warm_up(self.pool, self.workers)
            self.segmenter = segmenter
            log.info("model %s loaded and warmed up (%s); ready", self.config.model, segmenter.runtime_choice)
        except Exception as exc:  # reported by /readyz and every request, instead of a dead thread
            log.exception("loading model %s failed", self.config.model)
            self.error = f"loading model {self.config.model} failed: {exc}"

    def ready(self) -> Segmenter:
        if self.segmenter is not None:
            return self.segmenter
        if self.error is not None:
            raise RequestError(500, self.error)
        raise RequestError(503, "the model is still loading; retry shortly", {"Retry-After": "1"})

    @contextlib.contextmanager
    def admit(self):
        with self._lock:
            if self.in_flight >= self.config.max_queue:
                raise RequestError(503, f"server busy: {self.in_flight} requests in flight (--max-queue "
                                        f"{self.config.max_queue}); retry later", {"Retry-After": "1"})
            self.in_flight += 1
            self.metrics.queue_depth.set(self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
                self.metrics.queue_depth.set(self.in_flight)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.segmenter is not None:
            self.segmenter.close()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body (at most `limit` bytes, else 413), or the file of a multipart form."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {declared} bytes exceeds this server's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body exceeds this server's limit of {limit} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return data

    async def once():
        yield data

    try:
        form = await MultiPartParser(request.headers, once(), max_files=1, max_fields=16,
                                     max_part_size=limit).parse()
    except MultiPartException as exc:
        raise RequestError(400, f"malformed multipart body: {exc}") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise RequestError(400, "multipart body without a file: send the image as a file field (e.g. curl -F "
                                "image=@photo.jpg)")
    return await files[0].read()


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _static(name: str) -> bytes:
    return resources.files("segformer.serve").joinpath("static", name).read_bytes()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = {404: f"no route {request.url.path}; routes: {', '.join(ROUTES)}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(400, f"invalid request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


class MetricsMiddleware:
    """Counts every HTTP request by route and status and times it (plain ASGI: bodies stream through)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        route = scope["path"] if scope["path"] in ROUTES else "other"
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


def _add_routes(app: FastAPI, state: ServerState) -> None:
    page, example = _static("index.html"), example_bytes()

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.get("/example.jpg")
    async def example_image():
        return Response(example, media_type="image/jpeg")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        state.ready()
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics():
        if state.segmenter is not None:
            state.metrics.pending.set(state.segmenter.batcher.pending())
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model_info():
        return state.ready().describe()

    async def answer(request: Request, work, opts) -> Response:
        segmenter = state.ready()
        with state.admit():
            try:
                data = await read_body(request, state.config.max_body_bytes)
            except ClientDisconnect:
                return Response(status_code=CLIENT_CLOSED)
            loop = asyncio.get_running_loop()
            body, media_type, seconds = await loop.run_in_executor(state.pool, getattr(segmenter, work), data, opts)
        return Response(body, media_type=media_type, headers={"X-Latency-Ms": f"{1000 * seconds:.2f}"})

    @app.post("/v1/segment")
    async def segment(request: Request):
        return await answer(request, "segment", parse_options(request.query_params))

    @app.post("/v1/keypoints")
    async def keypoints(request: Request):
        return await answer(request, "keypoints", parse_pose_options(request.query_params))


def create_app(config: ServeConfig) -> FastAPI:
    """The server for `config`; the model starts loading when the app starts (see `/readyz`)."""
    metrics = Metrics()
    state = ServerState(config, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=state.load, name="segformer-load", daemon=True)
        loader.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, loader.join)
        state.close()

    app = FastAPI(title="segformer serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    _add_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_routes(app, state)
    return app


def app_from_env() -> FastAPI:
    """The app for each `segformer serve --workers N` process: the settings come as JSON in an environment
    variable, since uvicorn starts the workers from an import string."""
    import json
    import os

    from ..preprocess import ImageProcessor

    settings = json.loads(os.environ["SEGFORMER_SERVE_CONFIG"])
    processor = settings.pop("processor")
    if processor is not None:
        processor = ImageProcessor(**{k: tuple(v) if isinstance(v, list) else v for k, v in processor.items()})
    return create_app(ServeConfig(**settings, processor=processor))
