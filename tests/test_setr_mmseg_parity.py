"""SETR parity with MMSegmentation 1.2.2: random weights saved by mmseg (from the SETR configs shipped in its
wheel, SyncBN -> BN), loaded by us, same input: decode-head and every auxiliary head's logits within 1e-4, at
512x512 and at 384x512 (a token grid that forces the positional embedding to be resized). The real ViT-L
configs run once per decoder (slow); narrow ViT-L-shaped configs (patch 16, 4 blocks, width 64) cover the
ADE20K and Cityscapes recipes of each decoder. Our mmseg export is loaded by mmseg itself, strictly.

mmseg lives in its own venv (.venv-mmseg, never imported by the package), run through tests/oracles/*.py in a
subprocess.
"""

import json
import warnings

import numpy as np
import pytest
import torch

import segformer
from helpers import randomise, run_oracle
from segformer import cli
from segformer.models import SETR

SETR_ORACLE, ORACLE = "mmseg_setr_oracle.py", "mmseg_oracle.py"  # in tests/oracles
CONFIGS = {
    ("naive", "ade20k"): "setr/setr_vit-l_naive_8xb2-160k_ade20k-512x512.py",
    ("pup", "ade20k"): "setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py",
    ("mla", "ade20k"): "setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py",
    ("naive", "cityscapes"): "setr/setr_vit-l_naive_8xb1-80k_cityscapes-768x768.py",
    ("pup", "cityscapes"): "setr/setr_vit-l_pup_8xb1-80k_cityscapes-768x768.py",
    ("mla", "cityscapes"): "setr/setr_vit-l_mla_8xb1-80k_cityscapes-768x768.py",
}
SHAPES = [[1, 3, 512, 512], [1, 3, 384, 512]]  # ADE20K's native 32x32 grid, then a resized one
MMSEG_PARAMS = {"naive": 305.6e6, "pup": 317.3e6, "mla": 309.6e6}  # mmseg's ViT-L SETR counts, 150 classes
TOL = 1e-4

pytestmark = pytest.mark.mmseg


def narrow(decoder: str, dataset: str) -> dict:
    """cfg_options shrinking a SETR config to width 64, 4 blocks (all tapped), 32-channel heads."""
    aux = 4 if decoder == "mla" else 3
    opts = {"model.backbone.embed_dims": 64, "model.backbone.num_layers": 4, "model.backbone.num_heads": 4,
            "model.backbone.out_indices": [0, 1, 2, 3]}
    if decoder == "mla":
        opts.update({"model.neck.in_channels": [64] * 4, "model.neck.out_channels": 32,
                     "model.decode_head.in_channels": [32] * 4, "model.decode_head.channels": 64,
                     "model.decode_head.mla_channels": 16})
        opts.update({f"model.auxiliary_head.{i}.{k}": 32 for i in range(aux) for k in ("in_channels", "channels")})
    else:
        opts.update({"model.decode_head.in_channels": 64, "model.decode_head.channels": 32})
        opts.update({f"model.auxiliary_head.{i}.in_channels": 64 for i in range(aux)})
        opts.update({f"model.auxiliary_head.{i}.channels": 32 for i in range(aux)})
    return opts


def compare(model: torch.nn.Module, ref: dict) -> list[float]:
    """Max abs differences [decode head, aux 0, aux 1, ...] of `model` vs mmseg on mmseg's input."""
    with torch.no_grad():
        logits, aux = model.forward_aux(torch.from_numpy(ref["input"]))
    n_aux = sum(k.startswith("aux_logits_") for k in ref)
    assert len(aux) == n_aux
    diffs = []
    for ours, key in zip([logits, *aux], ["logits"] + [f"aux_logits_{j}" for j in range(n_aux)], strict=True):
        assert tuple(ours.shape) == ref[key].shape, key
        diffs.append(float(np.abs(ours.numpy() - ref[key]).max()))
    return diffs


@pytest.fixture(scope="module")
def narrow_oracle(tmp_path_factory):
    """All six narrow SETR recipes built by mmseg in one oracle process."""
    d = tmp_path_factory.mktemp("setr_narrow")
    # Cityscapes' 768 crop gives a 48x48 grid: both sizes resize, so one suffices
    jobs = [dict(config=config, cfg_options=narrow(*key), num_classes=7, seed=i,
                 input_shapes=SHAPES if key[1] == "ade20k" else SHAPES[1:],
                 checkpoint=str(d / f"{key[0]}_{key[1]}.pth"), output=str(d / f"{key[0]}_{key[1]}"))
            for i, (key, config) in enumerate(CONFIGS.items())]
    (d / "jobs.json").write_text(json.dumps(jobs))
    run_oracle(SETR_ORACLE, ["--jobs", str(d / "jobs.json")])
    return d


