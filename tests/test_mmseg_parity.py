"""Parity with MMSegmentation 1.2.2 itself: random weights saved by mmseg, loaded by us, same input; and our
mmseg export loaded by mmseg's own `init_model`, strictly.

mmseg lives in its own venv (.venv-mmseg, never imported by the package); one subprocess runs
tests/oracles/mmseg_oracle.py for every case of this module. Without that venv the module is skipped, saying so.
"""

import json

import numpy as np
import pytest
import torch

import segformer
from helpers import randomise, run_oracle
from segformer import cli

B0_ADE = "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"
B5_CITYSCAPES = "segformer/segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py"
OUR_CLASSES = ["sky", "road", "tree", "car", "person", "house", "water"]

pytestmark = pytest.mark.mmseg



@pytest.fixture(scope="module")
def oracle(tmp_path_factory, mmseg_python):
    """Every mmseg result of this module from one oracle run: B0-ADE and B5-Cityscapes built and run by mmseg,
    and our mmseg-style B0 (exported with `segformer convert --to mmseg`) loaded and run by mmseg."""
    d = tmp_path_factory.mktemp("mmseg")
    torch.manual_seed(0)
    ours = segformer.create_model("segformer-b0", decoder_style="mmseg", num_classes=7, class_names=OUR_CLASSES)
    randomise(ours)
    ours.eval().save_pretrained(d / "ours")
    assert cli.main(["convert", str(d / "ours"), str(d / "ours_mmseg.pth"), "--to", "mmseg"]) == 0
    x = torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(2))
    np.save(d / "x.npy", x.numpy())
    with torch.no_grad():
        ours_logits = ours(x)
    jobs = [
        dict(mode="build", config=B0_ADE, num_classes=150, seed=0, input_shape=[2, 3, 97, 131],
             classes="ade20k", meta_style="1.x", checkpoint=str(d / "b0.pth"), output=str(d / "b0.npz")),
        dict(mode="build", config=B5_CITYSCAPES, num_classes=19, seed=0, input_shape=[1, 3, 65, 95],
             classes="cityscapes", meta_style="0.x", checkpoint=str(d / "b5.pth"), output=str(d / "b5.npz")),
        dict(mode="load", config=B0_ADE, num_classes=7, input=str(d / "x.npy"),
             checkpoint=str(d / "ours_mmseg.pth"), output=str(d / "ours_in_mmseg.npz")),
    ]
    (d / "jobs.json").write_text(json.dumps(jobs))
    run_oracle("mmseg_oracle.py", ["jobs", str(d / "jobs.json")])
    return dict(dir=d, ours_logits=ours_logits, **{name: dict(np.load(d / f"{name}.npz"))
                                                   for name in ("b0", "b5", "ours_in_mmseg")})


def _run(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x))


def test_b0_ade_mmseg_weights_give_mmseg_logits(oracle):
    ref = oracle["b0"]
    model = segformer.load_model(oracle["dir"] / "b0.pth")
    assert model.config.decoder_style == "mmseg" and model.config.decoder_dim == 256
    assert model.config.num_classes == 150 and model.config.encoder.depths == (2, 2, 2, 2)
    enc = model.config.encoder  # mmseg's MiT: LayerNorm eps 1e-6 everywhere (too small an effect for the bound)
    assert enc.block_eps == enc.stage_eps == enc.patch_embed_eps == enc.sr_eps == 1e-6
    n = sum(p.numel() for p in model.parameters())
    assert n == int(ref["num_params"]) == 3_753_718
    assert ref["input"].shape == (2, 3, 97, 131)
    got = _run(model, ref["input"])
    assert got.shape == ref["logits"].shape == (2, 150, 25, 33)
    assert (got - torch.from_numpy(ref["logits"])).abs().max().item() <= 1e-4
    for i, feature in enumerate(model.encoder(torch.from_numpy(ref["input"]))):
        assert (feature - torch.from_numpy(ref[f"features_{i}"])).abs().max().item() <= 1e-4


def test_b5_cityscapes_mmseg_weights_give_mmseg_logits(oracle):
    ref = oracle["b5"]
    model = segformer.load_model(oracle["dir"] / "b5.pth")
    assert model.config.encoder.depths == (3, 6, 40, 3) and model.config.encoder.embed_dims == (64, 128, 320, 512)
    assert model.config.decoder_dim == 256 and model.config.num_classes == 19
    assert sum(p.numel() for p in model.parameters()) == int(ref["num_params"])
    assert model.config.class_names == list(ref["classes"])  # from meta.CLASSES (mmseg 0.x / NVlabs style)
    assert model.config.class_names[:2] == ["road", "sidewalk"] and len(model.config.class_names) == 19
    got = _run(model, ref["input"])
    assert got.shape == ref["logits"].shape == (1, 19, 17, 24)
    assert (got - torch.from_numpy(ref["logits"])).abs().max().item() <= 1e-4


def test_our_mmseg_export_loads_strictly_in_mmseg(oracle):
    ref = oracle["ours_in_mmseg"]  # mmseg's init_model + load_state_dict(strict=True) succeeded
    got = oracle["ours_logits"]
    assert got.shape == ref["logits"].shape == (2, 7, 25, 33)
    assert (got - torch.from_numpy(ref["logits"])).abs().max().item() <= 1e-4
    assert list(ref["classes"]) == OUR_CLASSES  # the meta we wrote is what mmseg reads back


def test_mmseg_checkpoint_round_trips_bit_exactly(oracle, tmp_path):
    """mmseg file -> ours -> `convert --to mmseg`: the same keys and the same tensors as mmseg wrote."""
    src = oracle["dir"] / "b0.pth"
    assert cli.main(["convert", str(src), str(tmp_path / "again.pth"), "--to", "mmseg"]) == 0
    original = torch.load(src, weights_only=True)["state_dict"]
    again = torch.load(tmp_path / "again.pth", weights_only=True)["state_dict"]
    assert sorted(again) == sorted(original) == sorted(oracle["b0"]["state_keys"])
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_class_names_come_from_the_mmseg_meta(oracle):
    b0 = segformer.load_model(oracle["dir"] / "b0.pth")  # mmseg 1.x: meta.dataset_meta.classes
    assert b0.config.class_names == list(oracle["b0"]["classes"])
    assert b0.config.class_names[:3] == ["wall", "building", "sky"] and len(b0.config.class_names) == 150
    # mmseg 0.x / NVlabs meta.CLASSES: checked on B5 in test_b5_cityscapes_mmseg_weights_give_mmseg_logits
