"""SETR (ViT-L/16; Naive, PUP, MLA) next to SegFormer-B5: parameters, multiply-adds and CPU latency.

    .venv/bin/python benchmarks/bench_setr.py --size 512 --runs 3 [--mmseg]

Each model is a zoo preset with random weights (150 classes), run in eval mode on one fp32 image (batch 1,
`torch.inference_mode`, the main head only, as at test time). GMAC counts every conv / matmul
(`torch.utils.flop_counter`) plus the attention products, which that counter misses on CPU (it does not see
`scaled_dot_product_attention`): q.k^T and attn.v, i.e. N_q * N_kv * (d_k + d_v) per head. Bilinear resizing and
norms are not counted (as in the papers). Latency is the median of `--runs` after one warm-up.
`--mmseg` also times MMSegmentation 1.2.2's SETR on the same input size (its venv, .venv-mmseg; backbone +
neck + decode head, no test-time sliding).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import segformer
from segformer.utils.timing import time_interleaved

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["setr-naive", "setr-pup", "setr-mla", "segformer-b5"]
MMSEG_CONFIGS = {"setr-naive": "setr/setr_vit-l_naive_8xb2-160k_ade20k-512x512.py",
                 "setr-pup": "setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py",
                 "setr-mla": "setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py"}

# Runs in the mmseg venv: build each config with random weights and time backbone + neck + decode head.
MMSEG_TIMER = """
import json, statistics, sys, time
sys.path.insert(0, {oracles!r})
import mmseg_oracle, torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
out = {{}}
for name, config in {configs!r}.items():
    cfg = mmseg_oracle.load_config(config, 150, None)
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model).eval()
    x = torch.randn(1, 3, {size}, {size})
    times = []
    with torch.inference_mode():
        for i in range({runs} + 1):
            start = time.perf_counter()
            model.decode_head(model.extract_feat(x))
            times.append(time.perf_counter() - start)
    out[name] = statistics.median(times[1:])
    del model
print(json.dumps(out))
"""


def count_gmac(model: torch.nn.Module, x: torch.Tensor) -> float:
    attention = 0

    def counting_sdpa(q, k, v, *args, **kwargs):
        nonlocal attention
        attention += q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
        return sdpa(q, k, v, *args, **kwargs)

    sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = counting_sdpa  # our encoders call it through the module attribute
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x)
    finally:
        F.scaled_dot_product_attention = sdpa
    return (counter.get_total_flops() / 2 + attention) / 1e9


def latency(model: torch.nn.Module, x: torch.Tensor, runs: int) -> float:
    with torch.inference_mode():
        return statistics.median(time_interleaved({"model": lambda: model(x)}, runs=runs, warmup=1)["model"])


def mmseg_latency(size: int, runs: int, python: Path) -> dict[str, float]:
    script = MMSEG_TIMER.format(oracles=str(ROOT / "tests" / "oracles"), configs=MMSEG_CONFIGS, size=size, runs=runs)
    proc = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"mmseg timing failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--mmseg", action="store_true", help="also time MMSegmentation's SETR")
    parser.add_argument("--mmseg-python", type=Path, default=ROOT / ".venv-mmseg" / "bin" / "python")
    args = parser.parse_args()
    x = torch.randn(1, 3, args.size, args.size)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = segformer.create_model(name, num_classes=150).eval()
        with torch.inference_mode():
            shape = tuple(model(x).shape[-2:])
        rows.append(dict(name=name, params=sum(p.numel() for p in model.parameters()) / 1e6,
                         gmac=count_gmac(model, x), seconds=latency(model, x, args.runs), out=shape))
        del model
    ref = mmseg_latency(args.size, args.runs, args.mmseg_python) if args.mmseg else {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch 1, {args.size}x{args.size}, "
          f"150 classes, median of {args.runs}")
    print("| model | params (M) | GMAC | logits | latency (s) |" + (" mmseg 1.2.2 (s) |" if ref else ""))
    print("|---|---|---|---|---|" + ("---|" if ref else ""))
    for r in rows:
        mm = f" {ref[r['name']]:.2f} |" if r["name"] in ref else (" - |" if ref else "")
        print(f"| {r['name']} | {r['params']:.1f} | {r['gmac']:.1f} | {r['out'][0]}x{r['out'][1]} | "
              f"{r['seconds']:.2f} |{mm}")


if __name__ == "__main__":
    main()
