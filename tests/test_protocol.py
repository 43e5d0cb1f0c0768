"""One evaluation protocol: the test pipeline training records with the model is what `segformer eval`,
`segformer predict` and `segformer.predict` use by default, so the three ways of scoring a model agree; slide
windows default to a 2/3 stride and imply no resize."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import segformer
from segformer import cli
from segformer.data.datasets import open_dataset
from segformer.data.synthetic import write_synthetic
from segformer.evaluation import IoUMetric, evaluate
from segformer.protocol import default_stride, make_test_pipeline, predict_processor, resolve_window
from segformer.training import TrainConfig, train

TINY = {"depths": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 32], "num_heads": [1, 1, 1, 1], "decoder_dim": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SegFormer trained 6 steps on synthetic images of 24-40 px, scored with a keep-ratio resize into
    (128, 32): every validation image is resized, so a path that skipped or changed the resize would disagree."""
    root = tmp_path_factory.mktemp("protocol")
    data = write_synthetic(root / "data", num_train=6, num_val=4, min_size=24, max_size=40)
    config = TrainConfig(model="segformer-b0", model_args=dict(TINY), data=str(data), crop_size=(32, 32),
                         batch_size=2, iters=6, lr=3e-3, warmup_iters=0, eval_interval=0, num_workers=0,
                         progress=False, out=str(root / "run"))
    train(config)
    return data, root / "run"


def test_the_saved_model_records_its_test_pipeline(trained):
    _, run = trained
    model = segformer.load_model(run / "final")
    assert model.config.test_pipeline == {"scale": [128, 32], "mode": "whole"}


def test_training_eval_and_predict_give_the_same_miou(trained, tmp_path, capsys):
    data, run = trained
    from_training = json.loads((run / "metrics.json").read_text())["mIoU"]

    assert cli.main(["eval", "--model", str(run / "final"), "--data", str(data), "--num-workers", "0",
                     "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["settings"]["scale"] == [128, 32] and evaluated["settings"]["mode"] == "whole"

    out = tmp_path / "pred"
    assert cli.main(["predict", str(data / "images" / "val"), "--model", str(run / "final"), "--out", str(out),
                     "--no-overlay"]) == 0
    val = open_dataset(data, "val")
    metric = IoUMetric(val.num_classes, val.ignore_index)
    for i, (image_path, _) in enumerate(val.samples):
        _, label = val.load(i)
        metric.update(np.array(Image.open(out / f"{image_path.stem}.png")), label)
    predicted = metric.compute()["mIoU"]
    capsys.readouterr()
    assert abs(evaluated["mIoU"] - from_training) <= 0.01
    assert abs(predicted - from_training) <= 0.01


def test_unset_settings_come_from_the_record_then_the_defaults():
    model = torch.nn.Module()
    assert resolve_window(model, None, None, None) == ("whole", None, None)
    assert resolve_window(model, "slide", (128, 128), None) == ("slide", (128, 128), (85, 85))
    assert resolve_window(model, "slide", None, None) == ("slide", (512, 512), (341, 341))
    assert predict_processor(model, "whole").size == (512, 512)  # HF's fixed resize without a record
    assert predict_processor(model, "slide").size is None  # a sliding window implies no resize
    model.config = type("C", (), {"test_pipeline": make_test_pipeline((256, 64), "slide", (64, 64), (32, 32))})()
    assert resolve_window(model, None, None, None) == ("slide", (64, 64), (32, 32))
    assert resolve_window(model, None, (48, 48), None) == ("slide", (48, 48), (32, 32))  # own crop: 2/3 stride
    assert resolve_window(model, "whole", None, None) == ("whole", None, None)
    processor = predict_processor(model, "slide")
    assert processor.keep_ratio_scale == (256, 64) and processor.size is None
    assert default_stride((1, 2)) == (1, 1)


def test_slide_mode_slides_on_the_original_image_without_a_resize_flag():
    """README's example: predict(model, image, mode="slide", crop_size=...) on an unrecorded model windows the
    image at its own size (several windows), where a 512 x 512 resize would have come first."""
    model = segformer.create_model("segformer-b0", num_classes=3, **TINY).eval()
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape[-2:])))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    labels = segformer.predict(model, image, mode="slide", crop_size=(64, 64))
    assert labels.shape == (96, 160)
    assert set(calls) == {(64, 64)} and len(calls) == 2 * 4  # stride 42: 2 rows x 4 columns of windows


def test_cli_predict_slide_needs_no_stride(tmp_path, capsys):
    model = segformer.create_model("segformer-b0", num_classes=3, **TINY)
    model.save_pretrained(tmp_path / "m")
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(tmp_path / "a.png")
    assert cli.main(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "m"), "--out",
                     str(tmp_path / "o"), "--mode", "slide", "--crop", "64", "--no-overlay"]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "a.png")).shape == (80, 80)
    capsys.readouterr()


def test_save_best_keeps_the_best_evaluated_model(tmp_path):
    data = write_synthetic(tmp_path / "data", num_train=4, num_val=2, min_size=24, max_size=32)
    run = tmp_path / "run"
    config = TrainConfig(model="segformer-b0", model_args=dict(TINY), data=str(data), crop_size=(32, 32),
                         batch_size=2, iters=6, lr=3e-3, eval_interval=2, num_workers=0, progress=False,
                         out=str(run), save_best="mIoU")
    train(config)
    scores = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    scores = [r for r in scores if "mIoU" in r]
    best = json.loads((run / "best" / "metrics.json").read_text())
    assert len(scores) == 3 and best["mIoU"] == max(r["mIoU"] for r in scores)
    assert best["iteration"] == next(r["iter"] for r in scores if r["mIoU"] == best["mIoU"])
    result = evaluate(segformer.load_model(run / "best"), open_dataset(data, "val"), progress=False)
    assert abs(result["mIoU"] - best["mIoU"]) <= 0.01
