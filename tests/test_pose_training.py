"""Learning: a top-down pose model from random weights on the synthetic stick-figure set, through the trainer
(save_best on PCK@0.1) and the CLI's eval. B0 itself and its numbers are in benchmarks/pose_synthetic.py; to stay
cheap this trains a narrow MiT (one block per stage, widths 16-128, 0.46M parameters) for 120 steps at 64x48
(~40 s on the loaded 2-core machine, a third of it torch's one-off optimizer import).

What proves learning: on ground-truth boxes a model that ignores the image but has learnt the mean pose inside
the box already scores PCK@0.1 ~70 here (the boxes hug the figures), so that number alone proves little. With
every test window shifted by 15% of the box in x and y, the mean pose scores ~3: only a model that finds the
joints in the pixels scores well there (measured: 29.4 against the mean pose's 3.1 after these 120 steps, 60.4
on the ground-truth windows; B0 after 200 steps: 53.6 shifted, 73.5 plain)."""

from __future__ import annotations

import json

from segformer import load_model
from segformer.cli import main
from segformer.data.keypoints import open_keypoints
from segformer.data.synthetic_pose import write_synthetic_pose
from segformer.pose_evaluation import shifted_window_pck
from segformer.training.config import TrainConfig
from segformer.training.trainer import train

NARROW = {"depths": [1, 1, 1, 1], "embed_dims": [16, 32, 64, 128], "num_heads": [1, 1, 2, 4], "decoder_dim": 64,
          "drop_path_rate": 0.0}


def test_pose_model_learns_the_synthetic_set_from_scratch(tmp_path, capsys):
    data = write_synthetic_pose(tmp_path / "data", num_train=120, num_val=30)
    config = TrainConfig(model="segformer-b0-pose", model_args=NARROW, data=str(data), crop_size=(64, 48), sigma=2.0,
                         batch_size=16, iters=120, lr=5e-3, head_lr_mult=1.0, no_decay="none", warmup_iters=12,
                         warmup_ratio=0.001, eval_interval=0, save_best="PCK@0.1", checkpoint_interval=120,
                         log_interval=25, num_workers=0, progress=False, out=str(tmp_path / "run"))
    metrics = train(config)
    run = tmp_path / "run"
    losses = [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    assert metrics["PCK@0.1"] >= 50 and metrics["PCK@0.05"] < metrics["PCK@0.1"]
    assert json.loads((run / "metrics.json").read_text())["PCK@0.1"] == metrics["PCK@0.1"]
    assert json.loads((run / "best" / "metrics.json").read_text())["PCK@0.1"] == metrics["PCK@0.1"]  # save_best
    assert (run / "plots" / "pck.png").is_file()
    moved = shifted_window_pck(load_model(run / "final").eval(), open_keypoints(data, "train"),
                               open_keypoints(data, "val"), input_size=(48, 64))
    model_pck, prior_pck = moved["model PCK@0.1"], moved["mean pose PCK@0.1"]
    assert prior_pck < 10 and model_pck >= 15 and model_pck > 3 * prior_pck, moved
    assert main(["eval", "--model", str(run / "final"), "--data", str(data), "--crop", "64", "48"]) == 0
    assert f"PCK@0.1 {metrics['PCK@0.1']:.2f}" in capsys.readouterr().out  # the saved model scores the same
