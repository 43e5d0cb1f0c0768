"""`segformer serve`: the HTTP inference server (needs the `serve` extra)."""

from __future__ import annotations

import argparse

from .common import add_model_args, add_resize_args, device_of
from .runtimes import add_runtime_arg

ENV_CONFIG = "SEGFORMER_SERVE_CONFIG"  # how --workers processes receive the settings


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="HTTP inference server with dynamic batching and a web page",
        description="Serve a segmentation model over HTTP: POST /v1/segment (label map PNG, JSON areas or an overlay "
                    "JPEG), GET /v1/model, /healthz, /readyz, /metrics, and a web page at /. Requests arriving "
                    "within --max-wait-ms run as one batch. Needs the serve extra: pip install 'segformer[serve]'.")
    add_model_args(p, "hub id, zoo preset, HF directory or checkpoint file", device_help="cpu, cuda, cuda:1")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_runtime_arg(p)
    add_resize_args(p)
    p.add_argument("--max-batch", type=int, default=8, help="images per forward pass at most (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits for more (default 10)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="segmentation requests in flight at most; more are answered 503 (default 64)")
    p.add_argument("--max-pixels", type=float, default=50e6, help="largest image accepted, in pixels (default 50e6)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body in MiB (default 32)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_run_serve)


def _config(args: argparse.Namespace):
    from ..serve.engine import ServeConfig
    from .common import processor_from_args

    return ServeConfig(model=args.model, token_merging=args.token_merging, dtype=args.dtype, runtime=args.runtime,
                       device=device_of(args),
                       processor=processor_from_args(args), max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                       max_queue=args.max_queue, max_pixels=int(args.max_pixels),
                       max_body_bytes=int(args.max_body_mb * 2**20))


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def _run_serve(args: argparse.Namespace) -> int:
    import dataclasses
    import inspect
    import json
    import logging
    import os
    import signal

    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise RuntimeError(f"segformer serve needs the serve extra ({exc}): pip install 'segformer[serve]'") from None
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    config = _config(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    print(f"segformer serve: http://{args.host}:{args.port}/ (model {args.model}, --runtime {args.runtime}, "
          f"{args.workers} worker(s)); the runtime chosen is logged with the ready line once the model has "
          f"loaded, and shown by GET /v1/model", flush=True)
    # uvicorn finishes in-flight requests on SIGTERM, then raises the signal again: exit 0 for a clean stop.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if args.workers == 1:
        uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level)
    else:
        os.environ[ENV_CONFIG] = json.dumps(dataclasses.asdict(config))
        # Workers import torch and load the model before they answer uvicorn's health pings: allow for it.
        patience = {"timeout_worker_healthcheck": 300} if "timeout_worker_healthcheck" in inspect.signature(
            uvicorn.run).parameters else {}
        uvicorn.run("segformer.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, **patience)
    return 0
