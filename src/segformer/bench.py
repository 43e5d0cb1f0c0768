"""Benchmark a model: parameters, multiply-adds, latency, throughput and peak memory (optionally vs HF).

MACs are counted with `torch.utils.flop_counter` on a meta-device copy (shapes only, so B5 at
1024x2048 counts in about a second). Two totals are reported, per image:

- `gmacs`: the architecture as the papers count it (convs, linears, and the two attention
  products Q K^T and A V per head), with SegFormer's All-MLP decoder counted in its textbook
  form: per-stage Linear C_i -> D, upsample, concat, 1x1 fuse 4D -> D, classifier D -> K.
- `gmacs_executed`: what this implementation runs. It differs from `gmacs` by the decoder, which
  applies the fuse conv before upsampling (models/decoders.py) and so does far fewer MACs.

Not counted (as in the papers): norms, activations, softmax, bilinear upsampling, biases and
additions. On the meta device `scaled_dot_product_attention` runs its math form (two bmm, which the
counter knows); on CPU it dispatches to the fused `_scaled_dot_product_flash_attention_for_cpu`, which the
counter does not know, so we
register that op's count too: 2 * B * heads * N * M * (d_qk + d_v) FLOPs, half that in MACs.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import statistics
import tempfile
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import SegFormer, SegmentationModel, input_channels
from .models.decoders import MLPDecoder, MMSegMLPDecoder
from .utils.dtypes import DTYPES
from .utils.timing import synchronize, time_interleaved

_ATTENTION_OPS = ("_scaled_dot_product", "bmm")  # in these models every batched matmul is an attention product


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of softmax(Q K^T) V: two batched products, 2 FLOPs per multiply-add."""
    b, h, n, d_qk = query_shape
    m, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * n * m * (d_qk + d_v)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _decoder_textbook_macs(head: nn.Module, feature_shapes: list[tuple[int, ...]]) -> int:
    """MACs of the All-MLP decoder as written in the paper (fuse after upsampling), per image."""
    dim = head.bn.num_features
    tokens = [h * w for _, _, h, w in feature_shapes]
    project = sum(n * c * dim for n, (_, c, _, _) in zip(tokens, feature_shapes))
    fuse = tokens[0] * head.linear_fuse.in_channels * dim
    classify = tokens[0] * dim * head.classifier.out_channels
    return project + fuse + classify


