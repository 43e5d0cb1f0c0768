"""Training with SegFormer++ token merging: step speed-up and memory of HQ, fast, 2x2 and downsampling over the
unmerged model, each next to the multiply-add bound, side by side in one run.

    nice -n 10 .venv/bin/python benchmarks/train_token_merging.py --runs 3 --json train_tome.json

Per case (B2 1024x1024 batch 1, B0 1024x1024 batch 2; 19 classes, float32, random weights and labels):
- speed: one model, one AdamW; every round runs one training step (forward, loss, backward, optimiser step) of
  each strategy in turn (`utils.timing.time_interleaved`; the strategy is switched with `set_token_merging`,
  which only installs hooks), after `--warmup` untimed rounds. Medians; speed-up = unmerged median / median.
- bound: forward multiply-adds executed (`segformer.bench.count_macs`, as `segformer bench --token-merging`), unmerged
  / merged; the speed-up an implementation whose every op runs at matmul speed could reach (backward ~ 2x forward).
- memory, each strategy in its own child process (nothing another strategy allocated can hide its peak): weights,
  gradients-to-be and AdamW state are allocated first (one optimiser step on zero gradients), freed memory is
  handed back (malloc_trim) and the peak RSS (VmHWM) reset; then one training step. Reported: the peak RSS of the
  process during that step ("peak", as the paper's GPU figures count everything), its increase over the RSS
  before the step (activations and workspace), and the bytes autograd saved for backward (activations only,
  counted by `torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters excluded).

The paper's numbers (A100, Cityscapes B5 1024, batch 1 per GPU): HQ 1.40x at 34.0 vs 48.3 GB (0.70), 2x2 1.63x
at 31.1 GB (0.64), downsampling 2.95x at 10.0 GB. Its attention (mmcv's MultiheadAttention) keeps the N x M
attention matrix for backward; ours runs SDPA's fused kernel, which keeps only q, k, v, the output and the
log-sum-exp (tests/test_training_token_merging.py), so merging has less memory to remove here.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from segformer.bench import count_macs
from segformer.models import create_model
from segformer.utils.timing import time_interleaved

CASES = {"b2-1024-bs1": ("segformer-b2", 1024, 1), "b0-1024-bs2": ("segformer-b0", 1024, 2),
         "b0-256-bs1": ("segformer-b0", 256, 1)}  # the last: a smoke test of the script
DEFAULT_CASES = ["b2-1024-bs1", "b0-1024-bs2"]
STRATEGIES = ("none", "hq", "fast", "2x2", "downsample")
MATH_STRATEGIES = ("none", "hq", "2x2")  # memory also with the attention matrix kept, as the paper's attention does
PAPER = {"hq": (1.40, 0.70), "2x2": (1.63, 0.64), "downsample": (2.95, 10.0 / 48.3)}  # speed-up, memory ratio
NUM_CLASSES = 19


def setup(case: str, strategy: str):
    """Model (with `strategy`), AdamW and the training step on one fixed random batch."""
    name, size, batch = CASES[case]
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).train()
    model.set_token_merging(None if strategy == "none" else strategy)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step() -> None:
        loss = model.loss(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, optimizer, step


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def child(case: str, strategy: str, attention: str) -> dict:
    """One strategy's memory, measured in this (fresh) process; see the module docstring. attention "math": SDPA's
    unfused form, which keeps the N x M attention matrix for backward as the paper's mmcv attention does."""
    model, optimizer, step = setup(case, strategy)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # AdamW state exists from here on, as in any step after the first
    optimizer.zero_grad(set_to_none=True)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _status("VmRSS:")
    start = time.perf_counter()
    backend = SDPBackend.MATH if attention == "math" else SDPBackend.FLASH_ATTENTION
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), sdpa_kernel(backend):
        step()
    return {"peak_rss": _status("VmHWM:"), "rss_before": before, "step_increase": _status("VmHWM:") - before,
            "saved_for_backward": sum(saved.values()), "child_step_s": time.perf_counter() - start}


