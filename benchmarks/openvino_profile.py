"""Where OpenVINO spends its time on our graph and on HF's (issue 19): per-node times (`PERF_COUNT`,
`infer_request.profiling_info`) summed into the encoder's fused attention (MHA Subgraph nodes), the rest of the
encoder and the decoder (`decode_head` nodes and the logits), plus all Transpose + Reorder nodes, for each ONNX
export compiled with dynamic H, W (as exported) and reshaped to the input's static shape.

    .venv/bin/python benchmarks/openvino_profile.py --case b0:1024x2048 --runs 2
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from bench_onnx import export_hf
from bench_vs_hf import hf_model

import segformer
from segformer.export import export_onnx

COLUMNS = ("attention", "encoder rest", "decoder", "Transpose + Reorder")


def _part(info) -> str:
    name = info.node_name
    if "decode_head" in name or name.startswith("logits"):
        return "decoder"
    return "attention" if info.node_type == "Subgraph" and ("attn" in name or "attention" in name) else "encoder rest"


def profile(path: Path, x: np.ndarray, static: bool, runs: int) -> tuple[float, dict]:
    model = ov.Core().read_model(str(path))
    if static:
        model.reshape({"pixel_values": list(x.shape)})
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERF_COUNT": True}
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    request.infer({"pixel_values": x})
    walls, parts = [], collections.Counter()
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({"pixel_values": x})
        walls.append(time.perf_counter() - start)
        for info in request.profiling_info:
            ms = info.real_time.total_seconds() * 1e3 / runs
            parts[_part(info)] += ms
            if info.node_type in ("Transpose", "Reorder"):
                parts["Transpose + Reorder"] += ms
    return statistics.median(walls), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="b0:1024x2048", help="variant:HxW")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    variant, size = args.case.split(":")
    h, w = (int(v) for v in size.split("x"))
    torch.manual_seed(0)
    ref = hf_model(variant, 150)
    x = np.random.RandomState(0).randn(1, 3, h, w).astype(np.float32)
    print(f"{variant.upper()} {h}x{w}, {torch.get_num_threads()} threads, openvino {ov.__version__}")
    print("| graph | wall | attention | encoder, rest | decoder | Transpose + Reorder |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        export_onnx(segformer.load_model(tmp).eval(), Path(tmp) / "ours.onnx", size=(512, 512), dynamic=True)
        export_hf(ref, Path(tmp) / "hf.onnx", (512, 512))
        for name in ("ours", "hf"):
            for static in (False, True):
                wall, p = profile(Path(tmp) / f"{name}.onnx", x, static, args.runs)
                cells = " | ".join(f"{p[k]:.0f} ms" for k in COLUMNS)
                shape = "static shape" if static else "dynamic H, W"
                print(f"| {name}, {shape} | {wall * 1e3:.0f} ms | {cells} |", flush=True)


if __name__ == "__main__":
    main()
