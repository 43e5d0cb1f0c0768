"""Checkpoint formats without the mmseg oracle: HF <-> NVlabs round trips, bare NVlabs ImageNet files, format
detection, architecture inference from tensor shapes, refusal of bad input, and the `convert` command."""

import os
import pickle
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import SegformerConfig, SegformerForImageClassification, SegformerForSemanticSegmentation

import segformer
from helpers import randomise
from segformer import cli
from segformer.checkpoints import convert, detect_format, read_checkpoint, read_source
from segformer.models import MixTransformer, SegFormer

# A small MiT that is none of B0-B5: dims divisible by the default heads (1, 2, 5, 8), which shapes cannot show.
DIMS, DEPTHS, SR, MLP = [16, 32, 80, 128], [1, 2, 1, 3], [4, 2, 2, 1], [4, 4, 2, 2]
X = torch.randn(2, 3, 71, 90, generator=torch.Generator().manual_seed(0))


def hf_config(**kw) -> SegformerConfig:
    return SegformerConfig(hidden_sizes=DIMS, depths=DEPTHS, sr_ratios=SR, mlp_ratios=MLP, **kw)



def logits(model: torch.nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def hf_logits(model: torch.nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


# NVlabs names from HF's on-disk names, written here from the NVlabs release's key list (not with
# the package's own key tables, so a shared mistake cannot hide).
_HF_TO_NVLABS = [
    (r"encoder\.patch_embeddings\.(\d+)\.layer_norm", "patch_embed{}.norm"),
    (r"encoder\.patch_embeddings\.(\d+)\.proj", "patch_embed{}.proj"),
    (r"encoder\.block\.(\d+)\.", "block{}."),
    (r"encoder\.layer_norm\.(\d+)", "norm{}"),
]
_HF_TO_NVLABS_BLOCK = [("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), ("attention.self.query", "attn.q"),
                       ("attention.self.sr", "attn.sr"), ("attention.self.layer_norm", "attn.norm"),
                       ("attention.output.dense", "attn.proj"), ("mlp.dense1", "mlp.fc1"), ("mlp.dense2", "mlp.fc2")]


def hf_to_nvlabs_bare(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ImageNet `mit_bX.pth`-style dict (bare encoder keys + `head`) from an HF classifier's on-disk keys."""
    out = {}
    for key, value in hf_sd.items():
        key = key.removeprefix("segformer.")
        if key.startswith("classifier."):
            out["head." + key.split(".", 1)[1]] = value
            continue
        if ".attention.self.value." in key:
            continue
        for pattern, template in _HF_TO_NVLABS:
            key = re.sub(pattern, lambda m, t=template: t.format(int(m.group(1)) + 1), key)
        if ".attention.self.key." in key:
            value = torch.cat([value, hf_sd["segformer." + _unmap(key).replace(".key.", ".value.")]])
            key = key.replace("attention.self.key", "attn.kv")
        for old, new in _HF_TO_NVLABS_BLOCK:
            key = key.replace(old, new)
        out[key] = value
    return out


def _unmap(nv_key: str) -> str:
    m = re.match(r"block(\d+)\.(.*)", nv_key)
    return f"encoder.block.{int(m.group(1)) - 1}.{m.group(2)}"


def set_nvlabs_eps(model: torch.nn.Module) -> None:
    """NVlabs' eps in an HF model: PyTorch's default 1e-5 in patch-embed and sr norms, 1e-6 elsewhere."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-5 if "patch_embeddings" in name or "sequence_reduction" in name else 1e-6


@pytest.fixture(scope="module")
def hf_seg(tmp_path_factory):
    """A random HF segmentation model (7 classes, decoder 40) saved by transformers, and its directory."""
    torch.manual_seed(0)
    model = randomise(SegformerForSemanticSegmentation(hf_config(num_labels=7, decoder_hidden_size=40))).eval()
    directory = tmp_path_factory.mktemp("hf_seg")
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope="module")
def hf_cls_bare(tmp_path_factory):
    """A random HF classifier and the same weights as a bare NVlabs ImageNet file (encoder keys + head)."""
    torch.manual_seed(1)
    model = randomise(SegformerForImageClassification(hf_config(num_labels=10))).eval()
    directory = tmp_path_factory.mktemp("hf_cls")
    model.save_pretrained(directory)
    path = directory / "mit_tiny.pth"
    torch.save(hf_to_nvlabs_bare(load_file(directory / "model.safetensors")), path)
    return model, path


# ---------------------------------------------------------------------------------------------------------------
# Round trips and layouts


def test_hf_to_nvlabs_to_ours_identical(hf_seg, tmp_path):
    ref, hf_dir = hf_seg
    dst = tmp_path / "nv.pth"
    assert cli.main(["convert", str(hf_dir), str(dst), "--to", "nvlabs"]) == 0
    ckpt = torch.load(dst, weights_only=True)
    sd, hf_sd = ckpt["state_dict"], load_file(hf_dir / "model.safetensors")
    # the NVlabs fine-tuned layout: backbone. prefix, fused kv (k rows first), decode_head.linear_fuse.conv
    kv = sd["backbone.block2.1.attn.kv.weight"]
    assert kv.shape == (2 * DIMS[1], DIMS[1])
    assert torch.equal(kv, torch.cat([hf_sd["segformer.encoder.block.1.1.attention.self.key.weight"],
                                      hf_sd["segformer.encoder.block.1.1.attention.self.value.weight"]]))
    assert torch.equal(sd["decode_head.linear_fuse.conv.weight"], hf_sd["decode_head.linear_fuse.weight"])
    assert torch.equal(sd["decode_head.linear_pred.bias"], hf_sd["decode_head.classifier.bias"])
    assert {"backbone.patch_embed1.proj.weight", "backbone.norm4.weight", "decode_head.linear_c1.proj.weight",
            "decode_head.linear_fuse.bn.running_var"} <= set(sd)
    from_hf, from_nv = segformer.load_model(hf_dir), segformer.load_model(dst)
    assert torch.equal(logits(from_nv), logits(from_hf))
    assert (logits(from_nv) - hf_logits(ref)).abs().max().item() <= 1e-4
    # and back: NVlabs -> HF directory that transformers loads, same logits
    assert cli.main(["convert", str(dst), str(tmp_path / "hf_again"), "--to", "hf"]) == 0
    again = SegformerForSemanticSegmentation.from_pretrained(tmp_path / "hf_again").eval()
    assert (hf_logits(again) - hf_logits(ref)).abs().max().item() <= 1e-5


def test_nvlabs_bare_imagenet_file_is_a_classifier(hf_cls_bare):
    ref, path = hf_cls_bare
    set_nvlabs_eps(ref)
    model = segformer.load_model(path)
    assert isinstance(model, SegFormer) and model.config.task == "classification"
    assert model.config.num_classes == 10
    enc = model.config.encoder
    assert (enc.block_eps, enc.stage_eps, enc.patch_embed_eps, enc.sr_eps) == (1e-6, 1e-6, 1e-5, 1e-5)
    got, expected = logits(model), hf_logits(ref)
    assert got.shape == expected.shape == (2, 10)
    assert (got - expected).abs().max().item() <= 1e-4


def test_nvlabs_bare_file_for_segmentation_reports_fresh_decoder(hf_cls_bare):
    _, path = hf_cls_bare
    with pytest.warns(UserWarning, match=r"the segmentation head \(decode_head\.\*, \d+ parameters\) is initialised "
                                         r"fresh"):
        model = segformer.load_model(path, task="segmentation", num_classes=19, decoder_dim=64)
    assert model.config.task == "segmentation" and model.config.num_classes == 19
    assert logits(model).shape == (2, 19, 18, 23)
    bare = torch.load(path, weights_only=True)
    assert torch.equal(model.encoder.stages[2].blocks[0].attn.kv.weight, bare["block3.0.attn.kv.weight"])
    encoder = segformer.load_model(path, task="encoder")
    assert isinstance(encoder, MixTransformer) and len(encoder(X)) == 4


def _layouts(hf_seg, hf_cls_bare, tmp_path) -> dict[str, dict[str, torch.Tensor]]:
    ref, hf_dir = hf_seg
    torch.manual_seed(2)
    mm = segformer.create_model("segformer-b0", decoder_style="mmseg", num_classes=3, depths=(1, 1, 1, 1))
    mm.save_pretrained(tmp_path / "mm_ours")
    convert(tmp_path / "mm_ours", tmp_path / "mm.pth", to="mmseg")
    convert(hf_dir, tmp_path / "nv.pth", to="nvlabs")
    return {
        "hf": load_file(hf_dir / "model.safetensors"),  # legacy on-disk names
        "hf-v5": ref.state_dict(),  # transformers 5's in-memory names
        "nvlabs-bare": torch.load(hf_cls_bare[1], weights_only=True),
        "nvlabs": read_checkpoint(tmp_path / "nv.pth")[0],
        "mmseg": read_checkpoint(tmp_path / "mm.pth")[0],
        "ours": read_checkpoint(tmp_path / "mm_ours" / "model.safetensors")[0],
    }


def test_detect_format_on_each_layout(hf_seg, hf_cls_bare, tmp_path):
    layouts = _layouts(hf_seg, hf_cls_bare, tmp_path)
    expected = {"hf": "hf", "hf-v5": "hf", "nvlabs-bare": "nvlabs", "nvlabs": "nvlabs", "mmseg": "mmseg",
                "ours": "ours"}
    assert {name: detect_format(list(sd)) for name, sd in layouts.items()} == expected
    assert detect_format(list(resnet_state_dict())) is None


def test_shapes_give_the_architecture_without_a_config(hf_seg, tmp_path):
    """A bare file (no config.json, no config in the meta) is rebuilt from its tensor shapes alone."""
    ref, hf_dir = hf_seg
    nv = tmp_path / "nv.pth"
    convert(hf_dir, nv, to="nvlabs")
    bare_nv = tmp_path / "bare_nv.pth"
    torch.save({"state_dict": torch.load(nv, weights_only=True)["state_dict"]}, bare_nv)
    bare_hf = tmp_path / "v5.pth"
    torch.save(ref.state_dict(), bare_hf)  # transformers 5 in-memory names, no config.json beside it
    for path, eps in ((bare_nv, (1e-6, 1e-5)), (bare_hf, (1e-5, 1e-5))):
        _, config, has_head = read_source(path)
        enc = config.encoder
        assert has_head and config.task == "segmentation" and config.decoder_style == "hf"
        assert (list(enc.depths), list(enc.embed_dims), list(enc.sr_ratios), list(enc.mlp_ratios)) == (
            DEPTHS, DIMS, SR, MLP)
        assert (enc.patch_sizes, enc.strides) == ((7, 3, 3, 3), (4, 2, 2, 2))
        assert (config.decoder_dim, config.num_classes) == (40, 7)
        assert (enc.block_eps, enc.patch_embed_eps) == eps
        model = segformer.load_model(path)
        assert (logits(model) - hf_logits(ref)).abs().max().item() <= 1e-4
    mm = segformer.create_model("segformer-b1", decoder_style="mmseg", num_classes=4, depths=(1, 2, 1, 1),
                                decoder_dim=48)
    mm.save_pretrained(tmp_path / "mm_ours")
    convert(tmp_path / "mm_ours", tmp_path / "mm.pth", to="mmseg")
    torch.save({"state_dict": torch.load(tmp_path / "mm.pth", weights_only=True)["state_dict"]}, tmp_path / "b.pth")
    _, config, _ = read_source(tmp_path / "b.pth")
    assert (config.decoder_style, config.decoder_dim, config.num_classes) == ("mmseg", 48, 4)
    assert config.encoder.depths == (1, 2, 1, 1) and config.encoder.embed_dims == (64, 128, 320, 512)
    assert config.encoder.block_eps == config.encoder.patch_embed_eps == 1e-6


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one-line errors naming the file or name and what is accepted


def resnet_state_dict() -> dict[str, torch.Tensor]:
    return {"conv1.weight": torch.zeros(8, 3, 7, 7), "bn1.weight": torch.ones(8), "bn1.running_mean": torch.zeros(8),
            "layer1.0.conv1.weight": torch.zeros(8, 8, 3, 3), "fc.weight": torch.zeros(10, 8),
            "fc.bias": torch.zeros(10)}


def _error(exc_type, source, **kw) -> str:
    with pytest.raises(exc_type) as info:
        segformer.load_model(source, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_corrupt_files_are_refused(hf_seg, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    message = _error(ValueError, junk)
    assert str(junk) in message and "not a readable PyTorch checkpoint" in message and ".safetensors" in message
    _, hf_dir = hf_seg
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes((hf_dir / "model.safetensors").read_bytes()[:5000])
    message = _error(ValueError, truncated)
    assert str(truncated) in message and "not a readable safetensors file" in message


def test_non_checkpoint_files_are_refused(tmp_path):
    text = tmp_path / "x.pth"
    text.write_text("this is a text file, not weights\n")
    message = _error(ValueError, text)
    assert str(text) in message and "not a readable PyTorch checkpoint" in message
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"epoch": 3, "name": "resnet"}}, plain)  # loadable, but no tensors
    message = _error(ValueError, plain)
    assert str(plain) in message and "no state dict of tensors" in message and "'state_dict'" in message


class _Payload:
    """Unpickling this calls open(marker, "w"): it creates the marker file (code execution)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 5")
def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil_zip = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, evil_zip)
    evil_raw = tmp_path / "evil_raw.bin"
    evil_raw.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    evil_new = tmp_path / "evil_new.pt"  # protocol 5: torch's restricted unpickler stops at an opcode
    evil_new.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=5))
    pickle.loads(evil_raw.read_bytes())["w"].close()  # proof the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    for path in (evil_zip, evil_raw):
        message = _error(ValueError, path)
        assert str(path) in message and "refused" in message and "references io.open" in message
        assert "weights_only=False" not in message and not marker.exists()
    message = _error(ValueError, evil_new)
    assert str(evil_new) in message and "weights_only" not in message and not marker.exists()


def test_unknown_model_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _error(FileNotFoundError, "segformer-b9")
    assert "segformer-b9" in message and "segformer models" in message
    with pytest.raises(ValueError, match=r"unknown model name 'segformer-b9'; accepted: .*segformer-b0"):
        segformer.create_model("segformer-b9")


def test_checkpoint_of_another_architecture(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": resnet_state_dict()}, path)
    message = _error(ValueError, path)
    assert str(path) in message
    assert "not a SegFormer checkpoint in any known layout (ours, hf, nvlabs, mmseg)" in message
    assert "conv1.weight" in message


def test_missing_unexpected_and_misshaped_keys_are_listed(hf_seg, tmp_path):
    _, hf_dir = hf_seg
    sd = load_file(hf_dir / "model.safetensors")
    missing = dict(sd)
    del missing["segformer.encoder.block.1.1.mlp.dense2.bias"]
    save_file(missing, tmp_path / "missing.safetensors")
    message = _error(ValueError, tmp_path / "missing.safetensors")
    assert "missing (1)" in message and "encoder.stages.1.blocks.1.mlp.fc2.bias" in message
    extra = dict(sd, **{"segformer.encoder.block.0.0.attention.self.rope.weight": torch.zeros(3)})
    save_file(extra, tmp_path / "extra.safetensors")
    message = _error(ValueError, tmp_path / "extra.safetensors")
    assert "not part of the hf SegFormer layout" in message and "attention.self.rope.weight" in message
    directory = tmp_path / "misshaped"
    directory.mkdir()
    (directory / "config.json").write_text((hf_dir / "config.json").read_text())
    save_file(dict(sd, **{"decode_head.classifier.bias": torch.zeros(9)}), directory / "model.safetensors")
    message = _error(ValueError, directory)
    assert "mis-shaped (1)" in message and "decode_head.classifier.bias: checkpoint (9,) vs model (7,)" in message


def test_unknown_override_is_named(hf_seg):
    message = _error(ValueError, hf_seg[1], num_layers=3)
    assert "num_layers" in message and "accepted" in message and "num_classes" in message


def test_hub_id_offline_with_nothing_cached(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import time: patch the live values too
    monkeypatch.setattr(hub_constants, "HF_HOME", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for source in ("nvidia/segformer-b0-finetuned-ade-512-512", "segformer-b0-ade-512"):
        message = _error(FileNotFoundError, source)
        assert "nvidia/segformer-b0-finetuned-ade-512-512: not in the local Hugging Face cache" in message
        assert "hf download nvidia/segformer-b0-finetuned-ade-512-512" in message


# ---------------------------------------------------------------------------------------------------------------
# convert: never clobbers, refuses layouts it cannot express, works from the CLI


def test_convert_refuses_to_clobber(hf_seg, tmp_path, capsys):
    _, hf_dir = hf_seg
    dst = tmp_path / "nv.pth"
    dst.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=re.escape(str(dst)) + r".*overwrite"):
        convert(hf_dir, dst, to="nvlabs")
    assert cli.main(["convert", str(hf_dir), str(dst), "--to", "nvlabs"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert dst.read_bytes() == b"precious"
    out_dir = tmp_path / "hf_out"
    out_dir.mkdir()
    (out_dir / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="config.json"):
        convert(hf_dir, out_dir, to="hf")
    assert (out_dir / "config.json").read_text() == "{}" and not (out_dir / "model.safetensors").exists()
    assert cli.main(["convert", str(hf_dir), str(dst), "--to", "nvlabs", "--overwrite"]) == 0
    assert detect_format(list(read_checkpoint(dst)[0])) == "nvlabs"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_convert_cli_formats(hf_seg, tmp_path, capsys):
    ref, hf_dir = hf_seg
    assert cli.main(["convert", str(hf_dir), str(tmp_path / "ours"), "--to", "ours"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert detect_format(list(read_checkpoint(tmp_path / "ours" / "model.safetensors")[0])) == "ours"
    assert (logits(segformer.load_model(tmp_path / "ours")) - hf_logits(ref)).abs().max().item() <= 1e-4
    assert cli.main(["convert", str(hf_dir), str(tmp_path / "nv.safetensors"), "--to", "nvlabs"]) == 0
    assert torch.equal(logits(segformer.load_model(tmp_path / "nv.safetensors")),
                       logits(segformer.load_model(hf_dir)))
    # an HF-style decoder has no mmseg layout: a clear refusal, nothing written
    assert cli.main(["convert", str(hf_dir), str(tmp_path / "mm.pth"), "--to", "mmseg"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segformer convert: error:") and "--to hf" in err
    assert not (tmp_path / "mm.pth").exists()
    with pytest.raises(SystemExit):
        cli.main(["convert", str(hf_dir), str(tmp_path / "x.pth"), "--to", "onnx"])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
