"""SETR / ViT checkpoints without the oracle: our save/load round trip, mmseg and timm conversions both ways,
timm ImageNet ViTs as the encoder of a SETR (pos_embed resized, new heads reported), and bad input."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import segformer
from helpers import randomise
from segformer import cli
from segformer.checkpoints import convert, detect_format, read_checkpoint
from segformer.models import SETR, VisionTransformer, setr_config

TINY = dict(depth=4, embed_dim=32, num_heads=4, channels=16, mla_channels=8, img_size=(64, 64), num_classes=5,
            out_indices=(0, 1, 2, 3))


def randomised(decoder: str, **kw) -> SETR:
    torch.manual_seed(0)
    return randomise(SETR(setr_config(decoder, **{**TINY, **kw})).eval())


def outputs(model: SETR, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        logits, aux = model.forward_aux(x)
    return [logits, *aux]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def timm_vit(path, dim: int = 128, depth: int = 2, grid: int = 24, extra: dict | None = None) -> dict:
    """A timm-layout ViT ImageNet checkpoint (`vit_large_patch16_384` key names and shapes, narrow)."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim),
          "patch_embed.proj.weight": r(dim, 3, 16, 16), "patch_embed.proj.bias": r(dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim), "head.weight": r(1000, dim), "head.bias": r(1000)}
    for b in range(depth):
        p = f"blocks.{b}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim), p + "attn.qkv.weight": r(3 * dim, dim),
                   p + "attn.qkv.bias": r(3 * dim), p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim), p + "mlp.fc1.weight": r(4 * dim, dim),
                   p + "mlp.fc1.bias": r(4 * dim), p + "mlp.fc2.weight": r(dim, 4 * dim), p + "mlp.fc2.bias": r(dim)})
    sd.update(extra or {})
    torch.save(sd, path)
    return sd


@pytest.mark.parametrize("decoder", ["naive", "pup", "mla"])
def test_save_pretrained_round_trip(tmp_path, decoder):
    model = randomised(decoder, class_names=list("abcde"))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["segformer"]["architecture"] == "setr"
    loaded = segformer.load_model(tmp_path).eval()
    assert isinstance(loaded, SETR) and loaded.config == model.config
    x = torch.randn(1, 3, 48, 80)
    assert same(outputs(loaded, x), outputs(model, x))
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        model.save_pretrained(tmp_path)


@pytest.mark.parametrize("decoder", ["pup", "mla"])
def test_mmseg_layout_both_ways(tmp_path, decoder):
    model = randomised(decoder)
    model.save_pretrained(tmp_path / "ours")
    convert(tmp_path / "ours", tmp_path / "m.pth", to="mmseg")
    sd, meta = read_checkpoint(tmp_path / "m.pth")
    assert detect_format(list(sd)) == "mmseg"
    assert "backbone.layers.0.attn.attn.in_proj_weight" in sd and "decode_head.conv_seg.weight" in sd
    assert ("neck.mla.channel_proj.0.conv.weight" in sd) == (decoder == "mla")
    x = torch.randn(1, 3, 64, 48)
    assert same(outputs(segformer.load_model(tmp_path / "m.pth").eval(), x), outputs(model, x))
    # without our config riding along: the architecture comes from the tensor shapes (+ the head count)
    torch.save({"state_dict": sd}, tmp_path / "bare.pth")
    bare = segformer.load_model(tmp_path / "bare.pth", num_heads=4).eval()
    assert bare.config.decoder == decoder and bare.config.encoder.out_indices == (0, 1, 2, 3)
    assert same(outputs(bare, x), outputs(model, x))


def test_new_num_classes_reinitialises_only_the_classifiers(tmp_path):
    model = randomised("pup")
    model.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"initialised fresh \(new classes; .*decode_head.classifier, aux_heads.0"):
        loaded = segformer.load_model(tmp_path, num_classes=3)
    assert loaded.config.num_classes == 3
    kept = {k: v for k, v in model.state_dict().items() if ".classifier." not in k}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in kept.items())


def test_timm_vit_fills_setr_pup_encoder_and_reports_the_new_heads(tmp_path):
    timm = timm_vit(tmp_path / "vit.pth")
    with pytest.warns(UserWarning) as record:
        model = segformer.load_model(tmp_path / "vit.pth", model="setr-pup", num_classes=19)
    messages = " | ".join(str(w.message) for w in record)
    assert "ImageNet classifier tensors ignored" in messages and "head.weight" in messages
    assert "['encoder.patch_embed.proj.bias', 'encoder.norm.weight', 'encoder.norm.bias']" in messages
    assert "initialised fresh (encoder-only checkpoint;" in messages and "neck, decode_head, aux_heads" in messages
    assert isinstance(model, SETR) and model.config.decoder == "pup" and model.config.num_classes == 19
    enc = model.config.encoder
    assert (enc.embed_dim, enc.depth, enc.num_heads, enc.img_size) == (128, 2, 2, (512, 512))
    assert not enc.patch_bias and not enc.final_norm and enc.with_cls_token
    state = model.state_dict()
    for key in ("blocks.1.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "patch_embed.proj.weight", "cls_token"):
        assert torch.equal(state[f"encoder.{key}"], timm[key]), key
    # 24x24 grid (384 px) -> 32x32 (512 px): bilinear, align_corners=False, class entry kept (mmseg's init_weights)
    grid = timm["pos_embed"][:, 1:].reshape(1, 24, 24, 128).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    assert torch.equal(state["encoder.pos_embed"][:, :1], timm["pos_embed"][:, :1])
    assert torch.allclose(state["encoder.pos_embed"][:, 1:], expected, atol=1e-7)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 19, 64, 64)


