"""`segformer predict --token-merging` applies the strategy to the loaded model."""

import numpy as np
import torch
from PIL import Image

import segformer
from segformer.cli import main
from segformer.preprocess import ImageProcessor


def test_predict_cli_applies_token_merging(tmp_path):
    torch.manual_seed(0)
    model = segformer.create_model("segformer-b0", depths=(1, 1, 1, 1), num_classes=4).eval()
    model.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (160, 192, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    code = main(["predict", str(tmp_path / "img.png"), "--model", str(tmp_path / "model"), "--out",
                 str(tmp_path / "out"), "--resize", "none", "--token-merging", "2x2", "--no-overlay"])
    assert code == 0
    written = np.asarray(Image.open(tmp_path / "out" / "img.png"))
    processor = ImageProcessor(size=None)
    merged = segformer.load_model(tmp_path / "model", token_merging="2x2")
    expected = segformer.predict(merged, str(tmp_path / "img.png"), processor=processor)
    plain = segformer.predict(segformer.load_model(tmp_path / "model"), str(tmp_path / "img.png"), processor=processor)
    np.testing.assert_array_equal(written, expected)
    assert (expected != plain).any(), "2x2 merging should change some labels of a random model"
