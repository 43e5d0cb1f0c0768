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

import numpy as np

from segformer import load_model
from segformer.cli import main
from segformer.data.keypoints import open_keypoints
from segformer.data.synthetic_pose import write_synthetic_pose
from segformer.pose_evaluation import pck_accuracy
from segformer.pose_inference import predict_batch
from segformer.training.config import TrainConfig
from segformer.training.trainer import train

NARROW = {"depths": [1, 1, 1, 1], "embed_dims": [16, 32, 64, 128], "num_heads": [1, 1, 2, 4], "decoder_dim": 64,
          "drop_path_rate": 0.0}


def _mean_pose(dataset) -> np.ndarray:
    """The training set's mean keypoint positions relative to the box center, in units of the box's longer side."""
    rel = np.stack([(i.keypoints - (i.box[:2] + i.box[2:]) / 2) / (i.box[2:] - i.box[:2]).max()
                    for i in dataset.instances])
    seen = np.stack([i.visible for i in dataset.instances])[..., None]
    return (rel * seen).sum(0) / seen.sum(0)


def _shifted_window_pck(model, train_set, val_set) -> tuple[float, float]:
    """PCK@0.1 (percent) of the model and of the mean pose when each test window is moved by 15% of its box."""
    images, insts = zip(*(val_set.load(i) for i in range(len(val_set))))
    boxes = np.stack([i.box for i in insts])
    size = boxes[:, 2:] - boxes[:, :2]
    shift = 0.15 * size * np.random.default_rng(0).choice([-1, 1], size=size.shape)
    moved = boxes + np.concatenate([shift, shift], axis=1)
    keypoints, _ = predict_batch(model, images, moved, (48, 64), flip_indices=val_set.meta.flip_indices)
    norm = size.max(axis=1, keepdims=True).repeat(2, axis=1)
    prior = _mean_pose(train_set)[None] * norm[:, None] + ((moved[:, :2] + moved[:, 2:]) / 2)[:, None]
    gt, seen = np.stack([i.keypoints for i in insts]), np.stack([i.visible for i in insts]) > 0
    return (100 * pck_accuracy(keypoints, gt, seen, 0.1, norm), 100 * pck_accuracy(prior, gt, seen, 0.1, norm))


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
    model_pck, prior_pck = _shifted_window_pck(load_model(run / "final").eval(), open_keypoints(data, "train"),
                                               open_keypoints(data, "val"))
    assert prior_pck < 10 and model_pck >= 15 and model_pck > 3 * prior_pck, (model_pck, prior_pck)
    assert main(["eval", "--model", str(run / "final"), "--data", str(data), "--crop", "64", "48"]) == 0
    assert f"PCK@0.1 {metrics['PCK@0.1']:.2f}" in capsys.readouterr().out  # the saved model scores the same
