"""bfloat16 on the CPU that is never a trap.

Autocast sends linears, convolutions and attention to oneDNN in bf16. With native bf16 instructions
(`avx512_bf16` or AMX) those run faster than float32. Without them (measured on this project's AMD EPYC
with oneDNN held back by `ONEDNN_MAX_CPU_ISA`, SegFormer-B0 at 375x500, torch profiler):
- AVX2 only (an EPYC before Zen 4): PyTorch refuses oneDNN's bf16 convolution and runs ATen's reference
  `_slow_conv2d_forward` (76% of the time; 4107 calls for 19 convolutions, the depthwise Mix-FFN ones
  group by group); bf16 `addmm` is also slower than float32. bf16: 15-18 s, float32: 1.3-3.2 s.
- AVX-512 without AVX512_BF16: oneDNN emulates bf16; the casts around every op (`copy_`) dominate and bf16
  took 3.1-3.2 s against 1.1-1.6 s in float32.
No subset of ops kept in float32 wins there (convolutions and matmuls are most of the work), so
`autocast_dtype` runs float32 (one warning) where the CPU lacks native bf16; where it has it, a short
cached probe (`probe.py`) still falls back when bf16 would be slower for the model and size.
`SEGFORMER_FORCE_BF16=1` skips both checks.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .probe import cached, probe_key, store, time_interleaved

logger = logging.getLogger(__name__)
FORCE_ENV = "SEGFORMER_FORCE_BF16"
NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")
# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) below which it has no native bf16 kernels
_NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")
_warned: set[str] = set()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str] | None = None, onednn_isa: str | None = None) -> tuple[bool, str]:
    """(does this CPU compute bf16 natively for oneDNN, the evidence in words)."""
    flags = cpu_flags() if flags is None else flags
    onednn_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "") if onednn_isa is None else onednn_isa
    found = [f for f in NATIVE_FLAGS if f in flags]
    if not flags:  # no /proc/cpuinfo: ask torch (private helpers, present in torch 2.x)
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        found = [name for name, fn in zip(NATIVE_FLAGS, probes) if fn is not None and fn()]
    capability = torch.backends.cpu.get_cpu_capability()
    if not found:
        return False, f"CPU flags lack {' and '.join(NATIVE_FLAGS)} (torch CPU capability {capability})"
    if onednn_isa.upper() in _NO_BF16_ISAS:
        return False, f"ONEDNN_MAX_CPU_ISA={onednn_isa} hides {found[0]} from oneDNN"
    return True, f"CPU has {', '.join(found)} (torch CPU capability {capability})"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _bf16_slower(model: nn.Module, size: tuple[int, int], measure: Callable) -> dict[str, float]:
    """Probe medians of one float32 and one bf16-autocast forward at `size` (cached)."""
    key = probe_key("bf16", model, size)
    hit = cached(key)
    if hit is not None:
        return hit
    x = torch.randn(1, 3, *size)
    was_training = model.training
    model.eval()

    def run(dtype):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            model(x)

    try:
        seconds = measure({"float32": lambda: run("float32"), "bfloat16": lambda: run("bfloat16")})
    finally:
        model.train(was_training)
    store(key, seconds)
    return seconds


def autocast_dtype(dtype: str, device: str | torch.device = "cpu", model: nn.Module | None = None,
                   size: tuple[int, int] | None = None, *, flags: set[str] | None = None,
                   measure: Callable = time_interleaved) -> str:
    """The autocast dtype to really use for `dtype` on `device`: "float32" (after one warning) where bf16
    would be slower on this CPU, else `dtype` unchanged. With `model` and `size`, a CPU with native bf16
    is also probed (cached). GPUs and float32/float16 pass through."""
    if dtype != "bfloat16" or torch.device(device).type != "cpu" or os.environ.get(FORCE_ENV) == "1":
        return dtype
    native, evidence = native_bf16(flags)
    if not native:
        _warn_once(f"bfloat16 requested, but this CPU has no native bf16 ({evidence}): emulated bf16 matmuls and "
                   f"convolutions run about 10x slower than float32, so float32 runs instead "
                   f"({FORCE_ENV}=1 forces bf16)")
        return "float32"
    if model is not None and size is not None:
        seconds = _bf16_slower(model, size, measure)
        if seconds["bfloat16"] > seconds["float32"]:
            _warn_once(f"bfloat16 requested, but a probe at {size[0]}x{size[1]} found it slower than float32 here "
                       f"({seconds['bfloat16'] * 1e3:.0f} vs {seconds['float32'] * 1e3:.0f} ms), so float32 runs "
                       f"instead ({FORCE_ENV}=1 forces bf16)")
            return "float32"
    logger.info("bfloat16: %s", evidence)
    return dtype
