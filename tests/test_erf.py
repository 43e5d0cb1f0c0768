"""`segformer erf` on a tiny model: later stages see more of the image than stage 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import segformer
from segformer.cli import main
from segformer.data import write_synthetic
from segformer.erf import effective_receptive_fields, erf_area


def test_erf_command_later_stage_covers_more_pixels(tmp_path, capsys):
    root = write_synthetic(tmp_path / "synth", num_train=0, num_val=1, seed=2, min_size=48, max_size=48)
    torch.manual_seed(0)
    segformer.create_model("segformer-b0", num_classes=6, depths=(1, 1, 1, 1), decoder_dim=32).save_pretrained(
        tmp_path / "model")
    out = tmp_path / "erf"
    assert main(["erf", "--model", str(tmp_path / "model"), "--data", str(root), "--images", "1",
                 "--size", "64", "64", "--out", str(out), "--device", "cpu"]) == 0
    assert "stage4" in capsys.readouterr().out
    for name in ("erf.png", "erf_stage1.png", "erf_stage4.png", "erf_decoder.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    areas = json.loads((out / "erf.json").read_text())["area_at_threshold"]
    for threshold in ("0.01", "0.05", "0.2"):
        assert areas["stage4"][threshold] > areas["stage3"][threshold] > areas["stage1"][threshold] > 0
    # measured: stage 1 ~1.2% of the 64x64 input at 5% of its peak (its 7x7 patch window), stage 4 ~94%
    assert areas["stage4"]["0.05"] >= 0.5 and areas["stage4"]["0.05"] >= 20 * areas["stage1"]["0.05"]
    # stage 1 starts with a 7x7 stride-4 conv: its centre pixel sees at least that window of the input
    assert areas["stage1"]["0.01"] >= 49 / 64**2
    assert main(["erf", "--model", str(tmp_path / "model"), "--data", str(root), "--images", "1",
                 "--size", "64", "64", "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_erf_map_is_the_input_gradient_of_the_centre_activation():
    torch.manual_seed(0)
    model = segformer.create_model("segformer-b0", num_classes=3, depths=(1, 1, 1, 1), decoder_dim=16).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    erf = effective_receptive_fields(model, [x], targets=("stage2",))["stage2"]
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # only the input got gradients
    xr = x.clone().requires_grad_(True)
    feat = model.encoder(xr)[1]
    torch.relu(feat[0, :, feat.shape[2] // 2, feat.shape[3] // 2]).sum().backward()
    np.testing.assert_allclose(erf, xr.grad.abs().sum(dim=(0, 1)).numpy(), rtol=1e-6, atol=0)
    assert erf_area(np.zeros((4, 4))) == 0.0
    with pytest.raises(ValueError, match="unknown ERF targets"):
        effective_receptive_fields(model, [x], targets=("stage5",))