@pytest.mark.parametrize("decoder", ["naive", "pup", "mla"])
@pytest.mark.parametrize("dataset", ["ade20k", "cityscapes"])
def test_narrow_recipe_parity(narrow_oracle, decoder, dataset):
    name = f"{decoder}_{dataset}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a complete mmseg checkpoint: nothing dropped, nothing fresh
        model = segformer.load_model(narrow_oracle / f"{name}.pth", num_heads=4).eval()
    assert isinstance(model, SETR) and model.config.decoder == decoder and model.config.num_classes == 7
    preset = segformer.create_model(f"setr-{decoder}-{'ade-512' if dataset == 'ade20k' else 'cityscapes-768'}",
                                    depth=4, embed_dim=64, num_heads=4, out_indices=(0, 1, 2, 3))
    # the zoo preset has the same recipe: crop size, class-token use and auxiliary heads
    for field in ("aux_indices", "aux_num_convs", "aux_kernel_size", "num_convs", "kernel_size", "up_scale"):
        assert getattr(preset.config, field) == getattr(model.config, field), field
    assert preset.config.encoder.img_size == model.config.encoder.img_size
    assert preset.config.encoder.with_cls_token == (decoder != "mla")
    for i, shape in enumerate(SHAPES if dataset == "ade20k" else SHAPES[1:]):
        ref = dict(np.load(narrow_oracle / f"{name}_{i}.npz"))
        assert int(ref["num_params"]) == sum(p.numel() for p in model.parameters())
        diffs = compare(model, ref)
        assert max(diffs) <= TOL, f"{name} at {shape[2:]}: {diffs}"



@pytest.fixture(scope="module")
def export_oracle(tmp_path_factory):
    """Narrow SETR-PUP and SETR-MLA of ours -> `segformer convert --to mmseg` -> mmseg's init_model + strict
    load_state_dict, run by mmseg on our input (one oracle process)."""
    d = tmp_path_factory.mktemp("setr_export")
    x = torch.randn(1, 3, 384, 512, generator=torch.Generator().manual_seed(3))
    np.save(d / "x.npy", x.numpy())
    ours, jobs = {}, []
    for decoder in ("pup", "mla"):
        torch.manual_seed(0)
        model = segformer.create_model(f"setr-{decoder}", num_classes=7, depth=4, embed_dim=64, num_heads=4,
                                       out_indices=(0, 1, 2, 3), channels=32, mla_channels=16,
                                       class_names=[f"class{i}" for i in range(7)]).eval()
        randomise(model)
        model.save_pretrained(d / decoder)
        assert cli.main(["convert", str(d / decoder), str(d / f"{decoder}.pth"), "--to", "mmseg"]) == 0
        with torch.no_grad():
            ours[decoder] = model.forward_aux(x)
        jobs.append(dict(mode="load", config=CONFIGS[decoder, "ade20k"], num_classes=7,
                         cfg_options=narrow(decoder, "ade20k"), input=str(d / "x.npy"),
                         checkpoint=str(d / f"{decoder}.pth"), output=str(d / f"{decoder}.npz")))
    (d / "jobs.json").write_text(json.dumps(jobs))
    run_oracle(ORACLE, ["jobs", str(d / "jobs.json")])
    return {decoder: (ours[decoder], dict(np.load(d / f"{decoder}.npz"))) for decoder in ours}


@pytest.mark.parametrize("decoder", ["pup", "mla"])
def test_mmseg_loads_our_export(export_oracle, decoder):
    (logits, aux), ref = export_oracle[decoder]
    assert list(ref["classes"]) == [f"class{i}" for i in range(7)]
    assert float(np.abs(logits.numpy() - ref["logits"]).max()) <= TOL
    assert len(aux) == (4 if decoder == "mla" else 3)
    for j, a in enumerate(aux):
        assert float(np.abs(a.numpy() - ref[f"aux_logits_{j}"]).max()) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("decoder, height", [("naive", 512), ("pup", 384), ("mla", 384)])
def test_vit_large_parity(tmp_path, decoder, height):
    """The shipped ADE20K ViT-L config itself: parameter count and logits, at 512x512 (native grid) for Naive and
    at 384x512 (resized pos_embed) for PUP (class token kept) and MLA (dropped). One size each to save CI time:
    the narrow configs above run every decoder at both sizes."""
    ckpt = tmp_path / f"{decoder}.pth"
    run_oracle(SETR_ORACLE, ["--config", CONFIGS[decoder, "ade20k"], "--checkpoint", str(ckpt), "--output",
                             str(tmp_path / decoder), "--input-shape", "1", "3", str(height), "512"])
    model = segformer.load_model(ckpt).eval()  # architecture read off the tensors, no overrides
    ckpt.unlink()
    count = sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        assert sum(p.numel() for p in segformer.create_model(f"setr-{decoder}").parameters()) == count
    assert round(count / 1e5) == round(MMSEG_PARAMS[decoder] / 1e5)
    ref = dict(np.load(tmp_path / f"{decoder}_0.npz"))
    (tmp_path / f"{decoder}_0.npz").unlink()  # up to 0.5 GB of logits; pytest keeps recent tmp dirs
    assert int(ref["num_params"]) == count
    diffs = compare(model, ref)
    print(f"ViT-L {decoder} {height}x512: max abs diff decode, aux = {diffs}")
    assert max(diffs) <= TOL, f"ViT-L {decoder} {height}x512: {diffs}"
