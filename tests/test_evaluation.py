"""The IoU metric against MMSegmentation's IoUMetric, the evaluation loop (also under DDP), and `segformer eval`.

The mmseg check runs IoUMetric (and LoadAnnotations for ADE20K's reduce_zero_label) in the oracle venv
through a subprocess; it skips, saying why, when the venv is absent.
"""

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import segformer
from helpers import mmseg_oracle as oracle_paths
from segformer import inference
from segformer.cli import main
from segformer.data import ADE20K, open_dataset, write_synthetic
from segformer.evaluation import IoUMetric, areas_to_metrics, evaluate, intersect_and_union

REPO = Path(__file__).resolve().parents[1]
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def test_intersect_and_union_by_hand():
    pred = torch.tensor([[0, 1], [1, 2]])
    label = torch.tensor([[0, 1], [2, 255]])
    areas = intersect_and_union(pred, label, num_classes=4)
    assert areas.tolist() == [[1, 1, 0, 0], [1, 2, 1, 0], [1, 2, 0, 0], [1, 1, 1, 0]]
    m = areas_to_metrics(areas)
    assert m["IoU"][:3] == [100.0, 50.0, 0.0] and math.isnan(m["IoU"][3])
    assert m["Acc"][:3] == [100.0, 100.0, 0.0] and math.isnan(m["Acc"][3])
    assert m["aAcc"] == pytest.approx(200 / 3) and m["mIoU"] == pytest.approx(50.0)
    assert m["mAcc"] == pytest.approx(200 / 3)


def test_metric_accumulates_over_images_not_per_image_mean():
    metric = IoUMetric(2)
    metric.update(np.array([[0, 0, 0, 1]]), np.array([[0, 0, 0, 0]]))  # per image: IoU0 = .75, IoU1 = 0
    metric.update(np.array([[1]]), np.array([[1]]))  # per image: IoU1 = 1
    out = metric.compute()
    assert out["area_intersect"] == [3, 1] and out["area_union"] == [4, 2] and out["num_images"] == 2
    assert out["IoU"] == [75.0, 50.0] and out["mIoU"] == 62.5


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"prediction has shape \(2, 3\) but the label map has \(3, 2\)"):
        intersect_and_union(torch.zeros(2, 3), torch.zeros(3, 2), 4)


# ---------------------------------------------------------------------------------------------------------------
# MMSegmentation's IoUMetric as the oracle

ORACLE = r'''
import json, sys
import numpy as np
import torch
spec = json.load(open(sys.argv[1]))
sys.path.insert(0, spec["shim_dir"])
import mmcv_ops_shim  # noqa: F401  (lets mmseg import on mmcv-lite)
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.evaluation.metrics import IoUMetric

arrays = np.load(spec["arrays"])
out = {}
for case in spec["cases"]:
    metric = IoUMetric(ignore_index=255)
    metric.dataset_meta = dict(classes=[f"c{i}" for i in range(case["num_classes"])])
    for i in range(case["count"]):
        pred = torch.from_numpy(arrays[f"{case['name']}/pred{i}"])
        if case.get("label_files"):
            res = LoadAnnotations(reduce_zero_label=True)(
                dict(seg_map_path=case["label_files"][i], reduce_zero_label=True, seg_fields=[]))
            gt = torch.from_numpy(res["gt_seg_map"].astype(np.int64))
        else:
            gt = torch.from_numpy(arrays[f"{case['name']}/label{i}"])
        metric.process({}, [dict(pred_sem_seg=dict(data=pred[None]), gt_sem_seg=dict(data=gt[None]))])
    areas = [sum(r[k] for r in metric.results) for k in range(4)]
    ret = IoUMetric.total_area_to_metrics(*areas, ["mIoU"])
    summary = metric.compute_metrics(metric.results)
    out[case["name"]] = dict(areas=[a.tolist() for a in areas], IoU=ret["IoU"].tolist(), Acc=ret["Acc"].tolist(),
                             aAcc=float(ret["aAcc"]), summary={k: float(v) for k, v in summary.items()})
json.dump(out, open(spec["out"], "w"))
'''



