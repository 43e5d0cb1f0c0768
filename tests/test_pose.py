"""Pose: the model (zoo, token merging, save / load / convert, encoder-only start, MMPose layout), the codec and
crop geometry, PCK, the COCO-format reader, the synthetic set and the CLI. Parity with MMPose itself is in
test_pose_mmpose_parity.py; learning in test_pose_training.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import segformer
from segformer.checkpoints import convert, detect_format, load_model, nvlabs
from segformer.cli import main
from segformer.data.keypoints import KeypointDataset, KeypointMeta, open_keypoints
from segformer.data.pose_codec import HeatmapCodec, apply_affine, input_to_image, warp_matrix
from segformer.data.pose_transforms import PoseTrainTransform, crop_window
from segformer.data.synthetic_pose import write_synthetic_pose
from segformer.pose_evaluation import pck_accuracy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pose_model():
    torch.manual_seed(0)
    return segformer.create_model("segformer-b0-pose").eval()


def test_zoo_pose_models(pose_model):
    assert {f"segformer-b{i}-pose" for i in range(6)} <= set(segformer.list_models())
    cfg = pose_model.config
    assert (cfg.task, cfg.num_classes, cfg.decoder_style, cfg.decoder_dim, cfg.decoder_dropout) == (
        "pose", 17, "mmseg", 256, 0.0)
    assert cfg.encoder.block_eps == 1e-6  # mmseg's MiT, as the reference's backbone
    b5 = segformer.models.model_config("segformer-b5-pose", num_keypoints=20)
    assert b5.num_classes == 20 and b5.encoder.depths == (3, 6, 40, 3)
    with pytest.raises(ValueError, match="num_keypoints is for pose models"):
        segformer.create_model("segformer-b0", num_keypoints=3)
    final = pose_model.decode_head.classifier
    assert final.weight.std() < 0.002 and (final.bias == 0).all()  # MMPose's init: normal(0, 0.001)


def test_heatmaps_and_token_merging(pose_model):
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        plain = pose_model(x)
        assert plain.shape == (2, 17, 64, 48)
        for preset in ("hq", "fast", "2x2"):
            pose_model.set_token_merging(preset)
            merged = pose_model(x)
            assert merged.shape == plain.shape and not torch.equal(merged, plain)
        pose_model.set_token_merging(None)
        assert torch.equal(pose_model(x), plain)
        hq = segformer.create_model("segformer-b0-pose", token_merging="hq")
        assert hq.config.token_merging is not None


def test_loss_is_weighted_mse(pose_model):
    pred, target = torch.randn(2, 17, 8, 6), torch.rand(2, 17, 8, 6)
    weights = torch.ones(2, 17)
    weights[0, 3] = 0
    expected = ((pred - target) ** 2 * weights[:, :, None, None]).mean()
    assert torch.allclose(pose_model.loss(pred, (target, weights)), expected)
    with pytest.raises(ValueError, match="weights"):
        pose_model.loss(pred, (target, torch.ones(17)))


def test_save_load_convert_mmpose(pose_model, tmp_path):
    x = torch.randn(1, 3, 128, 96)
    pose_model.save_pretrained(tmp_path / "ours")
    again = load_model(tmp_path / "ours").eval()
    convert(tmp_path / "ours", tmp_path / "ref.pth", to="mmpose")
    sd = torch.load(tmp_path / "ref.pth", weights_only=True)["state_dict"]
    assert detect_format(list(sd)) == "mmpose"
    assert {"head.final_layer.weight", "head.fusion_conv.conv.weight", "head.convs.3.bn.running_var",
            "backbone.layers.0.0.projection.weight"} <= set(sd)
    bare = {k: v for k, v in sd.items() if k != "meta"}
    torch.save({"state_dict": bare}, tmp_path / "bare.pth")  # no config inside: shapes and keys decide
    ref = load_model(tmp_path / "bare.pth").eval()
    assert ref.config.task == "pose" and ref.config.num_classes == 17 and ref.config.decoder_dropout == 0.0
    with torch.no_grad():
        assert torch.equal(again(x), pose_model(x))
        assert torch.allclose(ref(x), pose_model(x), atol=1e-6)


def test_encoder_only_checkpoint_gets_a_fresh_pose_head(tmp_path):
    seg = segformer.create_model("segformer-b0")
    encoder = nvlabs.KEYS.from_native({k: v for k, v in seg.state_dict().items() if k.startswith("encoder.")})
    torch.save(encoder, tmp_path / "mit_b0.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(tmp_path / "mit_b0.pth", task="pose", num_keypoints=20)
    assert any("pose head" in str(w.message) for w in caught)
    assert model.config.task == "pose" and model.config.num_classes == 20
    assert torch.equal(model.encoder.stages[2].blocks[1].mlp.fc2.weight, seg.encoder.stages[2].blocks[1].mlp.fc2.weight)
    assert model.config.encoder.patch_embed_eps == 1e-5  # the checkpoint's (NVlabs) eps are kept


def test_codec_round_trip():
    codec = HeatmapCodec((192, 256), sigma=2.0)
    rng = np.random.default_rng(0)
    points = rng.uniform(8, 180, (17, 2)).astype(np.float32)
    visible = np.ones(17, np.float32)
    visible[4] = 0
    heatmaps, weights = codec.encode(points, visible)
    assert heatmaps.shape == (17, 64, 48) and weights[4] == 0 and heatmaps[4].max() == 0
    decoded, scores = codec.decode(heatmaps)
    ok = visible > 0
    assert np.abs(decoded[ok] - points[ok]).max() <= 4 * 0.75 and (scores[ok] == 1).all()
    far, w = codec.encode(np.array([[-100.0, -100.0]]), np.ones(1))
    assert w[0] == 0 and far.max() == 0


def test_crop_geometry_round_trip():
    box = np.array([40.0, 30.0, 140.0, 330.0])
    center, scale = crop_window(box, (288, 384))
    assert scale[0] / scale[1] == pytest.approx(0.75) and scale[1] == pytest.approx(300 * 1.25)
    matrix = warp_matrix(center, scale, 0.0, (288, 384))
    points = np.array([[50.0, 40.0], [90.0, 180.0], [139.0, 329.0]])
    back = input_to_image(apply_affine(points, matrix)[None].astype(np.float32), center[None], scale[None], (288, 384))
    np.testing.assert_allclose(back[0], points, atol=1e-3)


def test_pck_by_hand():
    gt = np.zeros((2, 2, 2), np.float32)
    pred = np.array([[[5, 0], [30, 0]], [[0, 0], [8, 0]]], np.float32)
    mask = np.array([[True, True], [True, False]])
    norm = np.full((2, 2), 100.0, np.float32)
    # keypoint 0: distances 0.05, 0 -> both within 0.1; keypoint 1: 0.3 (the other is unlabelled) -> 0
    assert pck_accuracy(pred, gt, mask, 0.1, norm) == pytest.approx(0.5)
    assert pck_accuracy(pred, gt, mask, 0.04, norm) == pytest.approx(0.25)


def test_meta_flip_pairs_and_custom_category():
    assert KeypointMeta().flip_indices == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    meta = KeypointMeta.from_category({"keypoints": ["head", "left_hand", "right_hand", "left_foot", "right_foot"],
                                       "skeleton": [[1, 2], [1, 3]]})
    assert meta.flip_indices == [0, 2, 1, 4, 3] and meta.skeleton == ((0, 1), (0, 2)) and meta.upper_body == (0, 1, 2)


def _coco(tmp_path, annotations):
    (tmp_path / "images" / "val").mkdir(parents=True)
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}], "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"]}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "val.json").write_text(json.dumps(data))
    return tmp_path


def test_reader_skips_what_mmpose_skips(tmp_path):
    kp = [10, 10, 2, 20, 10, 1, 0, 0, 0]
    root = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "bbox": [-5, 5, 150, 50], "keypoints": kp, "num_keypoints": 2},  # clipped box
        {"id": 2, "image_id": 1, "bbox": [0, 0, 50, 50], "keypoints": kp, "iscrowd": 1},
        {"id": 3, "image_id": 1, "bbox": [0, 0, 50, 50], "keypoints": [0] * 9, "num_keypoints": 0},
        {"id": 4, "image_id": 1, "bbox": [10, 10, 0, 20], "keypoints": kp}])
    ds = open_keypoints(root, "val")
    assert [i.annotation_id for i in ds.instances] == [1] and ds.num_classes == 3
    np.testing.assert_array_equal(ds.instances[0].box, [0, 5, 99, 55])
    np.testing.assert_array_equal(ds.instances[0].visible, [1, 1, 0])
    with pytest.raises(FileNotFoundError, match="a.png"):
        ds.load(0)
    with pytest.raises(FileNotFoundError, match="person_keypoints_train2017.json"):
        open_keypoints(root, "train")


def test_synthetic_set_and_train_transform(tmp_path):
    root = write_synthetic_pose(tmp_path / "s", num_train=6, num_val=2)
    ds = open_keypoints(root, "train")
    assert isinstance(ds, KeypointDataset) and len(ds) >= 6 and ds.meta == KeypointMeta()
    assert len({inst.annotation_id for inst in ds.instances}) == len(ds)  # unique ids: COCO tools need them
    with pytest.raises(FileExistsError):
        write_synthetic_pose(root)
    transform = PoseTrainTransform((48, 64), ds.meta, sigma=2.0)
    image, target = transform(*ds.load(0), np.random.default_rng(0))
    heatmaps, weights = target
    assert image.shape == (3, 64, 48) and heatmaps.shape == (17, 16, 12) and weights.shape == (17,)
    assert abs(float(image.mean())) < 3 and heatmaps.max() > 0.5
    again = transform(*ds.load(0), np.random.default_rng(0))
    assert torch.equal(again[0], image)  # a pure function of the draw


def test_cli_synth_eval_predict(tmp_path, capsys, pose_model):
    root = tmp_path / "data"
    assert main(["synth", str(root), "--task", "pose", "--train", "4", "--val", "3"]) == 0
    recipe = ROOT / "configs" / "segformer_b0_coco_pose_384x288.yaml"
    assert main(["train", str(recipe), "--data", str(root), "--out", str(tmp_path / "run"), "--crop", "64", "48",
                 "--batch-size", "2", "--set", "pretrained=null", "--set", "epochs=null", "--set", "iters=2",
                 "--set", "eval_interval=0", "--set", "num_workers=0", "--set", "progress=false"]) == 0
    assert "validation PCK@0.1" in capsys.readouterr().out and (tmp_path / "run" / "plots" / "pck.png").is_file()
    pose_model.save_pretrained(tmp_path / "m")
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(root), "--crop", "64", "48",
                 "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "PCK@0.1" in out and "PCK@0.05" in out
    assert (" AP " in out) == (importlib.util.find_spec("pycocotools") is not None)  # AP when the extra is there
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(root), "--crop", "64", "48",
                 "--no-coco-ap"]) == 0 and " AP " not in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["settings"]["input_size"] == [64, 48]
    image = next((root / "images" / "val").iterdir())
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": image.name, "bbox": [10, 10, 80, 120], "score": 0.9},
                                 {"image_id": image.name, "bbox": [0, 0, 20, 20], "score": 0.1}]))
    assert main(["predict", str(image), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "p"),
                 "--boxes", str(boxes), "--size", "64", "48"]) == 0
    people = json.loads((tmp_path / "p" / f"{image.stem}_keypoints.json").read_text())
    assert len(people) == 1 and np.asarray(people[0]["keypoints"]).shape == (17, 3)  # the 0.1 box is dropped
    scores = np.asarray(people[0]["keypoints"])[:, 2]
    assert people[0]["score"] == pytest.approx(0.9 * (scores[scores > 0.2].mean() if (scores > 0.2).any() else 0),
                                               abs=0.01)  # box score x mean keypoint score above 0.2
    assert (tmp_path / "p" / f"{image.stem}_pose.png").is_file()
    assert main(["predict", str(image), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "p")]) == 2
    assert "--overwrite" in capsys.readouterr().err


POSE_RECIPES = [f"segformer_b{i}_coco_pose_384x288" for i in range(6)] + ["segformer_b0_jbd_pose_640x480"]


@pytest.mark.parametrize("recipe", POSE_RECIPES)
def test_pose_recipes_carry_the_reference_settings(recipe):
    """The SegFormer++ MMPose configs: AdamW 5e-4, wd 0.01 everywhere, 500-iteration warm-up from 0.001x, then
    constant (test_pose_mmpose_parity checks that against MMEngine), batch 16, 210 epochs, sigma 3, drop-path 0.1,
    flip test; COCO 288x384 (heatmaps 72x96), validated every epoch; JBD 480x640 (heatmaps 120x160), 20 keypoints,
    every 10 epochs; both keep the best PCK@0.1 (save_best='PCK')."""
    from segformer.training.config import load_config
    from segformer.training.pretrained import build_model

    cfg = load_config(ROOT / "configs" / f"{recipe}.yaml")
    variant = recipe.split("_")[1]
    assert (cfg.model, cfg.pretrained) == (f"segformer-{variant}-pose", f"nvidia/mit-{variant}")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.betas, cfg.head_lr_mult, cfg.no_decay) == (
        "adamw", 5e-4, 0.01, (0.9, 0.999), 1.0, "none")
    assert (cfg.warmup_iters, cfg.warmup_ratio, cfg.power, cfg.batch_size, cfg.epochs) == (500, 0.001, 0.0, 16, 210)
    assert (cfg.sigma, cfg.flip_test, cfg.flip_prob, cfg.save_best, cfg.eval_interval) == (
        3.0, True, 0.5, "PCK@0.1", None)
    jbd = "jbd" in recipe
    assert (cfg.crop_size, cfg.eval_epochs) == (((640, 480), 10) if jbd else ((384, 288), 1))
    assert cfg.model_args.get("num_keypoints", 17) == (20 if jbd else 17)
    assert segformer.models.model_config(cfg.model, **cfg.model_args).encoder.drop_path_rate == 0.1
    if variant == "b0":  # heatmaps at 1/4 of the input whatever the encoder
        with torch.no_grad():
            heatmaps = build_model(dataclasses.replace(cfg, pretrained=None)).eval()(torch.zeros(1, 3, *cfg.crop_size))
        assert heatmaps.shape[1:] == ((20, 160, 120) if jbd else (17, 96, 72))


def test_coco_keypoint_ap(tmp_path):
    """pycocotools (the `coco` extra): the ground truth itself scores AP 100; keypoints moved far score less."""
    pytest.importorskip("pycocotools", reason="the optional `coco` extra (pycocotools) is not installed")
    from segformer.coco_eval import keypoint_ap

    ds = open_keypoints(write_synthetic_pose(tmp_path / "s", num_train=1, num_val=6), "val")
    perfect = [(inst, inst.keypoints, np.ones(17, np.float32)) for inst in ds.instances]
    assert keypoint_ap(ds, perfect, (48, 64))["AP"] == pytest.approx(100.0)
    off = [(inst, inst.keypoints + 15.0, np.ones(17, np.float32)) for inst in ds.instances]
    assert keypoint_ap(ds, off, (48, 64))["AP"] < 50


def test_mmengine_checkpoint_with_numpy_meta_loads(pose_model, tmp_path):
    """MMEngine / MMPose checkpoints keep numpy arrays in `meta` (e.g. the OKS sigmas): read with weights_only
    plus numpy's array rebuild; keypoint names come from dataset_meta.keypoint_id2name."""
    convert_dir = tmp_path / "ours"
    pose_model.save_pretrained(convert_dir)
    convert(convert_dir, tmp_path / "plain.pth", to="mmpose")
    sd = torch.load(tmp_path / "plain.pth", weights_only=True)["state_dict"]
    names = {i: f"joint_{i}" for i in range(17)}
    meta = {"dataset_meta": {"keypoint_id2name": names, "sigmas": np.full(17, 0.05, np.float32)}}
    torch.save({"state_dict": sd, "meta": meta}, tmp_path / "mmengine.pth")
    model = load_model(tmp_path / "mmengine.pth")
    assert model.config.task == "pose" and model.config.class_names == [f"joint_{i}" for i in range(17)]


