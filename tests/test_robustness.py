"""`segformer eval --corruptions`: corrupted mIoU equals a direct recomputation on corrupted images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import segformer
from segformer.cli import main
from segformer.corruptions import corrupt
from segformer.data import open_dataset, write_synthetic
from segformer.evaluation import IoUMetric
from segformer.preprocess import ImageProcessor


@pytest.fixture(scope="module")
def data_and_model(tmp_path_factory):
    work = tmp_path_factory.mktemp("robust")
    root = write_synthetic(work / "synth", num_train=0, num_val=2, seed=5, min_size=40, max_size=56)
    torch.manual_seed(0)
    segformer.create_model("segformer-b0", num_classes=6, depths=(1, 1, 1, 1), decoder_dim=32).save_pretrained(
        work / "model")
    return root, work / "model"


def test_eval_corruptions_json_plot_and_direct_recomputation(data_and_model, tmp_path, capsys):
    root, model_dir = data_and_model
    out, plot = tmp_path / "robust.json", tmp_path / "robust.png"
    assert main(["eval", "--model", str(model_dir), "--data", str(root), "--corruptions", "gaussian_noise",
                 "--severities", "2,5", "--corruption-seed", "7", "--json", str(out), "--plot", str(plot),
                 "--num-workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["mIoU"]) == {"gaussian_noise"} and result["severities"] == [2, 5]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_mode & 0o777 == 0o644 and out.stat().st_mode & 0o777 == 0o644  # not the temp file's 0600
    assert "clean mIoU" in printed and "gaussian_noise" in printed

    # independent recomputation of one cell: corrupt each image with seed 7 + k, run, score
    model = segformer.load_model(model_dir).eval()
    dataset, processor = open_dataset(root, "val"), ImageProcessor.mmseg(None)
    metric = IoUMetric(6)
    for k in range(len(dataset)):
        image, label = dataset.load(k)
        with torch.no_grad():
            pred = segformer.predict(model, corrupt(image, "gaussian_noise", 5, 7 + k), processor=processor)
        metric.update(pred, label)
    assert result["mIoU"]["gaussian_noise"]["5"] == pytest.approx(metric.compute()["mIoU"], abs=1e-9)
    mean = np.mean(list(result["mIoU"]["gaussian_noise"].values()))
    assert result["group_mean"] == {"noise": pytest.approx(mean)} and result["mean"] == pytest.approx(mean)
    assert result["clean"]["num_images"] == 2 and result["settings"]["dataset"] == "folder"

    # outputs are never clobbered, and bad names are named
    assert main(["eval", "--model", str(model_dir), "--data", str(root), "--corruptions", "fog",
                 "--plot", str(plot)]) == 2
    assert f"{plot} exists; pass --overwrite" in capsys.readouterr().err
    assert main(["eval", "--model", str(model_dir), "--data", str(root), "--corruptions", "fogg"]) == 2
    assert "unknown corruption 'fogg'" in capsys.readouterr().err
