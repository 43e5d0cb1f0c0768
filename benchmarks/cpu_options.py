"""Every way a CPU user can run SegFormer today, side by side on the same weights and input (issue 8).

    .venv/bin/python benchmarks/cpu_options.py --cases b0:512x512 b2:512x512 --runs 5

Runners, alternating round by round after warm-up (medians): transformers' model in eager fp32, under bf16
autocast, under `torch.compile` (fp32, default mode; compile time reported), exported to ONNX and run by
onnxruntime and by OpenVINO (f32; as exported, dynamic H and W, and reshaped to the input's static shape),
and converted by `ov.convert_model`; ours in eager fp32, under bf16 autocast, our ONNX export in onnxruntime
and in OpenVINO (f32, compiled as exported: what a user who loads our .onnx into OpenVINO gets), and "default
path": what `segformer predict` runs by default (`--runtime auto`: its real probe, cached; the runner it
returns). `--runners` picks a subset (substrings). Speed-ups are over HF eager fp32. fp32 runners' max abs
logit difference from HF eager is printed too. The default path is compared with the fastest OpenVINO on HF's
model and with OpenVINO on our ONNX (issue 19's acceptance):

    .venv/bin/python benchmarks/cpu_options.py --cases b0:512x512 --runners "HF eager" OpenVINO default
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import openvino as ov
import torch
from bench_onnx import _HFLogits, export_hf
from bench_vs_hf import hf_model

import segformer
from segformer.export import export_onnx
from segformer.runtimes import select_runtime
from segformer.runtimes.openvino import compile_model
from segformer.utils.timing import time_interleaved


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ov_request(ov_model, static_shape: tuple[int, ...] | None = None):
    if static_shape is not None:
        ov_model.reshape({"pixel_values": list(static_shape)})
    request = compile_model(ov_model).create_infer_request()
    return lambda feed: torch.from_numpy(request.infer(feed)[0].copy())


def _autocast(fn):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()
    return run


def _builders(ref, ours, x: torch.Tensor, tmp: Path) -> dict:
    """Every runner as a builder returning a zero-argument callable (only the runners asked for are built)."""
    size, feed = tuple(x.shape[-2:]), {"pixel_values": x.numpy()}

    def onnx(name: str) -> str:
        path = tmp / f"{name}.onnx"
        if name == "ours" and not path.exists():
            export_onnx(ours, path, size=size, dynamic=True)
        elif not path.exists():
            export_hf(ref, path, size)
        return str(path)

    def ort_runner(name):
        session = _session(Path(onnx(name)))
        return lambda: torch.from_numpy(session.run(None, feed)[0])

    def ov_runner(model, static: bool = False):
        request = _ov_request(model, tuple(x.shape) if static else None)
        return lambda: request(feed)

    def default():
        runner, choice = select_runtime(ours, size)  # what `segformer predict` runs by default (real probe, cached)
        print(choice.describe(), flush=True)
        return lambda: runner(x)

    def compiled():
        model = torch.compile(ref)
        start = time.perf_counter()
        with torch.inference_mode():
            model(pixel_values=x)
        print(f"HF torch.compile: first call {time.perf_counter() - start:.0f} s", flush=True)
        return lambda: model(pixel_values=x).logits

    return {
        "HF eager fp32": lambda: lambda: ref(pixel_values=x).logits,
        "HF bf16 autocast": lambda: _autocast(lambda: ref(pixel_values=x).logits),
        "HF torch.compile fp32": compiled,
        "HF ONNX (onnxruntime)": lambda: ort_runner("hf"),
        "HF ONNX (OpenVINO f32)": lambda: ov_runner(ov.convert_model(onnx("hf"))),
        "HF ONNX (OpenVINO f32, static shape)": lambda: ov_runner(ov.convert_model(onnx("hf")), static=True),
        "HF ov.convert_model (OpenVINO f32)": lambda: ov_runner(ov.convert_model(_HFLogits(ref), example_input=x)),
        "ours eager fp32": lambda: lambda: ours(x),
        "ours bf16 autocast": lambda: _autocast(lambda: ours(x)),
        "ours ONNX (onnxruntime)": lambda: ort_runner("ours"),
        "ours ONNX (OpenVINO f32)": lambda: ov_runner(ov.convert_model(onnx("ours"))),
        "default path": default,
    }


def bench_case(variant: str, size: tuple[int, int], runs: int, warmup: int, wanted: list[str] | None
               ) -> tuple[dict, dict]:
    torch.manual_seed(0)
    ref = hf_model(variant, 150)
    x = torch.randn(1, 3, *size)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = segformer.load_model(tmp).eval()
        builders = _builders(ref, ours, x, Path(tmp))
        runners = {k: build() for k, build in builders.items()
                   if k == "HF eager fp32" or not wanted or any(w in k for w in wanted)}
    with torch.inference_mode():
        expected = runners["HF eager fp32"]()
        diffs = {k: float((fn().float() - expected).abs().max()) for k, fn in runners.items()
                 if "bf16" not in k and k != "HF eager fp32"}
        times = time_interleaved(runners, runs=runs, warmup=warmup)
    return {k: statistics.median(v) for k, v in times.items()}, diffs


def _acceptance(med: dict, diffs: dict) -> None:
    default = "default path"
    ov_hf = [k for k in med if k.startswith("HF") and "OpenVINO" in k]
    if default not in med or not ov_hf or "ours ONNX (OpenVINO f32)" not in med:
        return
    best_hf = min(ov_hf, key=med.get)
    print(f"default path: {med[best_hf] / med[default]:.2f}x OpenVINO on HF (fastest: {best_hf}), "
          f"{med['ours ONNX (OpenVINO f32)'] / med[default]:.2f}x OpenVINO on our ONNX; "
          f"max abs diff from HF {diffs.get(default, 0.0):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["b0:512x512", "b2:512x512"], help="variant:HxW")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runners", nargs="+", help="only runners whose name contains one of these (HF eager "
                                                     "always runs: it is the baseline)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, openvino {ov.__version__}, "
          f"{torch.get_num_threads()} threads, batch 1, median of {args.runs}, 150 classes")
    for case in args.cases:
        variant, size = case.split(":")
        h, w = (int(v) for v in size.split("x"))
        med, diffs = bench_case(variant, (h, w), args.runs, args.warmup, args.runners)
        base = med["HF eager fp32"]
        print(f"\n{variant.upper()} {h}x{w}")
        print("| runner | median (s) | speed-up over HF eager fp32 | max abs diff vs HF eager |")
        print("|---|---|---|---|")
        for k, t in med.items():
            diff = f"{diffs[k]:.1e}" if k in diffs else "-"
            print(f"| {k} | {t:.3f} | {base / t:.2f}x | {diff} |", flush=True)
        _acceptance(med, diffs)


if __name__ == "__main__":
    main()
