"""Floating-point dtype names accepted by inference, benchmarks and the CLI."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = tuple(DTYPES)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """None / "float32" -> float32; "bfloat16" / "float16" (or those torch dtypes) as given."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype or torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
    return DTYPES[dtype]
