"""Argument parsers and a model loader shared by several subcommands."""

from __future__ import annotations


def _hw(values: list[int] | None, name: str) -> tuple[int, int] | None:
    """One int (square) or two (h w) from the command line."""
    if values is None:
        return None
    if len(values) not in (1, 2) or min(values) < 1:
        raise ValueError(f"{name} takes one or two positive ints (H W), got {values}")
    return (values[0], values[-1])


def _size(text: str, name: str) -> tuple[int, int]:
    """"HxW" or "N" (square) from the command line."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError(f"{name} takes HxW or one positive int (e.g. 512x1024 or 512), got {text!r}")
    return parts[0], parts[-1]


def _load_for_bench(spec: str, token_merging: str | None):
    """A zoo name (random weights) or any `load_model` source, with token merging applied if asked."""
    from .. import create_model, list_models, load_model

    model = create_model(spec) if spec in list_models() else load_model(spec)
    if token_merging is not None and not hasattr(model, "set_token_merging"):
        raise ValueError(f"--token-merging: model {spec} ({type(model).__name__}) has no token merging")
    return model
