"""Quality of a model trained with SegFormer++ HQ token merging: SegFormer-B0 from random weights on the synthetic
set (`segformer synth`), the same run with and without merging (same seed, data order and budget), each scored
on the validation split with and without merging.

    nice -n 10 .venv/bin/python benchmarks/train_token_merging_quality.py --iters 300 --json quality.json

Crops are 128x128 (images 128-160 px), so that every stage's token grid holds HQ's merge cells (stride 4 at
stage 4 needs a 4x4 grid: 128 px). Acceptance: the HQ-trained model's mIoU (evaluated with HQ, as its final/
records) is within 3 points of the unmerged run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import segformer
from segformer.data.datasets import open_dataset
from segformer.data.synthetic import write_synthetic
from segformer.evaluation import evaluate
from segformer.training import TrainConfig, train

SCALE = (160, 128)


def run(data: Path, out: Path, strategy: str | None, iters: int, batch: int) -> dict:
    config = TrainConfig(model="segformer-b0", model_args={"drop_path_rate": 0.0, "decoder_dropout": 0.0},
                         data=str(data), crop_size=(128, 128), scale=SCALE, ratio_range=(1.0, 1.0), photometric=False,
                         batch_size=batch, iters=iters, lr=6e-4, head_lr_mult=10.0, warmup_iters=20, eval_interval=0,
                         checkpoint_interval=iters, log_interval=50, num_workers=0, progress=False, seed=0,
                         token_merging=strategy, out=str(out))
    start = time.perf_counter()
    metrics = train(config)
    seconds = time.perf_counter() - start
    model = segformer.load_model(out / "final")
    val = open_dataset(data, "val")
    scores = {}
    for other in (None, "hq"):
        model.set_token_merging(other)
        scores[other or "none"] = evaluate(model, val, scale=SCALE, progress=False)["mIoU"]
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    return {"trained_with": strategy or "none", "final_mIoU": metrics["mIoU"], "eval_mIoU": scores,
            "train_seconds": seconds, "first_loss": losses[0], "last_loss": losses[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--train-images", type=int, default=400)
    p.add_argument("--val-images", type=int, default=40)
    p.add_argument("--json", help="write every number here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic(Path(tmp) / "data", num_train=args.train_images, num_val=args.val_images,
                               min_size=128, max_size=160)
        results = {"iters": args.iters, "batch": args.batch, "threads": torch.get_num_threads(),
                   "load_before": os.getloadavg(), "runs": []}
        for strategy in (None, "hq"):
            results["runs"].append(run(data, Path(tmp) / f"run_{strategy}", strategy, args.iters, args.batch))
            print(json.dumps(results["runs"][-1]), file=sys.stderr, flush=True)
    results["load_after"] = os.getloadavg()
    plain, merged = results["runs"]
    results["gap"] = plain["final_mIoU"] - merged["final_mIoU"]
    print("| trained | train time (s) | loss first -> last | mIoU evaluated unmerged | mIoU evaluated with HQ |")
    print("|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['trained_with']} | {r['train_seconds']:.0f} | {r['first_loss']:.3f} -> {r['last_loss']:.3f} | "
              f"{r['eval_mIoU']['none']:.2f} | {r['eval_mIoU']['hq']:.2f} |")
    print(f"gap (unmerged run - HQ run, each as trained): {results['gap']:.2f} points (floor: within 3)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
