"""Every way a CPU user can run SegFormer today, side by side on the same weights and input (issue 8).

    .venv/bin/python benchmarks/cpu_options.py --cases b0:512x512 b2:512x512 --runs 5

Runners, alternating round by round after warm-up (medians): transformers' model in eager fp32, under bf16
autocast, under `torch.compile` (fp32, default mode; compile time reported), and exported to ONNX and run by
onnxruntime; ours in eager fp32 (the default path), under bf16 autocast, and our ONNX export in onnxruntime.
Speed-ups are over HF eager fp32. fp32 runners' max abs logit difference from HF eager is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from bench_onnx import export_hf
from bench_vs_hf import hf_model

import segformer
from segformer.export import export_onnx


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_case(variant: str, size: tuple[int, int], runs: int, warmup: int) -> tuple[dict, dict, float]:
    torch.manual_seed(0)
    ref = hf_model(variant, 150)
    x = torch.randn(1, 3, *size)
    feed = {"pixel_values": x.numpy()}
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = segformer.load_model(tmp).eval()
        export_onnx(ours, Path(tmp) / "ours.onnx", size=size, dynamic=True)
        export_hf(ref, Path(tmp) / "hf.onnx", size)
        ort_ours, ort_hf = _session(Path(tmp) / "ours.onnx"), _session(Path(tmp) / "hf.onnx")
    compiled = torch.compile(ref)
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)

    def hf_bf16():
        with bf16:
            return ref(pixel_values=x).logits

    def ours_bf16():
        with bf16:
            return ours(x)

    runners = {
        "HF eager fp32": lambda: ref(pixel_values=x).logits,
        "HF bf16 autocast": hf_bf16,
        "HF torch.compile fp32": lambda: compiled(pixel_values=x).logits,
        "HF ONNX (onnxruntime)": lambda: torch.from_numpy(ort_hf.run(None, feed)[0]),
        "ours eager fp32": lambda: ours(x),
        "ours bf16 autocast": ours_bf16,
        "ours ONNX (onnxruntime)": lambda: torch.from_numpy(ort_ours.run(None, feed)[0]),
    }
    with torch.inference_mode():
        start = time.perf_counter()
        compiled(pixel_values=x)
        compile_s = time.perf_counter() - start
        expected = runners["HF eager fp32"]()
        diffs = {k: float((fn().float() - expected).abs().max()) for k, fn in runners.items()
                 if "bf16" not in k and k != "HF eager fp32"}
        for _ in range(warmup):
            for fn in runners.values():
                fn()
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(runs):
            for k, fn in runners.items():
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}, diffs, compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["b0:512x512", "b2:512x512"], help="variant:HxW")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {torch.get_num_threads()} threads, batch 1, "
          f"median of {args.runs}, 150 classes")
    for case in args.cases:
        variant, size = case.split(":")
        h, w = (int(v) for v in size.split("x"))
        med, diffs, compile_s = bench_case(variant, (h, w), args.runs, args.warmup)
        base = med["HF eager fp32"]
        print(f"\n{variant.upper()} {h}x{w} (HF torch.compile: first call {compile_s:.0f} s)")
        print("| runner | median (s) | speed-up over HF eager fp32 | max abs diff vs HF eager |")
        print("|---|---|---|---|")
        for k, t in med.items():
            diff = f"{diffs[k]:.1e}" if k in diffs else "-"
            print(f"| {k} | {t:.3f} | {base / t:.2f}x | {diff} |", flush=True)
        fp32_rivals = [k for k in med if k.startswith("HF")]
        best = min(fp32_rivals, key=med.get)
        print(f"ours eager fp32 vs the fastest HF option ({best}): {med[best] / med['ours eager fp32']:.2f}x; "
              f"our ONNX vs HF's ONNX: {med['HF ONNX (onnxruntime)'] / med['ours ONNX (onnxruntime)']:.2f}x")


if __name__ == "__main__":
    main()
