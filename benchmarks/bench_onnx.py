"""onnxruntime (CPU) on our ONNX export vs on transformers' export vs our PyTorch eager, same weights and input.

    .venv/bin/python benchmarks/bench_onnx.py --cases b0:512x512 b2:512x512 --runs 7

For each case HF's model with random weights is saved, loaded by `segformer.load_model`, and both are
exported with torch's TorchScript exporter (dynamic H, W). The three runners then alternate round by
round after warm-up; we report medians, ratios and each export's max abs difference from PyTorch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

import segformer
from segformer.export import export_onnx
from segformer.models.mit import MIT_VARIANTS
from segformer.utils.timing import time_interleaved


class _HFLogits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export_hf(model: torch.nn.Module, path: Path, size: tuple[int, int]) -> None:
    axes = {"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "h", 3: "w"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_HFLogits(model).eval(), (torch.randn(1, 3, *size),), str(path), dynamo=False,
                          input_names=["pixel_values"], output_names=["logits"], dynamic_axes=axes, opset_version=17)


def bench_case(variant: str, size: tuple[int, int], runs: int, warmup: int) -> dict:
    torch.manual_seed(0)
    spec = MIT_VARIANTS[variant]
    cfg = SegformerConfig(hidden_sizes=list(spec["embed_dims"]), depths=list(spec["depths"]), num_labels=150,
                          decoder_hidden_size=256 if variant in ("b0", "b1") else 768)
    ref = SegformerForSemanticSegmentation(cfg).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = segformer.load_model(tmp).eval()
        export_onnx(ours, Path(tmp) / "ours.onnx", size=size, dynamic=True)
        export_hf(ref, Path(tmp) / "hf.onnx", size)
        s_ours = ort.InferenceSession(str(Path(tmp) / "ours.onnx"), options, providers=["CPUExecutionProvider"])
        s_hf = ort.InferenceSession(str(Path(tmp) / "hf.onnx"), options, providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, *size)
    feed = {"pixel_values": x.numpy()}
    runners = {"torch_ours": lambda: ours(x), "ort_ours": lambda: s_ours.run(None, feed),
               "ort_hf": lambda: s_hf.run(None, feed)}
    with torch.inference_mode():
        expected = ours(x).numpy()
        diffs = {k: float(np.abs(s.run(None, feed)[0] - expected).max()) for k, s in
                 (("ours", s_ours), ("hf", s_hf))}
        times = time_interleaved(runners, runs=runs, warmup=warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"case": f"{variant.upper()} {size[0]}x{size[1]}", **med, "diffs": diffs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["b0:512x512"], help="variant:HxW")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {torch.get_num_threads()} threads, "
          f"batch 1, median of {args.runs}")
    print("| case | PyTorch ours (s) | ORT ours (s) | ORT HF export (s) | ORT ours vs ORT HF | ORT ours vs PyTorch "
          "ours | max abs diff ours / HF export |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases:
        variant, size = case.split(":")
        h, w = (int(v) for v in size.split("x"))
        r = bench_case(variant, (h, w), args.runs, args.warmup)
        print(f"| {r['case']} | {r['torch_ours']:.3f} | {r['ort_ours']:.3f} | {r['ort_hf']:.3f} | "
              f"{r['ort_hf'] / r['ort_ours']:.2f}x | {r['torch_ours'] / r['ort_ours']:.2f}x | "
              f"{r['diffs']['ours']:.1e} / {r['diffs']['hf']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
