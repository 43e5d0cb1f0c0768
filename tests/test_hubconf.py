"""hubconf.py: torch.hub builds the zoo models from a local clone."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_torch_hub_local_builds_a_model():
    model = torch.hub.load(str(ROOT), "segformer_b0", source="local", num_classes=3, depths=[1, 1, 1, 1])
    assert model.config.num_classes == 3 and model.config.encoder.depths == (1, 1, 1, 1)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 16, 16)
    setr = torch.hub.load(str(ROOT), "setr_naive", source="local", num_classes=2, depth=1)
    assert setr.config.num_classes == 2


def test_pretrained_needs_a_preset_with_a_hub_id():
    with pytest.raises(ValueError, match="segformer-b0 has no pretrained weights"):
        torch.hub.load(str(ROOT), "segformer_b0", source="local", pretrained=True)
