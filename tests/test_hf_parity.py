"""Parity with transformers' SegFormer: random weights saved by HF, loaded by us, same input."""

import pytest
import torch
from transformers import (
    SegformerConfig,
    SegformerForImageClassification,
    SegformerForSemanticSegmentation,
    SegformerModel,
)

import segformer
from segformer.models import MixTransformer, SegFormer
from segformer.models.mit import MIT_VARIANTS

DECODER_DIM = {"b0": 256, "b1": 256}


def hf_config(variant: str, **kw) -> SegformerConfig:
    spec = MIT_VARIANTS[variant]
    return SegformerConfig(hidden_sizes=list(spec["embed_dims"]), depths=list(spec["depths"]),
                           decoder_hidden_size=DECODER_DIM.get(variant, 768), **kw)


def randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("variant", ["b0", "b1", "b2", "b3", "b4", "b5"])
def test_segmentation_parity_every_variant(variant, tmp_path):
    torch.manual_seed(0)
    ref = SegformerForSemanticSegmentation(hf_config(variant, num_labels=7)).eval()
    randomise_bn(ref)
    ref.save_pretrained(tmp_path)
    ours = segformer.load_model(tmp_path).eval()
    assert isinstance(ours, SegFormer) and ours.config.num_classes == 7
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        expected = ref(pixel_values=x).logits
        got = ours(x)
    assert got.shape == expected.shape == (2, 7, 25, 33)
    assert (got - expected).abs().max().item() <= 1e-4


def test_classification_parity(tmp_path):
    torch.manual_seed(0)
    ref = SegformerForImageClassification(hf_config("b0", num_labels=11)).eval()
    ref.save_pretrained(tmp_path)
    ours = segformer.load_model(tmp_path).eval()
    assert ours.config.task == "classification"
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        diff = (ours(x) - ref(pixel_values=x).logits).abs().max().item()
    assert diff <= 1e-4


def test_encoder_only_checkpoint_loads_as_encoder(tmp_path):
    torch.manual_seed(0)
    ref = SegformerModel(hf_config("b1")).eval()
    ref.save_pretrained(tmp_path)
    ours = segformer.load_model(tmp_path).eval()
    assert isinstance(ours, MixTransformer)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref(pixel_values=x, output_hidden_states=True).hidden_states
        got = ours(x)
    assert len(got) == 4
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert (g - e).abs().max().item() <= 1e-4


def test_encoder_only_into_segmentation_reports_fresh_head(tmp_path):
    SegformerModel(hf_config("b0")).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"encoder-only checkpoint: the segmentation head \(decode_head"):
        model = segformer.load_model(tmp_path, task="segmentation", num_classes=19)
    assert model.config.num_classes == 19 and model.config.decoder_dim == 256


def test_ours_to_hf_roundtrip_transformers_loads_identical_logits(tmp_path):
    torch.manual_seed(0)
    ours = segformer.create_model("segformer-b1", num_classes=5).eval()
    randomise_bn(ours)
    ours.save_pretrained(tmp_path / "hf")
    ref = SegformerForSemanticSegmentation.from_pretrained(tmp_path / "hf").eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        diff = (ours(x) - ref(pixel_values=x).logits).abs().max().item()
    assert diff <= 1e-4  # same function; float rounding of the reordered decoder only
    again = segformer.load_model(tmp_path / "hf").eval()
    with torch.no_grad():
        assert torch.equal(again(x), ours(x))


def test_num_classes_override_reinitialises_classifier(tmp_path):
    SegformerForSemanticSegmentation(hf_config("b0", num_labels=7)).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"num_classes 7 -> 3: the classifier \(decode_head.classifier\)"):
        model = segformer.load_model(tmp_path, num_classes=3)
    assert model.decode_head.classifier.weight.shape[0] == 3