def measure_memory(case: str, strategy: str, attention: str = "fused") -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", case, strategy, attention], check=True,
                         capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{case} {strategy} {attention} memory: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def run_case(case: str, runs: int, warmup: int, math_attention: bool) -> dict:
    name, size, batch = CASES[case]
    model, _, _ = setup(case, "none")
    macs = {}
    for s in STRATEGIES:
        model.set_token_merging(None if s == "none" else s)
        macs[s] = count_macs(model, size, size)["gmacs_executed"]
    memory = {s: measure_memory(case, s) for s in STRATEGIES}
    math = {s: measure_memory(case, s, "math") for s in MATH_STRATEGIES} if math_attention else {}
    model, _, step = setup(case, "none")

    def candidate(s: str):
        def run() -> None:
            model.set_token_merging(None if s == "none" else s)
            start = time.perf_counter()
            step()
            print(f"{case} {s} step: {time.perf_counter() - start:.2f} s", file=sys.stderr, flush=True)
        return run

    times = time_interleaved({s: candidate(s) for s in STRATEGIES}, runs=runs, warmup=warmup)
    median = {s: statistics.median(t) for s, t in times.items()}
    rows = {}
    for s in STRATEGIES:
        rows[s] = {"median_s": median[s], "times_s": times[s], "speedup": median["none"] / median[s],
                   "gmacs_executed": macs[s], "macs_bound": macs["none"] / macs[s], **memory[s],
                   **{f"{k}_ratio": memory[s][k] / memory["none"][k]
                      for k in ("peak_rss", "step_increase", "saved_for_backward")}}
        if s in math:
            rows[s]["math_attention"] = {**math[s], "saved_for_backward_ratio": math[s]["saved_for_backward"]
                                         / math["none"]["saved_for_backward"],
                                         "peak_rss_ratio": math[s]["peak_rss"] / math["none"]["peak_rss"]}
    return {"model": name, "size": size, "batch": batch, "rows": rows}


def table(results: dict) -> str:
    mib = 2.0 ** 20
    lines = ["| case | strategy | step median (s) | speed-up | MAC bound | of bound | peak RSS (MiB) | ratio | "
             "step increase (MiB) | ratio | saved for backward (MiB) | ratio | with attention matrix kept: saved "
             "(MiB), ratio; peak ratio | paper (A100 B5): speed-up, memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, r in results["cases"].items():
        for s, row in r["rows"].items():
            paper, m = PAPER.get(s), row.get("math_attention")
            kept = f"{m['saved_for_backward'] / mib:.0f}, {m['saved_for_backward_ratio']:.2f}; " \
                   f"{m['peak_rss_ratio']:.2f} | " if m else "- | "
            lines.append(
                f"| {case} | {s} | {row['median_s']:.2f} | {row['speedup']:.2f}x | {row['macs_bound']:.2f}x | "
                f"{row['speedup'] / row['macs_bound']:.0%} | {row['peak_rss'] / mib:.0f} | "
                f"{row['peak_rss_ratio']:.2f} | "
                f"{row['step_increase'] / mib:.0f} | {row['step_increase_ratio']:.2f} | "
                f"{row['saved_for_backward'] / mib:.0f} | {row['saved_for_backward_ratio']:.2f} | "
                + kept + (f"{paper[0]:.2f}x, {paper[1]:.2f} |" if paper else "- |"))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=DEFAULT_CASES)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--math-cases", nargs="*", choices=list(CASES), default=["b0-1024-bs2"],
                   help="cases whose memory is also measured with the attention matrix kept (SDPA math)")
    p.add_argument("--json", help="write every number here")
    args = p.parse_args()
    results = {"runs": args.runs, "warmup": args.warmup, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_before": os.getloadavg(), "cases": {}}
    for case in args.cases:
        results["cases"][case] = run_case(case, args.runs, args.warmup, case in args.math_cases)
        print(f"{case} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    results["load_after"] = os.getloadavg()
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
