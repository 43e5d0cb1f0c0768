"""`segformer bench`: parameters, GMACs, latency, throughput and peak memory."""

from __future__ import annotations

import argparse

from .common import RANDOM_HELP, add_json_args, add_model_args, device_of, json_out, load_for_bench, parse_size
from .runtimes import add_runtime_arg


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="parameters, GMACs, latency, throughput and peak memory (optionally vs HF)",
                       description="Times one random batch after warm-up (median/min/max). GMACs are per image: "
                                   "'gmacs' counts the architecture as the papers do (attention products included, "
                                   "textbook All-MLP decoder), 'gmacs_executed' what this implementation runs.")
    add_model_args(p, RANDOM_HELP, dtype_help="autocast dtype (default float32: no autocast)")
    p.add_argument("--size", default="512x512", help="input HxW, or one int for a square (default 512x512)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--compare", choices=["hf"], help="also time transformers' model with the same weights, "
                                                      "interleaved, and print the ratio")
    p.add_argument("--train", action="store_true", help="time forward + backward + AdamW step instead of inference")
    p.add_argument("--runs", type=int, default=10, help="timed runs (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    add_json_args(p, "also every number (and the settings)")
    add_runtime_arg(p)
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from ..bench import benchmark, hf_twin
    from ..runtimes import select_runtime
    from ..utils.io import write_json

    height, width = parse_size(args.size, "--size")
    out = json_out(args)
    model = load_for_bench(args.model, args.token_merging)
    reference = hf_twin(model) if args.compare == "hf" else None  # before merging: HF runs the exact model
    if args.token_merging is not None:
        model.set_token_merging(args.token_merging)
    device = device_of(args)
    runner, runtime = None, "torch"
    if not args.train:  # bench measures the dtype asked for: no bf16 guard here
        runner, choice = select_runtime(model.to(device).eval(), (height, width), runtime=args.runtime,
                                        device=device, dtype=args.dtype)
        print(choice.describe())
        runtime = choice.runtime
        runner = None if runner is model else runner
    r = benchmark(model, height, width, batch=args.batch, dtype=args.dtype, device=device, runs=args.runs,
                  warmup=args.warmup, train=args.train, reference=reference, runner=runner)
    settings = {"model": args.model, "size": [height, width], "batch": args.batch, "dtype": args.dtype,
                "runtime": runtime,
                "token_merging": args.token_merging, "mode": "train" if args.train else "inference",
                "device": device, "runs": args.runs, "warmup": args.warmup}
    _print_report(r, settings, with_reference=reference is not None)
    if out is not None:
        write_json(out, {**r, "settings": settings}, overwrite=args.overwrite)
        print(f"wrote {out}")
    return 0


def _print_report(r: dict, settings: dict, with_reference: bool) -> None:
    mib = 2.0 ** 20

    def mem(prefix: str) -> str:
        peak, increase = r[prefix + "peak_memory_bytes"], r[prefix + "peak_memory_increase_bytes"]
        return "n/a" if peak is None else f"{peak / mib:.0f} MiB (+{(increase or 0) / mib:.0f} during the step)"

    (height, width), s = settings["size"], settings
    print(f"{s['model']} {height}x{width} batch {s['batch']} {s['dtype']} {s['mode']} on {s['device']} "
          f"({s['runtime']}) (torch {r['torch']}, {r['threads']} threads)")
    print(f"params {r['params']:,}  GMACs {r['gmacs']:.2f} (executed {r['gmacs_executed']:.2f}, attention "
          f"{r['attention_gmacs']:.2f})")
    for prefix, label in [("", "ours"), ("hf_", "HF")] if with_reference else [("", "ours")]:
        print(f"{label:5s} latency median {r[prefix + 'latency_median_s'] * 1e3:.1f} ms (min "
              f"{r[prefix + 'latency_min_s'] * 1e3:.1f}, max {r[prefix + 'latency_max_s'] * 1e3:.1f})  "
              f"throughput {r[prefix + 'throughput_img_s']:.2f} img/s  peak memory {mem(prefix)}"
              f" [{r['memory_kind']}]")
    if with_reference:
        diff = r.get("hf_max_abs_diff")
        print(f"speed-up vs HF {r['speedup_vs_hf']:.2f}x" + (f"  fp32 max abs logit diff {diff:.1e}" if diff is not None
                                                             else ""))
