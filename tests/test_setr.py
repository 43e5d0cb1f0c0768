"""SETR model behaviour without the oracle (parity with mmseg: test_setr_mmseg_parity.py): output sizes,
corner padding, input errors, the auxiliary loss, gradients, configs and the zoo presets."""

import json

import pytest
import torch
import torch.nn.functional as F

import segformer
from segformer.models import SETR, SETRConfig, VisionTransformer, ViTConfig, setr_config
from segformer.models.vit import square_grid

DECODERS = ["naive", "pup", "mla"]


def tiny(decoder: str, **kw) -> SETR:
    cfg = dict(depth=4, embed_dim=32, num_heads=4, channels=16, mla_channels=8, img_size=(64, 64), num_classes=5,
               out_indices=(0, 1, 2, 3))
    return SETR(setr_config(decoder, **{**cfg, **kw}))


@pytest.mark.parametrize("decoder, main, aux", [("naive", (16, 24), (64, 96)), ("pup", (64, 96), (64, 96)),
                                                 ("mla", (16, 24), (4, 6))])
def test_output_sizes(decoder, main, aux):
    model = tiny(decoder).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        logits = model(x)
        again, aux_logits = model.forward_aux(x)
    assert logits.shape == (2, 5) + main
    assert torch.equal(logits, again)
    assert len(aux_logits) == (4 if decoder == "mla" else 3)
    assert all(a.shape == (2, 5) + aux for a in aux_logits)


@pytest.mark.parametrize("decoder, size", [("naive", (18, 25)), ("pup", (70, 100)), ("mla", (18, 25))])
def test_sizes_not_divisible_by_the_patch_are_zero_padded_and_cropped_back(decoder, size):
    model = tiny(decoder).eval()
    x = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        logits, aux = model.forward_aux(x)
        padded, padded_aux = model.forward_aux(F.pad(x, (0, 12, 0, 10)))  # to 80 x 112
    assert logits.shape[-2:] == size
    assert torch.equal(logits, padded[..., :size[0], :size[1]])
    for a, p in zip(aux, padded_aux, strict=True):
        assert torch.equal(a, p[..., :a.shape[-2], :a.shape[-1]])
        assert a.shape[-2:] == ((5, 7) if decoder == "mla" else (70, 100))


def test_input_errors():
    model = tiny("pup").eval()
    with pytest.raises(ValueError, match=r"image \(8, 64\) is smaller than one 16x16 patch; inputs need H, W >= 16"):
        model(torch.randn(1, 3, 8, 64))
    with pytest.raises(ValueError, match=r"expects pixel values of shape \(B, 3, H, W\), got \(1, 1, 64, 64\)"):
        model(torch.randn(1, 1, 64, 64))


def test_loss_adds_each_auxiliary_loss_with_weight_0_4():
    model = tiny("pup").eval()
    x = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 5, (2, 64, 64))
    labels[:, :8] = 255
    logits, aux = model.forward_aux(x)
    loss = model.loss(logits, labels, aux)
    assert model.config.aux_weight == 0.4 and len(aux) == 3
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    expected = expected + 0.4 * sum(F.cross_entropy(a, labels, ignore_index=255) for a in aux)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(model.loss(logits, labels), F.cross_entropy(logits, labels, ignore_index=255), atol=1e-6)
    # naive logits are at 1/4: upsampled bilinearly to the labels
    naive = tiny("naive").eval()
    small = naive(x)
    up = F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(naive.loss(small, labels), F.cross_entropy(up, labels, ignore_index=255), atol=1e-6)


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_trainable_parameter_gets_a_gradient(decoder):
    """No unused trainable parameters, so DDP needs no find_unused_parameters (MLA's unused class token is frozen)."""
    model = tiny(decoder).train()
    logits, aux = model.forward_aux(torch.randn(2, 3, 64, 64))
    model.loss(logits, torch.randint(0, 5, (2, 64, 64)), aux).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert model.encoder.cls_token.requires_grad == (decoder != "mla")
    assert model.no_weight_decay() == {"encoder.pos_embed", "encoder.cls_token"}


