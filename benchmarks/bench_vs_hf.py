"""Our SegFormer vs transformers' on the same weights and input, timed interleaved in one process.

    .venv/bin/python benchmarks/bench_vs_hf.py --cases b0:512x512 b0:1024x2048 --runs 7

For each case: HF's model with random weights is saved with `save_pretrained`, loaded by
`segformer.load_model`, both run the same input (fp32, batch 1, `torch.inference_mode`), alternating
ours/HF each round after warm-up; we report medians, the ratio and the max abs logit difference, and ours
under bf16 autocast against HF in fp32 (with its argmax agreement with our fp32 logits on this random input).
glibc malloc runs with its defaults unless --retain-memory (what the `segformer` CLI does, runtime.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

import segformer
from segformer.models.mit import MIT_VARIANTS
from segformer.runtime import retain_freed_memory
from segformer.utils.timing import time_interleaved


def hf_model(variant: str, num_labels: int) -> SegformerForSemanticSegmentation:
    spec = MIT_VARIANTS[variant]
    cfg = SegformerConfig(hidden_sizes=list(spec["embed_dims"]), depths=list(spec["depths"]), num_labels=num_labels,
                          decoder_hidden_size=256 if variant in ("b0", "b1") else 768)
    return SegformerForSemanticSegmentation(cfg).eval()


def bench_case(variant: str, height: int, width: int, runs: int, warmup: int, num_labels: int) -> dict:
    torch.manual_seed(0)
    ref = hf_model(variant, num_labels)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = segformer.load_model(tmp).eval()
    x = torch.randn(1, 3, height, width)

    def ours_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ours(x)

    with torch.inference_mode():
        fp32 = ours(x)
        diff = (fp32 - ref(pixel_values=x).logits).abs().max().item()
        agree = (ours_bf16().argmax(1) == fp32.argmax(1)).float().mean().item()
        times = time_interleaved({"ours": lambda: ours(x), "bf16": ours_bf16, "hf": lambda: ref(pixel_values=x)},
                                 runs=runs, warmup=warmup)
    med_ours, med_bf16, med_hf = (statistics.median(times[k]) for k in ("ours", "bf16", "hf"))
    return dict(case=f"{variant.upper()} {height}x{width}", ours=med_ours, hf=med_hf, ratio=med_hf / med_ours,
                diff=diff, bf16=med_bf16, agree=agree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["b0:512x512", "b0:1024x2048"], help="variant:HxW")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-labels", type=int, default=150)
    parser.add_argument("--retain-memory", action="store_true", help="segformer.runtime.retain_freed_memory() first")
    args = parser.parse_args()
    if args.retain_memory:
        retain_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, median of {args.runs}, "
          f"malloc {'retaining freed memory' if args.retain_memory else 'glibc defaults'}")
    print("| case | ours fp32 (s) | HF fp32 (s) | speed-up | max abs diff | ours bf16 (s) | bf16 vs HF fp32 | "
          "bf16 argmax agreement (random weights) |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        variant, size = case.split(":")
        h, w = (int(v) for v in size.split("x"))
        r = bench_case(variant, h, w, args.runs, args.warmup, args.num_labels)
        print(f"| {r['case']} | {r['ours']:.3f} | {r['hf']:.3f} | {r['ratio']:.2f}x | {r['diff']:.1e} | "
              f"{r['bf16']:.3f} | {r['hf'] / r['bf16']:.2f}x | {100 * r['agree']:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