def count_macs(model: nn.Module, height: int, width: int) -> dict:
    """Multiply-adds of one forward pass on one (3, height, width) image; see the module docstring."""
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.zeros(1, input_channels(model), height, width, device="meta")
    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    counter = FlopCounterMode(display=False, custom_mapping=custom)
    shapes: list[tuple[int, ...]] = []
    head = meta.decode_head if isinstance(meta, SegmentationModel) else None
    textbook = isinstance(head, (MLPDecoder, MMSegMLPDecoder))
    hook = head.register_forward_pre_hook(lambda m, a: shapes.extend(tuple(f.shape) for f in a[0])) \
        if textbook else None
    with torch.no_grad(), counter:
        meta(x)
    if hook is not None:
        hook.remove()
    counts = counter.get_flop_counts()
    by_op = counts["Global"]
    executed = sum(by_op.values()) // 2
    attention = sum(v for op, v in by_op.items() if any(a in str(op) for a in _ATTENTION_OPS)) // 2
    paper = executed
    if textbook:
        decoder_executed = sum(counts.get(f"{type(meta).__name__}.decode_head", {}).values()) // 2
        paper = executed - decoder_executed + _decoder_textbook_macs(head, shapes)
    return {"gmacs": paper / 1e9, "gmacs_executed": executed / 1e9, "attention_gmacs": attention / 1e9}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    gc.collect()
    try:  # hand memory the allocator keeps from earlier steps back to the OS, so it does not hide this step's peak
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:  # Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _memory_bytes(device: torch.device, peak: bool) -> int | None:
    """CUDA allocated bytes (peak since `_reset_peak`, or now), or on CPU the process's resident set
    (VmHWM, the peak, or VmRSS); None where /proc is unavailable."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)
    field = "VmHWM:" if peak else "VmRSS:"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _step_fn(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, dtype: torch.dtype, hf: bool
             ) -> Callable[[], None]:
    """One timed step: an inference forward, or forward + backward + AdamW step when labels are given."""
    device = x.device
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    if labels is None:
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast:
                model(pixel_values=x) if hf else model(x)
        return infer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def train_step() -> None:
        with autocast:
            loss = model(pixel_values=x, labels=labels).loss if hf else model.loss(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return train_step


def hf_twin(model: nn.Module) -> nn.Module:
    """transformers' SegformerForSemanticSegmentation holding exactly `model`'s weights (HF-style decoders)."""
    try:
        from transformers import SegformerForSemanticSegmentation
    except ImportError as exc:
        raise RuntimeError("--compare hf needs transformers (pip install 'segformer[dev]')") from exc
    style = model.config.decoder_style if isinstance(model, SegFormer) else None
    if style != "hf" or model.task != "segmentation":
        raise ValueError("--compare hf needs a SegFormer with the HF-style All-MLP decoder "
                         f"(this model: {type(model).__name__}, decoder {style})")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return SegformerForSemanticSegmentation.from_pretrained(tmp, attn_implementation="sdpa")


def _step_memory(step, dev: torch.device) -> tuple[int | None, int | None]:
    """(peak memory during one `step`, memory before it) in bytes; None where the device does not say."""
    synchronize(dev)
    _reset_peak(dev)
    before = _memory_bytes(dev, peak=False)
    step()
    synchronize(dev)
    return _memory_bytes(dev, peak=True), before


def benchmark(model: nn.Module, height: int, width: int, *, batch: int = 1, dtype: str = "float32",
              device: str = "cpu", runs: int = 10, warmup: int = 2, train: bool = False,
              reference: nn.Module | None = None, runner: nn.Module | None = None) -> dict:
    """Time `model` (and `reference`, a transformers twin, interleaved round by round) on one random batch.

    Returns a flat dict of every reported number; latencies in seconds, memory in bytes. With a reference
    in inference mode, `hf_max_abs_diff` is the fp32 (no autocast) logit difference: the parity check.
    `runner`: what runs `model` instead of itself (a `segformer.runtimes` runner; inference only); the
    multiply-adds are still counted on `model`.
    """
    if runner is not None and train:
        raise ValueError("a runtime runner (onnxruntime, openvino) runs inference only; use --runtime torch "
                         "with --train")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0 and batch >= 1 (got {runs}, {warmup}, {batch})")
    dev = torch.device(device)
    result: dict = {"params": count_parameters(model), **count_macs(model, height, width)}
    model.to(dev)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, height, width, generator=gen).to(dev)
    labels = None
    if train:
        num_classes = model.config.num_classes
        labels = torch.randint(0, num_classes, (batch, height, width), generator=gen).to(dev)
    timed = model if runner is None else runner
    candidates = {"": _step_fn(timed, x, labels, DTYPES[dtype], hf=False)}
    if reference is not None:
        reference.to(dev)
        if not train:
            with torch.inference_mode():
                ours, theirs = timed.eval()(x), reference.eval()(pixel_values=x).logits
            result["hf_max_abs_diff"] = (ours.float() - theirs.float()).abs().max().item()
        candidates["hf_"] = _step_fn(reference, x, labels, DTYPES[dtype], hf=True)
    times = time_interleaved(candidates, runs=runs, warmup=warmup, device=dev)
    for prefix, t in times.items():
        median = statistics.median(t)
        result.update({f"{prefix}latency_median_s": median, f"{prefix}latency_min_s": min(t),
                       f"{prefix}latency_max_s": max(t), f"{prefix}throughput_img_s": batch / median})
    for prefix, step in candidates.items():  # peak memory of one step each, measured apart, after timing
        peak, before = _step_memory(step, dev)
        result[f"{prefix}peak_memory_bytes"] = peak
        result[f"{prefix}peak_memory_increase_bytes"] = peak - before if None not in (peak, before) else None
    if reference is not None:
        result["speedup_vs_hf"] = result["hf_latency_median_s"] / result["latency_median_s"]
    result.update({"memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "peak RSS (VmHWM)",
                   "torch": torch.__version__, "threads": torch.get_num_threads()})
    return result
