"""Pose parity with MMPose 1.3.2 (its own venv, `.venv-mmpose`): the heatmap codec (decode with the quarter-pixel
shift, flip test, encode), PCK, the affine crop matrix, the SegFormer++ heatmap head on random weights, and what
the reference's learning-rate schedule really does under MMEngine. One oracle run serves every test here.

The head comes from the SegFormer++ file itself when $SEGFORMERPP_POSE_HEAD names it (a checkout of
KieDani/SegformerPlusPlus: mmpose/mmpose/models/heads/heatmap_heads/segformer_head.py); otherwise the oracle
assembles the same head from MMPose/mmcv parts (both give identical outputs on the same weights)."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from helpers import ROOT, mmpose_oracle
from segformer.checkpoints import mmpose
from segformer.coco_eval import coco_detections, keypoint_ap
from segformer.data.keypoints import COCO_KEYPOINTS, COCO_UPPER_BODY, KeypointMeta, PersonInstance, open_keypoints
from segformer.data.pose_codec import HeatmapCodec, flip_heatmaps, warp_matrix
from segformer.data.pose_transforms import AugmentDraws, PoseTrainTransform, crop_window, warp_image
from segformer.data.synthetic_pose import figure
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


def _coco_case(folder, rng: np.random.Generator) -> dict:
    """A COCO keypoint file (persons of 1-4 per image, some nearly coinciding so that OKS-NMS has work, a crowd and
    an unlabelled one), and predictions: ground truth + noise of varied size, random keypoint scores."""
    images, anns = [], []
    for img in range(1, 11):
        images.append({"id": img, "file_name": f"{img}.png", "width": 400, "height": 300})
        for j in range(int(rng.integers(1, 5))):
            joints = figure(rng, rng.uniform([80, 140], [320, 180]), rng.uniform(60, 220))
            if j == 1 and img % 3 == 0:  # a near-duplicate of the first person: the two predictions overlap
                joints = np.array(anns[-1]["keypoints"]).reshape(17, 3)[:, :2] + rng.normal(0, 1.5, (17, 2))
            vis = np.where(rng.random(17) < 0.15, 0, 2)
            lo, hi = joints[vis > 0].min(0) - 5, joints[vis > 0].max(0) + 5
            anns.append({"id": 100 * img + j, "image_id": img, "category_id": 1, "iscrowd": 0,
                         "area": float(np.prod(hi - lo) * 0.6), "bbox": [*lo.tolist(), *(hi - lo).tolist()],
                         "num_keypoints": int((vis > 0).sum()),
                         "keypoints": np.concatenate([joints, vis[:, None]], 1).reshape(-1).tolist()})
    anns += [{**anns[0], "id": 9001, "iscrowd": 1}, {**anns[1], "id": 9002, "num_keypoints": 0, "keypoints": [0] * 51}]
    coco = {"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS), "skeleton": []}]}
    (folder / "annotations").mkdir()
    (folder / "annotations" / "val.json").write_text(json.dumps(coco))
    ds = open_keypoints(folder, "val")
    noise = rng.uniform(0.5, 15, (len(ds), 1, 1))
    scores = rng.uniform(0, 1, (len(ds), 17)).astype(np.float32)
    scores[2] *= 0.19  # no keypoint above 0.2: the person scores 0
    return dict(coco_ann_file=np.array(str(ds.annotation_file)),
                coco_ids=np.array([i.annotation_id for i in ds.instances]),
                coco_img_ids=np.array([i.image_id for i in ds.instances]),
                coco_keypoints=np.stack([i.keypoints for i in ds.instances]) + rng.normal(0, 1, (len(ds), 17, 2))
                * noise, coco_scores=scores,
                coco_bbox_scales=np.stack([crop_window(i.box, (144, 192))[1] for i in ds.instances]))


def _detection_case(folder, rng: np.random.Generator) -> dict:
    """A detector's output on the _coco_case images: a jittered box per annotated person (some missed, two found
    twice), false positives, a non-person detection and some below the score threshold; predictions for each
    person kept: the matched ground truth + noise, a random figure for false positives."""
    coco = json.loads((folder / "annotations" / "val.json").read_text())
    persons = [a for a in coco["annotations"] if not a["iscrowd"] and a["num_keypoints"]]
    dets, predictions, thr = [], [], 0.1
    for ann in persons:
        if rng.random() < 0.15:
            continue  # missed by the detector
        x, y, w, h = np.array(ann["bbox"]) + rng.normal(0, 4, 4)
        score = float(rng.uniform(0.02, 1.0))
        dets.append({"image_id": ann["image_id"], "category_id": 1, "bbox": [x, y, w, h], "score": score})
        joints = np.array(ann["keypoints"], np.float32).reshape(17, 3)[:, :2]
        predictions.append((score, joints + rng.normal(0, rng.uniform(0.5, 10), (17, 2))))
    for i in (0, 3):  # the detector fires twice on one person: OKS-NMS has work
        x, y, w, h = np.array(dets[i]["bbox"]) + rng.normal(0, 2, 4)
        score = float(rng.uniform(0.3, 0.9))
        dets.append({**dets[i], "bbox": [x, y, w, h], "score": score})
        predictions.append((score, predictions[i][1] + rng.normal(0, 0.5, (17, 2))))
    for img in rng.choice([i["id"] for i in coco["images"]], 6):
        x, y = rng.uniform(0, 250, 2)
        score = float(rng.uniform(0.05, 0.6))
        dets.append({"image_id": int(img), "category_id": 1, "bbox": [x, y, 60.0, 120.0], "score": score})
        predictions.append((score, figure(rng, np.array([x + 30, y + 60]), 110.0)))
    dets.append({**dets[0], "category_id": 2, "score": 0.99})  # not a person: dropped
    (folder / "detections.json").write_text(json.dumps(dets))
    kept = [joints for score, joints in predictions if score >= thr]
    return dict(det_file=np.array(str(folder / "detections.json")), det_thr=np.array(thr),
                det_keypoints=np.stack(kept).astype(np.float32),
                det_scores=rng.uniform(0, 1, (len(kept), 17)).astype(np.float32))


DRAWS = [AugmentDraws(), AugmentDraws(flip=True), AugmentDraws(True, False, True, (0.05, -0.08), 1.2, 30.0),
         AugmentDraws(False, True, True, (0.0, 0.0), 0.8, -45.0),
         AugmentDraws(True, True, False, (-0.1, 0.03), 1.3, 70.0),  # flipped lower half body
         AugmentDraws(False, False, True, (0.12, 0.1), 0.6, 10.0),
         AugmentDraws(True, True, True, (0.0, 0.0), 1.5, -80.0)]


def _augment_case(rng: np.random.Generator) -> dict:
    """An image (smooth colours + noise + a stick figure), one person and the draws of each case."""
    yy, xx = np.mgrid[:200, :260]
    smooth = np.stack([xx * 0.9, yy * 1.1, (xx + yy) * 0.5], -1) + rng.normal(0, 20, (200, 260, 3))
    joints = figure(rng, np.array([140.0, 115.0]), 150.0)
    visible = np.ones(17, np.float32)
    visible[[3, 14]] = 0
    box = np.concatenate([joints.min(0) - 8, joints.max(0) + 8]).astype(np.float32)
    return dict(aug_image=np.clip(smooth, 0, 255).astype(np.uint8), aug_box=box, aug_keypoints=joints,
                aug_visible=visible, aug_upper_ids=np.array(COCO_UPPER_BODY),
                aug_draws=np.array([[d.flip, d.half_body, d.prefer_upper, *d.shift, d.scale, d.rotation]
                                    for d in DRAWS], dtype=np.float64))


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
    inputs.update(_coco_case(folder, rng), **_augment_case(rng))
    inputs.update(_detection_case(folder, rng))
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


@pytest.mark.parametrize("mmpose_default", [True, False])
def test_coco_keypoint_ap_matches_mmpose_coco_metric(oracle, mmpose_default):
    """Our AP pipeline (rescoring + OKS-NMS, or neither) equals MMPose's CocoMetric (top-down defaults, or
    score_mode "bbox" without NMS) on the same predictions, to 1e-4 AP points."""
    pytest.importorskip("pycocotools")
    inputs, out = oracle
    ds = open_keypoints(inputs["coco_ann_file"].item().rsplit("/annotations/", 1)[0], "val")
    results = list(zip(ds.instances, inputs["coco_keypoints"], inputs["coco_scores"]))
    options = {} if mmpose_default else dict(score_keypoints=False, nms_thr=None)
    ours = keypoint_ap(ds, results, (144, 192), **options)
    name = "coco_default" if mmpose_default else "coco_plain"
    np.testing.assert_allclose([ours[k] for k in ("AP", "AP50", "AP75", "AR")], 100 * out[name], atol=1e-4, rtol=0)
    kept = len(coco_detections(results, 1, (144, 192), **options))
    assert kept == int(out[f"{name}_kept"])
    if mmpose_default:  # the case is a real one: NMS drops persons and rescoring moves AP
        assert kept < len(results) and abs(out["coco_default"][0] - out["coco_plain"][0]) > 1e-3


def test_keypoint_ap_on_detector_boxes_matches_mmpose(oracle):
    """A detector's boxes (MMPose's bbox_file) are read as MMPose's CocoDataset reads them (persons only, score
    threshold, ids), and AP on them (box score x keypoint score, OKS-NMS) equals CocoMetric's, to 1e-4 points."""
    pytest.importorskip("pycocotools")
    inputs, out = oracle
    root = inputs["coco_ann_file"].item().rsplit("/annotations/", 1)[0]
    ds = open_keypoints(root, "val", detections=inputs["det_file"].item(), box_score_thr=float(inputs["det_thr"]))
    np.testing.assert_allclose(np.stack([i.box for i in ds.instances]), out["det_boxes"], atol=1e-4)
    np.testing.assert_allclose([i.score for i in ds.instances], out["det_box_scores"], rtol=1e-6)
    assert [i.annotation_id for i in ds.instances] == out["det_ids"].tolist()
    assert [i.image_id for i in ds.instances] == out["det_img_ids"].tolist()
    results = list(zip(ds.instances, inputs["det_keypoints"], inputs["det_scores"]))
    ours = keypoint_ap(ds, results, (144, 192))
    np.testing.assert_allclose([ours[k] for k in ("AP", "AP50", "AP75", "AR")], 100 * out["det_ap"], atol=1e-4, rtol=0)
    assert len(coco_detections(results, 1, (144, 192))) == int(out["det_kept"]) < len(results)  # NMS had work
    assert 5 < ours["AP"] < 95  # neither empty nor perfect: misses, false positives and noise all count