def _random_case(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """7 classes: class 4 is predicted but never labelled (IoU 0, Acc NaN), class 6 appears nowhere (NaN);
    ~15% of pixels are 255; one image is entirely ignored."""
    preds, labels = [], []
    for h, w in [(31, 47), (64, 20), (5, 9), (40, 40), (17, 83)]:
        label = rng.choice([0, 1, 2, 3, 5], size=(h, w), p=[0.4, 0.3, 0.15, 0.1, 0.05])
        label[rng.random((h, w)) < 0.15] = 255
        pred = np.where(rng.random((h, w)) < 0.5, label, rng.integers(0, 6, size=(h, w)))
        pred[pred == 255] = 4
        preds.append(pred.astype(np.int64))
        labels.append(label.astype(np.int64))
    preds.append(rng.integers(0, 6, size=(8, 8)))
    labels.append(np.full((8, 8), 255, np.int64))
    return preds, labels


def _ade_tree(root: Path, rng: np.random.Generator) -> tuple[list[str], list[np.ndarray]]:
    """A fake ADEChallengeData2016 validation split with raw labels 0..150 and some 255; predictions
    that agree with the reduced label on about half the pixels."""
    (root / "images" / "validation").mkdir(parents=True)
    (root / "annotations" / "validation").mkdir(parents=True)
    files, preds = [], []
    for i, (h, w) in enumerate([(30, 40), (25, 61), (44, 19)]):
        raw = np.repeat(np.repeat(rng.integers(0, 151, size=(h // 5 + 1, w // 5 + 1)), 5, 0), 5, 1)[:h, :w]
        raw[rng.random((h, w)) < 0.05] = 255
        raw[:, :3] = 0  # "other" -> ignored after reduce_zero_label
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(
            root / "images" / "validation" / f"ADE_val_{i:08d}.jpg")
        path = root / "annotations" / "validation" / f"ADE_val_{i:08d}.png"
        Image.fromarray(raw.astype(np.uint8)).save(path)
        files.append(str(path))
        preds.append(np.where(rng.random((h, w)) < 0.5, np.clip(raw - 1, 0, 149), rng.integers(0, 150, (h, w))))
    return files, preds


@pytest.mark.mmseg
def test_iou_metric_matches_mmseg(tmp_path):
    python, shim = oracle_paths()
    rng = np.random.default_rng(0)
    preds, labels = _random_case(rng)
    ade_files, ade_preds = _ade_tree(tmp_path / "ADEChallengeData2016", rng)
    arrays = {f"random/pred{i}": p for i, p in enumerate(preds)}
    arrays.update({f"random/label{i}": lab for i, lab in enumerate(labels)})
    arrays.update({f"ade/pred{i}": p for i, p in enumerate(ade_preds)})
    np.savez(tmp_path / "arrays.npz", **arrays)
    spec = dict(shim_dir=str(Path(shim).parent), arrays=str(tmp_path / "arrays.npz"), out=str(tmp_path / "out.json"),
                cases=[dict(name="random", num_classes=7, count=len(preds)),
                       dict(name="ade", num_classes=150, count=len(ade_preds), label_files=ade_files)])
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "oracle.py").write_text(ORACLE)
    run = subprocess.run([python, str(tmp_path / "oracle.py"), str(tmp_path / "spec.json")], capture_output=True,
                         text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    ref = json.loads((tmp_path / "out.json").read_text())

    ours = {"random": IoUMetric(7), "ade": IoUMetric(150)}
    for p, lab in zip(preds, labels, strict=True):
        ours["random"].update(p, lab)
    ade = ADE20K(tmp_path, "val")  # our reduce_zero_label against mmseg's LoadAnnotations
    assert [str(label) for _, label in ade.samples] == ade_files
    for i, p in enumerate(ade_preds):
        ours["ade"].update(p, ade.load(i)[1])

    for name, metric in ours.items():
        got, want = metric.compute(), ref[name]
        for k, area in enumerate(("area_intersect", "area_union", "area_pred_label", "area_label")):
            assert got[area] == [int(v) for v in want["areas"][k]], (name, area)
        np.testing.assert_allclose(np.array(got["IoU"]) / 100, want["IoU"], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(np.array(got["Acc"]) / 100, want["Acc"], rtol=1e-6, equal_nan=True)
        assert got["aAcc"] / 100 == pytest.approx(want["aAcc"], rel=1e-6)
        for key in ("aAcc", "mIoU", "mAcc"):  # mmseg's summary is rounded to 2 decimals (from float32)
            assert abs(round(got[key], 2) - want["summary"][key]) <= 0.01 + 1e-9, (name, key)
    random_result = ours["random"].compute()  # the corner cases were really exercised
    assert random_result["IoU"][4] == 0.0 and math.isnan(random_result["Acc"][4])
    assert math.isnan(random_result["IoU"][6]) and math.isnan(ref["random"]["IoU"][6])
    assert sum(math.isnan(v) for v in ours["ade"].compute()["Acc"]) > 0  # classes absent from the labels


# ---------------------------------------------------------------------------------------------------------------
# The evaluation loop and `segformer eval`

@pytest.fixture(scope="module")
def synth_and_model(tmp_path_factory):
    """A 5-image synthetic val split and a tiny random SegFormer (with non-trivial BN) saved to disk."""
    work = tmp_path_factory.mktemp("eval")
    root = write_synthetic(work / "synth", num_train=0, num_val=5, seed=3, min_size=40, max_size=72)
    torch.manual_seed(0)
    model = segformer.create_model("segformer-b0", num_classes=6, depths=(1, 1, 1, 1), decoder_dim=32)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    model.save_pretrained(work / "model")
    return root, work / "model"


def _direct_areas(model, root: Path, num_classes: int, forward=None) -> np.ndarray:
    """Independent recomputation: read files with PIL, normalise, run, upsample, argmax, confusion counts."""
    areas = np.zeros((4, num_classes), np.int64)
    for image_path in sorted((root / "images" / "val").glob("*.png")):
        rgb = np.asarray(Image.open(image_path).convert("RGB"), np.float32)
        label = np.asarray(Image.open(root / "masks" / "val" / image_path.name)).astype(np.int64)
        x = torch.from_numpy((rgb - MEAN) / STD).permute(2, 0, 1)[None]
        with torch.no_grad():
            logits = forward(x) if forward else model(x)
        pred = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)[0].argmax(0).numpy()
        keep = label != 255
        conf = np.bincount(label[keep] * num_classes + pred[keep], minlength=num_classes ** 2)
        conf = conf.reshape(num_classes, num_classes)  # rows: label, columns: prediction
        inter, area_label, area_pred = np.diag(conf), conf.sum(1), conf.sum(0)
        areas += np.stack([inter, area_pred + area_label - inter, area_pred, area_label])
    return areas


def _check_against(result: dict, areas: np.ndarray) -> None:
    inter, union, _, area_label = areas.astype(np.float64)
    assert result["area_intersect"] == areas[0].tolist() and result["area_union"] == areas[1].tolist()
    assert result["area_pred_label"] == areas[2].tolist() and result["area_label"] == areas[3].tolist()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc = inter / union * 100, inter / area_label * 100
    assert result["aAcc"] == pytest.approx(inter.sum() / area_label.sum() * 100, abs=1e-9)
    assert result["mIoU"] == pytest.approx(np.nanmean(iou), abs=1e-9)
    assert result["mAcc"] == pytest.approx(np.nanmean(acc), abs=1e-9)
    got_iou = [math.nan if v is None else v for v in result["IoU"]]
    np.testing.assert_allclose(got_iou, iou, atol=1e-9, equal_nan=True)


def test_segformer_eval_json_equals_direct_recomputation(synth_and_model, tmp_path, capsys):
    root, model_dir = synth_and_model
    out = tmp_path / "metrics.json"
    assert main(["eval", "--model", str(model_dir), "--data", str(root), "--json", str(out),
                 "--num-workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    model = segformer.load_model(model_dir).eval()
    areas = _direct_areas(model, root, 6)
    assert areas[1].sum() > 0 and (areas[0] > 0).sum() >= 2  # predictions are not all one class
    _check_against(result, areas)
    assert result["num_images"] == 5 and result["classes"][5] == "stripes"
    assert result["settings"]["dataset"] == "folder" and result["settings"]["mode"] == "whole"
    assert f"mIoU {result['mIoU']:.2f}" in printed and "stripes" in printed

    # never clobber: a second run without --overwrite refuses, naming the file
    assert main(["eval", "--model", str(model_dir), "--data", str(root), "--json", str(out)]) == 2
    assert f"{out} exists; pass --overwrite to replace it" in capsys.readouterr().err


def test_eval_argument_errors(synth_and_model, tmp_path, capsys):
    root, model_dir = synth_and_model
    assert main(["eval", "--model", str(model_dir), "--data", str(root), "--mode", "slide", "--crop", "32", "1",
                 "0", "--stride", "16"]) == 2
    assert "--crop takes one or two positive ints (H W), got [32, 1, 0]" in capsys.readouterr().err
    five = tmp_path / "five"
    segformer.create_model("segformer-b0", num_classes=5, depths=(1, 1, 1, 1), decoder_dim=32).save_pretrained(five)
    assert main(["eval", "--model", str(five), "--data", str(root)]) == 2
    assert f"{root / 'classes.txt'} lists 6 classes but 5 were requested" in capsys.readouterr().err


def test_evaluate_slide_mode_equals_direct_recomputation(synth_and_model, tmp_path):
    _, model_dir = synth_and_model
    root = write_synthetic(tmp_path / "synth", num_train=0, num_val=2, seed=4, min_size=48, max_size=64)
    model = segformer.load_model(model_dir).eval()
    result = evaluate(model, open_dataset(root, "val"), mode="slide", crop_size=(40, 40), stride=(24, 24),
                      progress=False)
    areas = _direct_areas(model, root, 6, forward=lambda x: inference.slide(model, x, (40, 40), (24, 24)))
    _check_against(result, areas)


def _ddp_worker(rank: int, world: int, init_file: str, model_dir: str, root: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = segformer.load_model(model_dir).eval()
        result = evaluate(model, open_dataset(root, "val"), progress=False)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


def test_evaluate_under_ddp_equals_single_process(synth_and_model, tmp_path):
    root, model_dir = synth_and_model
    single = evaluate(segformer.load_model(model_dir).eval(), open_dataset(root, "val"), progress=False)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(model_dir), str(root),
                                                    str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["num_images"] == 5
        for key in ("area_intersect", "area_union", "area_pred_label", "area_label"):
            assert got[key] == single[key]
        assert got["mIoU"] == pytest.approx(single["mIoU"], abs=1e-12)
