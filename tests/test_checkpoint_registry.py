"""The checkpoint registry (one `Format` per layout and architecture) and `fit_state_dict`'s report."""

import dataclasses

import pytest
import torch

import segformer
from segformer.checkpoints import FORMATS, fit_state_dict, get_format
from segformer.models.mit import MiTConfig
from segformer.models.vit import ViTConfig

TINY = dict(embed_dims=[8, 16, 24, 32], num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1])


def test_every_format_keeps_the_protocol():
    encoder_fields = {"segformer": {f.name for f in dataclasses.fields(MiTConfig)},
                      "setr": {f.name for f in dataclasses.fields(ViTConfig)}}
    assert {name for name, _ in FORMATS} == {"ours", "hf", "nvlabs", "mmseg", "mmpose", "timm"}
    for (name, arch), fmt in FORMATS.items():
        assert (fmt.name, fmt.architecture) == (name, arch)
        assert set(fmt.eps) <= encoder_fields[arch], name
        assert fmt.matches([]) is False
    model = segformer.create_model("segformer-b0", num_classes=3, **TINY)
    sd = model.state_dict()
    for name in ("hf", "nvlabs", "ours"):  # one signature both ways, and a round trip
        native, unknown = get_format(name, "segformer").to_native(get_format(name, "segformer").from_native(
            sd, model.config))
        assert unknown == [] and native.keys() == sd.keys() and all(torch.equal(native[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="SETR / ViT models convert --to ours, mmseg or timm, got --to hf"):
        get_format("hf", "setr")


def test_fit_state_dict_reports_loaded_fresh_and_dropped():
    torch.manual_seed(0)
    source = segformer.create_model("segformer-b0", num_classes=3, **TINY)
    target = segformer.create_model("segformer-b0", num_classes=5, **TINY)
    sd = {**source.state_dict(), "extra.weight": torch.zeros(1)}
    report = fit_state_dict(target, sd, fresh=("decode_head.classifier.",), drop=("extra.",))
    assert report.fresh == ["decode_head.classifier.weight", "decode_head.classifier.bias"]
    assert sorted(report.dropped) == ["decode_head.classifier.bias", "decode_head.classifier.weight", "extra.weight"]
    assert len(report.loaded) == len(sd) - 3
    assert torch.equal(target.encoder.stages[0].norm.weight, source.encoder.stages[0].norm.weight)
    with pytest.raises(ValueError, match=r"x.pth: checkpoint does not fit the model; unexpected \(1\).*mis-sh"):
        fit_state_dict(target, sd, source="x.pth")