def test_train_augmentation_matches_mmpose(oracle):
    """Flip (with the left/right swap), half body, box shift / scale / rotation with injected draws, then the
    affine crop and the targets: keypoints within 1e-4 px, weights and heatmaps equal, the crop (PIL's float
    bilinear here, cv2.warpAffine's fixed point there) within one grey level on under 0.1% of the pixels."""
    inputs, out = oracle
    meta = KeypointMeta()
    inst = PersonInstance(None, inputs["aug_box"], inputs["aug_keypoints"].astype(np.float32), inputs["aug_visible"],
                          1, 1, 0.0)
    transform = PoseTrainTransform((144, 192), meta, sigma=3.0)
    image = inputs["aug_image"]
    for i, draws in enumerate(DRAWS):
        matrix, keypoints, visible = transform.window(inst, image.shape[1], draws)
        np.testing.assert_allclose(keypoints, out[f"aug_{i}_keypoints"], atol=1e-4, rtol=0, err_msg=str(draws))
        heatmaps, weights = transform.codec.encode(keypoints, visible)
        np.testing.assert_array_equal(weights, out[f"aug_{i}_weights"])
        np.testing.assert_allclose(heatmaps, out[f"aug_{i}_heatmaps"], atol=1e-6, rtol=0)
        crop = warp_image(image, matrix, (144, 192)).astype(np.int16)
        diff = np.abs(crop - out[f"aug_{i}_crop"].astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # cv2 quantises sample positions to 1/32 px
    assert (out["aug_0_crop"] == 0).mean() > 0.02  # some windows reach past the image: the zero border is tested
