"""Pose parity with MMPose 1.3.2 (its own venv, `.venv-mmpose`): the heatmap codec (decode with the quarter-pixel
shift, flip test, encode), PCK, the affine crop matrix, the SegFormer++ heatmap head on random weights, and what
the reference's learning-rate schedule really does under MMEngine. One oracle run serves every test here.

The head comes from the SegFormer++ file itself when $SEGFORMERPP_POSE_HEAD names it (a checkout of
KieDani/SegformerPlusPlus: mmpose/mmpose/models/heads/heatmap_heads/segformer_head.py); otherwise the oracle
assembles the same head from MMPose/mmcv parts (both give identical outputs on the same weights)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch

from helpers import ROOT, mmpose_oracle
from segformer.checkpoints import mmpose
from segformer.data.pose_codec import HeatmapCodec, flip_heatmaps, warp_matrix
from segformer.models import create_model
from segformer.pose_evaluation import pck_accuracy
from segformer.training.config import load_config
from segformer.training.optim import LRSchedule

pytestmark = pytest.mark.mmpose
FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
RECIPE = ROOT / "configs" / "segformer_b0_coco_pose_384x288.yaml"


def _heatmaps(rng: np.random.Generator) -> np.ndarray:
    """Gaussian blobs at random places (some on the borders), plus one all-negative and one tied map."""
    n, k, h, w = 4, 17, 48, 36
    yy, xx = np.mgrid[:h, :w]
    cx = rng.uniform(-1, w, (n, k, 1, 1))
    cy = rng.uniform(-1, h, (n, k, 1, 1))
    cx[0, :4], cy[0, 4:8] = [[[0]], [[1]], [[w - 1]], [[w - 2]]], [[[0]], [[1]], [[h - 1]], [[h - 2]]]
    maps = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0) + rng.normal(0, 0.02, (n, k, h, w))
    maps[1, 0] = -np.abs(maps[1, 0]) - 0.1
    maps[1, 1] = 0.5
    return maps.astype(np.float32)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    python, _ = mmpose_oracle()
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("mmpose")
    pred = rng.uniform(0, 100, (30, 17, 2)).astype(np.float32)
    gt = (pred + rng.normal(0, 8, pred.shape)).astype(np.float32)
    norm = rng.uniform(50, 150, (30, 1)).repeat(2, 1).astype(np.float32)
    norm[3] = 0  # an instance without a box size is skipped
    mask = rng.random((30, 17)) > 0.2
    mask[:, 5] = False  # a keypoint never labelled: left out of the mean
    enc_kp = rng.uniform(-40, 330, (12, 17, 2)).astype(np.float32)
    enc_kp[0, :3] = [[-0.7, 5], [287.6, 383.4], [-30, -30]]  # truncation toward zero, edges, far outside
    enc_vis = (rng.random((12, 17)) > 0.15).astype(np.float32)
    inputs = dict(heatmaps=_heatmaps(rng), flipped=_heatmaps(rng), flip_indices=np.array(FLIP),
                  input_size=np.array([144, 192]), pck_pred=pred, pck_gt=gt, pck_mask=mask, pck_norm=norm,
                  pck_thrs=np.array([0.05, 0.1, 0.2]), enc_keypoints=enc_kp, enc_visible=enc_vis,
                  heatmap_size=np.array([36, 48]), sigma=np.array(3.0),
                  head_in_channels=np.array([32, 64, 160, 256]), head_keypoints=np.array(17),
                  head_input_hw=np.array([96, 72]), warp_center=rng.uniform(0, 500, (6, 2)),
                  warp_scale=rng.uniform(30, 400, (6, 2)), warp_rot=rng.uniform(-80, 80, 6),
                  sched_epochs=np.array(210), sched_epoch_len=np.array(7))
    np.savez(folder / "in.npz", **inputs)
    script = ROOT / "tests" / "oracles" / "mmpose_oracle.py"
    cmd = [python, str(script), str(folder / "in.npz"), str(folder / "out.npz")]
    if os.environ.get("SEGFORMERPP_POSE_HEAD"):
        cmd += ["--reference-head", os.environ["SEGFORMERPP_POSE_HEAD"]]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return inputs, dict(np.load(folder / "out.npz"))


def test_decode_and_flip_test_match_mmpose(oracle):
    inputs, out = oracle
    codec = HeatmapCodec(input_size=(144, 192), heatmap_size=(36, 48))
    keypoints, scores = codec.decode(inputs["heatmaps"])
    for i in range(len(inputs["heatmaps"])):
        np.testing.assert_allclose(keypoints[i], out[f"decoded_{i}_keypoints"][0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(scores[i], out[f"decoded_{i}_scores"][0], atol=1e-5, rtol=0)
    back = flip_heatmaps(torch.from_numpy(inputs["flipped"]), FLIP, shift=True)
    keypoints, scores = codec.decode(((torch.from_numpy(inputs["heatmaps"]) + back) * 0.5).numpy())
    np.testing.assert_allclose(keypoints, out["flip_keypoints"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores, out["flip_scores"], atol=1e-5, rtol=0)


def test_pck_matches_mmpose(oracle):
    inputs, out = oracle
    ours = [pck_accuracy(inputs["pck_pred"], inputs["pck_gt"], inputs["pck_mask"], thr, inputs["pck_norm"])
            for thr in inputs["pck_thrs"]]
    np.testing.assert_allclose(ours, out["pck"], atol=1e-5, rtol=0)
    assert 0.1 < ours[0] < ours[2] < 1.0  # the thresholds separate: a real check, not all 0 or 1


def test_encode_and_crop_matrix_match_mmpose(oracle):
    inputs, out = oracle
    codec = HeatmapCodec(input_size=(144, 192), heatmap_size=(36, 48), sigma=3.0)
    for i, (kp, vis) in enumerate(zip(inputs["enc_keypoints"], inputs["enc_visible"])):
        heatmaps, weights = codec.encode(kp, vis)
        np.testing.assert_allclose(heatmaps, out[f"enc_{i}_heatmaps"], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(weights, out[f"enc_{i}_weights"])
    assert any((out[f"enc_{i}_weights"] == 0).sum() > (inputs["enc_visible"][i] == 0).sum() for i in range(12))
    for c, s, r, ref in zip(inputs["warp_center"], inputs["warp_scale"], inputs["warp_rot"], out["warp"]):
        np.testing.assert_allclose(warp_matrix(c, s, r, (144, 192)), ref, rtol=1e-4, atol=2e-3)


def test_pose_head_matches_reference_head(oracle):
    _, out = oracle
    state = {f"head.{k[len('head_state_'):]}": torch.from_numpy(v)
             for k, v in out.items() if k.startswith("head_state_")}
    native, unknown = mmpose.to_native(state)
    assert not unknown
    model = create_model("segformer-b0-pose", num_keypoints=17).eval()
    head = {k[len("decode_head."):]: v for k, v in native.items()}
    model.decode_head.load_state_dict(head, strict=True)
    feats = [torch.from_numpy(out[f"head_feat_{i}"]) for i in range(4)]
    with torch.no_grad():
        ours = model.decode_head(feats)
    assert ours.shape == out["head_out"].shape
    np.testing.assert_allclose(ours.numpy(), out["head_out"], atol=1e-4, rtol=0)
    assert np.abs(out["head_out"]).max() > 0.1  # random weights drive the output well away from zero


def test_recipe_schedule_is_what_mmengine_ran(oracle):
    """The reference's MultiStepLR(end=70, milestones 170/200) never fires: after the 500-iteration warm-up the
    lr stays at 5e-4 for all 210 epochs. Our recipe (warm-up + poly power 0) gives the same lr every iteration."""
    _, out = oracle
    config = load_config(RECIPE)
    reference = out["sched_lr"]
    assert reference[-1] == pytest.approx(5e-4)  # constant to the end: no decay at epoch 170 or 200
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    schedule = LRSchedule(opt, len(reference), config.warmup_iters, config.warmup_ratio, config.power, config.min_lr)
    np.testing.assert_allclose([schedule.lr_at(t, config.lr) for t in range(len(reference))], reference, rtol=1e-9)