def test_skeleton_drawing():
    """Links between confident joints are drawn in the side's colour (left orange, right blue); a joint below the
    score threshold takes its links with it."""
    from segformer.visualize import draw_keypoints

    meta = KeypointMeta()
    keypoints = np.zeros((1, 17, 2), np.float32)
    keypoints[0, 5], keypoints[0, 7] = (20, 20), (20, 80)  # left shoulder -> left elbow: a vertical link at x 20
    keypoints[0, 6], keypoints[0, 8] = (60, 20), (60, 80)  # right shoulder -> right elbow at x 60
    scores = np.zeros((1, 17), np.float32)
    scores[0, [5, 7, 6]] = 0.9  # the right elbow is not confident
    picture = np.asarray(draw_keypoints(np.zeros((100, 100, 3), np.uint8), keypoints, scores, meta.skeleton,
                                        meta.flip_indices))
    assert tuple(picture[50, 20]) == (255, 128, 0)  # the left arm's link
    assert picture[50, 60].sum() == 0 and tuple(picture[20, 60]) == (51, 153, 255)  # no right link, its joint


def test_save_best_names_a_metric_the_run_reports(tmp_path):
    from segformer.training.config import TrainConfig
    from segformer.training.trainer import Trainer

    data = write_synthetic_pose(tmp_path / "d", num_train=2, num_val=1)
    with pytest.raises(ValueError, match=r"save_best: 'mIoU' is not reported .* PCK@0\.1, PCK@0\.05"):
        Trainer(TrainConfig(model="segformer-b0-pose", data=str(data), save_best="mIoU", out=str(tmp_path / "r")))


