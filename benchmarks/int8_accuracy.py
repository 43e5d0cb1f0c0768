"""int8 (NNCF post-training quantization of the encoder's linear layers, OpenVINO) vs float32 on a trained
model: mIoU on its validation set and speed (issue 19).

    .venv/bin/python benchmarks/int8_accuracy.py --model demo_out/run/final --data demo_out/data --sizes 512

Exports the model twice with the command a user runs (`segformer export --format openvino`, with and without
`--int8 --calib DATA`), evaluates PyTorch, OpenVINO f32 and OpenVINO int8 on the validation split with
`segformer.evaluation.evaluate`, then times the three on random input at each `--sizes`, interleaved round
by round (medians).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import segformer
from segformer.cli import main as cli
from segformer.data import open_dataset
from segformer.evaluation import evaluate
from segformer.runtimes import load_runner
from segformer.runtimes.probe import time_interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--calib-size", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    model = segformer.load_model(args.model).eval()
    dataset = open_dataset(args.data, args.split, num_classes=model.config.num_classes)
    with tempfile.TemporaryDirectory() as tmp:
        f32, int8 = Path(tmp) / "f32.xml", Path(tmp) / "int8.xml"
        assert cli(["export", "--model", args.model, "--format", "openvino", "--out", str(f32)]) == 0
        assert cli(["export", "--model", args.model, "--format", "openvino", "--out", str(int8), "--int8",
                    "--calib", args.data, "--calib-split", args.split, "--calib-size", str(args.calib_size)]) == 0
        runners = {"PyTorch fp32": model, "OpenVINO f32": load_runner(f32), "OpenVINO int8": load_runner(int8)}
        scores = {k: evaluate(r, dataset, progress=False) for k, r in runners.items()}
        print(f"\n{args.model} on {args.data} ({args.split}, {len(dataset)} images, calibrated on "
              f"min({args.calib_size}, {len(dataset)}) of them), {torch.get_num_threads()} threads")
        print("| runner | mIoU | aAcc | " + " | ".join(f"{s}x{s} median (s) | vs PyTorch" for s in args.sizes) + " |")
        print("|---|---|---|" + "---|---|" * len(args.sizes))
        # fresh runners for timing: evaluating images of many sizes spent the runners' static-compile budget
        runners = {"PyTorch fp32": model, "OpenVINO f32": load_runner(f32), "OpenVINO int8": load_runner(int8)}
        medians = {}
        for size in args.sizes:
            x = torch.randn(1, 3, size, size)
            with torch.inference_mode():
                calls = {k: (lambda r=r, x=x: r(x)) for k, r in runners.items()}
                medians[size] = time_interleaved(calls, runs=args.runs, warmup=2)  # 2nd call: static compile
        for k in runners:
            cells = " | ".join(f"{medians[s][k]:.3f} | {medians[s]['PyTorch fp32'] / medians[s][k]:.2f}x"
                               for s in args.sizes)
            print(f"| {k} | {scores[k]['mIoU']:.2f} | {scores[k]['aAcc']:.2f} | {cells} |")
        drop = scores["OpenVINO f32"]["mIoU"] - scores["OpenVINO int8"]["mIoU"]
        print(f"int8 mIoU change vs OpenVINO f32: {-drop:+.2f} points")


if __name__ == "__main__":
    main()
