"""Hand-over to transformers users: a converted model directory carries `preprocessor_config.json`, so
`AutoImageProcessor` and `pipeline("image-segmentation")` take it, and the pipeline's labels are ours."""

import warnings

import numpy as np
import pytest

import segformer
from helpers import randomise
from segformer import cli

transformers = pytest.importorskip("transformers")

TINY = {"depths": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 32], "num_heads": [1, 1, 1, 1], "decoder_dim": 16}
NAMES = ["sky", "road", "tree", "car"]


def pipeline_labels(pipe, image: np.ndarray) -> np.ndarray:
    """The (H, W) class ids behind the pipeline's per-class masks."""
    from PIL import Image

    labels = np.full(image.shape[:2], -1)
    for segment in pipe(Image.fromarray(image)):
        labels[np.asarray(segment["mask"]) > 0] = pipe.model.config.label2id[segment["label"]]
    return labels


def test_pipeline_on_a_converted_model_gives_our_labels(tmp_path, capsys):
    model = randomise(segformer.create_model("segformer-b0", num_classes=4, class_names=NAMES, **TINY)).eval()
    model.save_pretrained(tmp_path / "ours")
    assert cli.main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    capsys.readouterr()
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")
    assert processor.size == {"height": 512, "width": 512}
    pipe = transformers.pipeline("image-segmentation", model=str(tmp_path / "hf"))
    rng = np.random.default_rng(0)
    for shape in ((90, 120, 3), (200, 64, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = segformer.predict(segformer.load_model(tmp_path / "hf"), image)
        theirs = pipeline_labels(pipe, image)
        assert (theirs >= 0).all()
        assert (theirs == ours).mean() >= 0.999, (theirs != ours).sum()


def test_a_recorded_test_pipeline_sets_the_hf_resize(tmp_path):
    model = segformer.create_model("segformer-b0", num_classes=4, **TINY)
    model.config.test_pipeline = {"scale": [512, 128], "mode": "whole"}
    model.save_pretrained(tmp_path / "a")
    assert transformers.AutoImageProcessor.from_pretrained(tmp_path / "a").size == {"height": 128, "width": 128}
    model.config.test_pipeline = {"scale": None, "mode": "whole"}
    model.save_pretrained(tmp_path / "b")
    assert transformers.AutoImageProcessor.from_pretrained(tmp_path / "b").do_resize is False


def test_export_with_token_merging_warns_that_transformers_computes_the_exact_model(tmp_path):
    model = segformer.create_model("segformer-b0", num_classes=4, token_merging="hq", **TINY)
    with pytest.warns(UserWarning, match="transformers knows no token merging"):
        model.save_pretrained(tmp_path / "tm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segformer.create_model("segformer-b0", num_classes=4, **TINY).save_pretrained(tmp_path / "plain")