def test_augmentation_draws_follow_mmpose_defaults():
    """The random choices' rates and ranges are MMPose's defaults: flip 0.5; half body 0.3 (upper half 0.7 of
    those); box shift 0.3 (within +-0.16 of the window); scale always, in 0.5..1.5; rotation 0.6, within +-80."""
    from segformer.data.keypoints import PersonInstance

    transform = PoseTrainTransform((48, 64), KeypointMeta())
    inst = PersonInstance(None, np.array([0, 0, 50, 100], np.float32), np.zeros((17, 2), np.float32),
                          np.ones(17, np.float32), 1, 1, 0.0)
    rng = np.random.default_rng(0)
    draws = [transform.draw(inst, rng) for _ in range(4000)]

    def rate(values):
        return float(np.mean(values))

    assert abs(rate([d.flip for d in draws]) - 0.5) < 0.03
    half = [d for d in draws if d.half_body]
    assert abs(len(half) / 4000 - 0.3) < 0.03 and abs(rate([d.prefer_upper for d in half]) - 0.7) < 0.05
    shifts = np.array([d.shift for d in draws])
    assert abs(rate((shifts != 0).any(axis=1)) - 0.3) < 0.03 and np.abs(shifts).max() <= 0.16
    scales, rotations = np.array([d.scale for d in draws]), np.array([d.rotation for d in draws])
    assert scales.min() >= 0.5 and scales.max() <= 1.5 and abs(rate(rotations != 0) - 0.6) < 0.03
    assert np.abs(rotations).max() <= 80 and np.abs(rotations).max() > 60
    few = PersonInstance(None, inst.box, inst.keypoints, np.r_[np.ones(8), np.zeros(9)].astype(np.float32), 1, 1, 0.0)
    assert not any(transform.draw(few, rng).half_body for _ in range(200))  # needs 9 labelled keypoints


