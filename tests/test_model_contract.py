"""Every `list_models()` entry keeps the `SegmentationModel` contract (narrow configs, so it stays cheap): builds,
gives logits of the documented shape at two input sizes, saves and loads back to equal logits, trains (loss and
backward reach every parameter), names only existing parameters in `no_weight_decay`, and (SegFormer family)
exports to ONNX with the same logits."""

import warnings

import pytest
import torch

import segformer
from segformer.models import SETR, SegmentationModel

SIZES = [(64, 64), (40, 56)]  # the second is no multiple of 16 (SETR pads) or 32 (MiT)
TINY_MIT = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=16)
# The SegFormer family exports to ONNX; narrowed, its variants are one graph per task, so two entries cover it.
ONNX = ("segformer-b0", "mit-b0")
TINY_VIT = dict(depth=4, embed_dim=32, num_heads=2, channels=8, mla_channels=4, img_size=(32, 32))


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str) -> SegmentationModel:
    torch.manual_seed(0)
    kw = dict(TINY_VIT) if name.startswith("setr") else dict(TINY_MIT)
    if name.startswith("mit"):
        kw.pop("decoder_dim")
    return segformer.create_model(name, num_classes=3, **kw)


def expected_shape(model: SegmentationModel, height: int, width: int) -> tuple[int, ...]:
    """(B, K, h, w) by the documented rule of each model (classifier: (B, K))."""
    if model.task == "classification":
        return (2, 3)
    if model.task == "pose":  # K heatmaps at the stage-1 size
        return (2, 3, -(-height // 4), -(-width // 4))
    if isinstance(model, SETR) and model.config.decoder == "pup":
        return (2, 3, height, width)
    return (2, 3, -(-height // 4), -(-width // 4))


@pytest.mark.parametrize("name", segformer.list_models())
def test_model_contract(name, tmp_path):
    model = tiny(name).eval()
    assert isinstance(model, SegmentationModel) and model.config.name == name
    assert model.decoder is model.decode_head and model.num_classes == 3 and model.in_channels == 3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for h, w in SIZES:
            assert tuple(model(torch.randn(2, 3, h, w)).shape) == expected_shape(model, h, w)
        logits = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HF layout notes
        model.save_pretrained(tmp_path / "saved")
        loaded = segformer.load_model(tmp_path / "saved").eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(x), logits)
    assert model.config_class.from_dict(model.config.to_dict()) == model.config

    model.train()
    logits, aux = model.forward_aux(x)
    labels = {"classification": torch.randint(0, 3, (2,)), "pose": (torch.rand(2, 3, 16, 16), torch.ones(2, 3))
              }.get(model.task, torch.randint(0, 3, (2, 64, 64)))
    loss = model.loss(logits, labels, aux)
    assert torch.isfinite(loss)
    loss.backward()
    params = dict(model.named_parameters())
    unused = [n for n, p in params.items() if p.grad is None]  # SETR-MLA drops the class token, as mmseg's
    assert unused == (["encoder.cls_token"] if isinstance(model, SETR) and not model.config.encoder.with_cls_token
                      else [])
    names = model.no_weight_decay()
    assert names and names <= set(params)
    if name in ONNX:
        check_onnx(model.eval(), tmp_path / "m.onnx")


def check_onnx(model: SegmentationModel, path) -> None:
    """Dynamic-size ONNX graph; onnxruntime's logits match at two sizes."""
    pytest.importorskip("onnxruntime")
    from segformer.export import export_onnx, verify_onnx

    export_onnx(model, path, size=(64, 64), dynamic=True)
    assert max(verify_onnx(model, path, [(64, 64), (32, 96)])) <= 1e-4


def test_reset_head_and_aux_outputs():
    model = tiny("setr-pup").eval()
    logits, aux = model.forward_aux(torch.randn(1, 3, 32, 32))
    assert len(aux) == len(model.config.aux_indices) > 0 and model.aux_weight == 0.4
    model.reset_head(7)
    assert model.num_classes == 7 and model(torch.randn(1, 3, 32, 32)).shape[1] == 7
    segformer_model = tiny("segformer-b0")
    assert segformer_model.forward_aux(torch.randn(1, 3, 32, 32))[1] == []
    segformer_model.reset_head(4)
    assert segformer_model.decode_head.classifier.out_channels == 4 and segformer_model.config.class_names is None
