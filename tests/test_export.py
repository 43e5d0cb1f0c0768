"""ONNX export round trip: onnxruntime matches PyTorch at two sizes with dynamic H, W (and batch)."""

import numpy as np
import pytest
import torch

from segformer.cli import main
from segformer.export import export_onnx, verify_onnx
from segformer.models import MiTConfig, SegFormer, SegFormerConfig

ort = pytest.importorskip("onnxruntime")


def tiny_model(decoder_style: str = "hf") -> SegFormer:
    torch.manual_seed(0)
    encoder = MiTConfig(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4))
    model = SegFormer(SegFormerConfig(encoder=encoder, num_classes=5, decoder_dim=16, decoder_style=decoder_style))
    for m in model.modules():  # non-trivial BN statistics, so eval-mode BN is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("style", ["hf", "mmseg"])
def test_dynamic_export_matches_pytorch_at_two_sizes(tmp_path, style):
    model = tiny_model(style)
    path = export_onnx(model, tmp_path / "tiny.onnx", size=(64, 96), dynamic=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 96), (2, 3, 97, 131)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"pixel_values": x.numpy()})
        assert got.shape == expected.shape == (shape[0], 5, (shape[2] + 3) // 4, (shape[3] + 3) // 4)
        assert np.abs(got - expected).max() <= 1e-4
    assert max(verify_onnx(model, path, [(128, 64), (96, 160)])) <= 1e-4


def test_static_export_rejects_other_sizes(tmp_path):
    model = tiny_model()
    path = export_onnx(model, tmp_path / "static.onnx", size=(64, 64))
    assert verify_onnx(model, path, [(64, 64)])[0] <= 1e-4
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="dimension"):
        verify_onnx(model, path, [(96, 64)])


def test_export_refuses_to_clobber(tmp_path):
    out = tmp_path / "taken.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(tiny_model(), out, size=(64, 64))
    assert out.read_bytes() == b"keep me"
    export_onnx(tiny_model(), out, size=(64, 64), overwrite=True)
    assert out.read_bytes() != b"keep me" and not list(tmp_path.glob(".taken.onnx.*"))  # no temp file left


def test_export_cli(tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    out = tmp_path / "cli.onnx"
    args = ["export", "--model", str(model_dir), "--out", str(out), "--dynamic", "--size", "64x96"]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "max abs logit difference" in line]
    assert len(lines) == 2 and all(float(line.split()[-1]) <= 1e-4 for line in lines)
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err


def test_onnx_file_carries_class_names_normalisation_and_test_pipeline(tmp_path):
    import json

    import onnx

    from segformer.runtimes.base import metadata

    model = tiny_model()
    model.config.class_names = [f"c{i}" for i in range(model.config.num_classes)]
    model.config.test_pipeline = {"scale": [256, 64], "mode": "slide", "crop_size": [64, 64], "stride": [42, 42]}
    path = export_onnx(model, tmp_path / "meta.onnx", size=(64, 64), metadata=metadata(model))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == model.config.class_names
    pipeline = json.loads(meta["test_pipeline"])  # the recorded keep-ratio resize, mmseg's normalisation
    assert pipeline["keep_ratio_scale"] == [256, 64] and pipeline["size"] is None
    assert pipeline["mean"] == [123.675, 116.28, 103.53] and pipeline["rescale_factor"] == 1.0
    assert json.loads(meta["segformer_config"])["test_pipeline"] == model.config.test_pipeline