def test_config_json_round_trip_and_errors():
    config = setr_config("mla", "cityscapes", depth=4, class_names=list("abcdefghijklmnopqrs"))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["architecture"] == "setr"
    assert SETRConfig.from_dict(data) == config
    with pytest.raises(ValueError, match=r"unknown SETRConfig fields \['depths'\]"):
        SETRConfig.from_dict({**data, "depths": 3})
    with pytest.raises(ValueError, match=r"decoder must be one of \('naive', 'pup', 'mla'\), got 'fpn'"):
        SETRConfig(decoder="fpn")
    with pytest.raises(ValueError, match=r"aux_indices \(4,\) must index the 4 encoder outputs"):
        setr_config("pup", aux_indices=(4,))
    with pytest.raises(ValueError, match=r"out_indices \(3, 3\) must be increasing block indices in \[0, 24\)"):
        ViTConfig(out_indices=(3, 3))
    with pytest.raises(ValueError, match=r"img_size \(8, 8\) must hold at least one 16-pixel patch"):
        ViTConfig(img_size=8)
    with pytest.raises(ValueError, match=r"unknown SETR argument\(s\) \['depths'\]"):
        setr_config("pup", depths=3)
    with pytest.raises(ValueError, match="not 1 \\+ a square grid"):
        square_grid(1 + 24 * 32)


def test_zoo_presets_follow_the_mmseg_recipes():
    names = [n for n in segformer.list_models() if n.startswith("setr")]
    assert sorted(names) == sorted(f"setr-{d}{s}" for d in DECODERS for s in ("", "-ade-512", "-cityscapes-768"))
    with torch.device("meta"):  # ViT-L without spending seconds on weight init
        counts = {n: sum(p.numel() for p in segformer.create_model(n).parameters()) for n in names}
        cityscapes = {d: segformer.create_model(f"setr-{d}-cityscapes-768").config for d in DECODERS}
    for d, millions in (("naive", 305.6), ("pup", 317.3), ("mla", 309.6)):  # mmseg's counts, 150 classes
        assert round(counts[f"setr-{d}"] / 1e6, 1) == millions
        assert counts[f"setr-{d}-ade-512"] == counts[f"setr-{d}"]
    assert all(c.num_classes == 19 and c.encoder.img_size == (768, 768) for c in cityscapes.values())
    assert cityscapes["naive"].aux_num_convs == 1 and setr_config("naive").aux_num_convs == 2
    mla = setr_config("mla")
    assert mla.encoder.out_indices == (5, 11, 17, 23) and not mla.encoder.with_cls_token
    assert setr_config("pup").encoder.out_indices == (9, 14, 19, 23)
    with pytest.raises(ValueError, match="token_merging is SegFormer\\+\\+"):
        segformer.create_model("setr-pup", token_merging="hq", depth=2)


def test_reset_head_keeps_encoder_and_neck():
    model = tiny("mla")
    neck = {k: v.clone() for k, v in model.neck.state_dict().items()}
    model.reset_head(3)
    assert model.config.num_classes == 3
    assert all(torch.equal(v, model.neck.state_dict()[k]) for k, v in neck.items())
    logits, aux = model.forward_aux(torch.randn(1, 3, 64, 64))
    assert logits.shape[1] == 3 and all(a.shape[1] == 3 for a in aux)


def test_encoder_alone_and_given_encoder():
    encoder = VisionTransformer(ViTConfig(depth=2, embed_dim=32, num_heads=2, img_size=32))
    features = encoder(torch.randn(1, 3, 48, 32))
    assert len(features) == 1 and features[0].shape == (1, 32, 3, 2)
    config = setr_config("naive", depth=2, embed_dim=32, num_heads=2, img_size=32, out_indices=(1,), aux_indices=())
    assert len(SETR(config, VisionTransformer(config.encoder)).aux_heads) == 0
    with pytest.raises(ValueError, match="the given encoder's config"):
        SETR(config, VisionTransformer(ViTConfig(depth=3, embed_dim=32, num_heads=2, img_size=32)))
