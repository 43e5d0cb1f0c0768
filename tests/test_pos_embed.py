"""MiTConfig(pos_embed="learned"): the paper's positional-encoding ablation of Mix-FFN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segformer
from segformer.models.mit import MiTConfig, nchw_to_tokens


def _tiny(**kw):
    torch.manual_seed(0)
    return segformer.create_model("segformer-b0", num_classes=3, depths=(1, 1, 1, 1), decoder_dim=16, **kw).eval()


def test_learned_variant_structure_and_no_decay():
    model = _tiny(pos_embed="learned", pos_embed_size=(64, 96))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if "pos_embed" in n}
    assert shapes == {"encoder.stages.0.pos_embed": (1, 32, 16, 24), "encoder.stages.1.pos_embed": (1, 64, 8, 12),
                      "encoder.stages.2.pos_embed": (1, 160, 4, 6), "encoder.stages.3.pos_embed": (1, 256, 2, 3)}
    assert not any("dwconv" in k for k in model.state_dict())
    assert set(shapes) <= model.no_weight_decay()
    assert not any("pos_embed" in k for k in _tiny().state_dict())  # the default stays Mix-FFN
    assert any("dwconv" in k for k in _tiny().state_dict())
    with pytest.raises(ValueError, match="pos_embed must be 'mixffn' or 'learned'"):
        MiTConfig(pos_embed="sinusoidal")


def test_embedding_is_added_and_bilinearly_resized():
    model = _tiny(pos_embed="learned", pos_embed_size=(64, 64))
    stage = model.encoder.stages[0]
    with torch.no_grad():
        stage.pos_embed.normal_()
    for size in ((64, 64), (96, 80)):  # the trained grid, then another size
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            tokens, h, w = stage.patch_embed(x)
            pos = stage.pos_embed
            if (h, w) != tuple(pos.shape[-2:]):
                pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
            expected = tokens + nchw_to_tokens(pos)
            for block in stage.blocks:
                expected = block(expected, h, w)
            expected = stage.norm(expected).view(1, h, w, -1).permute(0, 3, 1, 2)
            torch.testing.assert_close(stage(x), expected, rtol=0, atol=0)


def test_learned_variant_saves_and_loads(tmp_path):
    model = _tiny(pos_embed="learned", pos_embed_size=(64, 64))
    model.save_pretrained(tmp_path / "pe")
    loaded = segformer.load_model(tmp_path / "pe").eval()
    assert loaded.config.encoder.pos_embed == "learned" and loaded.config.encoder.pos_embed_size == (64, 64)
    x = torch.randn(1, 3, 72, 88)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