def test_timm_vit_alone_is_an_encoder_and_converts_back(tmp_path):
    timm = timm_vit(tmp_path / "vit.pth")
    with pytest.warns(UserWarning, match="ImageNet classifier tensors ignored"):
        encoder = segformer.load_model(tmp_path / "vit.pth")
    assert isinstance(encoder, VisionTransformer)
    cfg = encoder.config
    assert cfg.patch_bias and cfg.final_norm and cfg.img_size == (384, 384) and cfg.out_indices == (0, 1)
    with pytest.warns(UserWarning):
        assert cli.main(["convert", str(tmp_path / "vit.pth"), str(tmp_path / "back.safetensors"), "--to", "timm"]) == 0
    back, _ = read_checkpoint(tmp_path / "back.safetensors")
    assert set(back) == {k for k in timm if not k.startswith("head.")}
    assert all(torch.equal(back[k], timm[k]) for k in back)
    with pytest.warns(UserWarning):  # also the mmseg backbone layout (mmseg's vit2mmseg.py output)
        convert(tmp_path / "vit.pth", tmp_path / "vit_mmseg.pth", to="mmseg")
    mm, _ = read_checkpoint(tmp_path / "vit_mmseg.pth")
    assert "layers.0.ln1.weight" in mm and "ln1.weight" in mm and "patch_embed.projection.bias" in mm
    again = segformer.load_model(tmp_path / "vit_mmseg.pth")
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert same(again(x), encoder(x))
    with pytest.warns(UserWarning, match=r"initialised fresh \(encoder-only"):
        assert segformer.load_model(tmp_path / "vit.pth", task="segmentation").config.decoder == "pup"


def test_bad_inputs_get_clear_errors(tmp_path):
    segformer.create_model("segformer-b0", num_classes=3).save_pretrained(tmp_path / "segformer")
    with pytest.raises(ValueError, match=r"holds a SegFormer \(MiT\) checkpoint, which cannot fill setr-pup: SETR "
                                         r"needs ViT weights"):
        segformer.load_model(tmp_path / "segformer", model="setr-pup")
    timm_vit(tmp_path / "vit.pth")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"model='segformer-b0' is not a SETR model; "
                                                                    r"accepted: setr-mla, "):
        segformer.load_model(tmp_path / "vit.pth", model="segformer-b0")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"patch size is 16x16 .*\(128, 3, 16, 16\)\), "
                                                                    r"the model asks for 8.*use patch_size=16"):
        segformer.load_model(tmp_path / "vit.pth", model="setr-pup", patch_size=8)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"unknown override\(s\) \['depths'\]"):
        segformer.load_model(tmp_path / "vit.pth", depths=3)
    timm_vit(tmp_path / "deit.pth", extra={"dist_token": torch.zeros(1, 1, 128)})
    with pytest.raises(ValueError, match=r"1 key\(s\) are not part of the timm ViT/SETR layout: \['dist_token'\]"):
        segformer.load_model(tmp_path / "deit.pth")
    # a SETR config.json beside SegFormer weights
    cfg = {"segformer": setr_config("pup", **TINY).to_dict()}
    (tmp_path / "segformer" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="the config describes a SETR, but the weights are not a ViT / SETR"):
        segformer.load_model(tmp_path / "segformer")
    # our SETR weights without their config
    randomised("naive").save_pretrained(tmp_path / "ours")
    sd, _ = read_checkpoint(tmp_path / "ours" / "model.safetensors")
    save_file(sd, tmp_path / "lonely.safetensors")
    with pytest.raises(ValueError, match="our SETR layout without its config.json"):
        segformer.load_model(tmp_path / "lonely.safetensors")
    with pytest.raises(ValueError, match="SETR / ViT models convert --to ours, mmseg or timm"):
        convert(tmp_path / "ours", tmp_path / "hf", to="hf")


def test_model_override_keeps_matching_heads_and_replaces_others(tmp_path):
    model = randomised("pup", class_names=list("abcde"))
    model.save_pretrained(tmp_path)
    # the zoo recipe of the same decoder: the checkpoint's heads and classes are kept
    same_recipe = segformer.load_model(tmp_path, model="setr-pup", img_size=(64, 64), out_indices=(0, 1, 2, 3),
                                       channels=16)
    assert same_recipe.config.num_classes == 5 and same_recipe.config.class_names == list("abcde")
    x = torch.randn(1, 3, 64, 64)
    assert same(outputs(same_recipe.eval(), x), outputs(model, x))
    with pytest.warns(UserWarning, match=r"initialised fresh \(heads differ from setr-mla; \d+ parameters\): "
                                         r"neck, decode_head, aux_heads"):
        other = segformer.load_model(tmp_path, model="setr-mla", out_indices=(0, 1, 2, 3))
    assert other.config.decoder == "mla" and not other.config.encoder.with_cls_token
    assert torch.equal(other.encoder.blocks[3].mlp.fc1.weight, model.encoder.blocks[3].mlp.fc1.weight)
