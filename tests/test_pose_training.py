"""Learning: SegFormer-B0 pose from random weights on the synthetic stick-figure set, through the trainer and the
CLI's eval. At 64x48 px, batch 16, 200 steps (measured: PCK@0.1 ~70 after 240 steps, see benchmarks/RESULTS.md);
a model that has learnt nothing puts every keypoint at one spot and scores PCK@0.1 below 10."""

from __future__ import annotations

import json

from segformer.cli import main
from segformer.data.synthetic_pose import write_synthetic_pose
from segformer.training.config import TrainConfig
from segformer.training.trainer import train


def test_segformer_b0_pose_learns_the_synthetic_set_from_scratch(tmp_path, capsys):
    data = write_synthetic_pose(tmp_path / "data", num_train=400, num_val=40)
    config = TrainConfig(model="segformer-b0-pose", model_args={"drop_path_rate": 0.0}, data=str(data),
                         crop_size=(64, 48), sigma=2.0, batch_size=16, iters=200, lr=2e-3, head_lr_mult=1.0,
                         no_decay="none", warmup_iters=50, warmup_ratio=0.001, eval_interval=0,
                         checkpoint_interval=200, log_interval=50, num_workers=0, progress=False,
                         out=str(tmp_path / "run"))
    metrics = train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    assert metrics["PCK@0.1"] >= 50 and metrics["PCK@0.05"] < metrics["PCK@0.1"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["PCK@0.1"] == metrics["PCK@0.1"]
    assert (tmp_path / "run" / "plots" / "pck.png").is_file()
    assert main(["eval", "--model", str(tmp_path / "run" / "final"), "--data", str(data), "--crop", "64", "48"]) == 0
    assert f"PCK@0.1 {metrics['PCK@0.1']:.2f}" in capsys.readouterr().out  # the saved model scores the same
