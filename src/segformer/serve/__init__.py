"""`segformer serve`: an HTTP inference server with dynamic batching and a web page (the `serve` extra:
FastAPI, uvicorn, python-multipart, prometheus_client). Nothing outside this package imports it.

`create_app(ServeConfig(model=...))` is the ASGI app; `segformer serve --model SOURCE` runs it with uvicorn.
The batcher (`serve.batcher`) and the request logic (`serve.engine`) need only the core dependencies; the
web framework is imported when `create_app` is first used.
"""

from .engine import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