def test_keypoint_ap_on_detector_boxes(tmp_path, capsys, pose_model):
    """`--bbox-file` (MMPose's bbox_file): a detector's person boxes replace the annotated persons, scored by COCO
    keypoint AP only; empty, non-person and low-scoring detections are dropped, bad files named."""
    pytest.importorskip("pycocotools", reason="the optional `coco` extra (pycocotools) is not installed")
    from segformer.coco_eval import keypoint_ap
    from segformer.pose_evaluation import evaluate_pose

    root = write_synthetic_pose(tmp_path / "s", num_train=1, num_val=4)
    coco = json.loads((root / "annotations" / "val.json").read_text())
    first = coco["images"][0]["id"]
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
            for a in coco["annotations"]]
    dets += [{"image_id": first, "category_id": 1, "bbox": [5, 5, 0, 30], "score": 0.9},  # empty
             {"image_id": first, "category_id": 3, "bbox": [5, 5, 30, 30], "score": 0.9},  # not a person
             {"image_id": first, "category_id": 1, "bbox": [5, 5, 30, 30], "score": 0.05}]  # below the threshold
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps(dets))
    ds = open_keypoints(root, "val", detections=boxes, box_score_thr=0.1)
    truth = open_keypoints(root, "val").instances
    assert len(ds) == len(truth) == len(coco["annotations"]) and {i.score for i in ds.instances} == {0.9}
    perfect = [(det, gt.keypoints, np.ones(17, np.float32)) for det, gt in zip(ds.instances, truth, strict=True)]
    assert keypoint_ap(ds, perfect, (48, 64))["AP"] == pytest.approx(100.0)
    result = evaluate_pose(pose_model, ds, input_size=(48, 64))
    assert set(result) == {"num_instances", "AP", "AP50", "AP75", "AR"}  # no PCK without keypoints to compare
    with pytest.raises(ValueError, match="only COCO keypoint AP"):
        evaluate_pose(pose_model, ds, input_size=(48, 64), coco_ap=False)

    pose_model.save_pretrained(tmp_path / "m")
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(root), "--crop", "64", "48", "--bbox-file",
                 str(boxes), "--bbox-score-thr", "0.1", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert f"boxes of {boxes}" in out and " AP " in out and "PCK" not in out
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["AP"] == pytest.approx(result["AP"]) and saved["settings"]["bbox_file"] == str(boxes)

    for bad, message in (([{"image_id": first, "category_id": 1, "bbox": [1, 2, 3, 4]}], "lacks \\['score'\\]"),
                         ([{"image_id": 424242, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}],
                          "names image 424242"),
                         ({"image_id": first}, "expected a list of COCO detections"),
                         ([[1, 2, 3, 4]], "entry 0 is not an object"),
                         ([dets[-1]], "no person detection .* scoring >= 0.1")):
        boxes.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=f"dets.json: .*{message}"):
            open_keypoints(root, "val", detections=boxes, box_score_thr=0.1)
    boxes.write_text("[{")
    with pytest.raises(ValueError, match="detection file .*dets.json: not valid JSON"):
        open_keypoints(root, "val", detections=boxes)
    with pytest.raises(FileNotFoundError, match="detection file .*missing.json: no such file"):
        open_keypoints(root, "val", detections=tmp_path / "missing.json")
