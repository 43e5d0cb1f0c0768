"""Dice and focal losses and weighted loss lists (`losses:`) equal MMSegmentation 1.2.2's DiceLoss, FocalLoss and
`loss_decode` sums, in value and in gradient, on random logits and labels with ignored pixels; bad lists are
errors that name the entry and what is accepted; training takes the list."""

import json

import numpy as np
import pytest
import torch

from helpers import ORACLES, run_oracle
from segformer.models.loss import combined_loss, parse_losses
from segformer.training.config import TrainConfig

pytestmark = pytest.mark.mmseg

# (ours, mmseg's loss_decode) per case
CASES = [
    ([{"type": "dice", "weight": 3.0}], [{"type": "DiceLoss", "loss_weight": 3.0}]),
    ([{"type": "dice", "use_sigmoid": False, "naive_dice": True, "eps": 1.0}],
     [{"type": "DiceLoss", "use_sigmoid": False, "naive_dice": True, "eps": 1.0}]),
    ([{"type": "focal"}], [{"type": "FocalLoss"}]),
    ([{"type": "focal", "weight": 2.0, "gamma": 1.5, "alpha": [0.2, 0.4, 0.6, 0.8, 0.5]}],
     [{"type": "FocalLoss", "loss_weight": 2.0, "gamma": 1.5, "alpha": [0.2, 0.4, 0.6, 0.8, 0.5]}]),
    # mmseg's CE divides by every pixel unless avg_non_ignore=True; ours (as HF and F.cross_entropy) by labelled ones
    ([{"type": "cross_entropy", "weight": 1.0}, {"type": "dice", "weight": 3.0}, {"type": "focal", "weight": 0.5}],
     [{"type": "CrossEntropyLoss", "loss_weight": 1.0, "avg_non_ignore": True},
      {"type": "DiceLoss", "loss_weight": 3.0}, {"type": "FocalLoss", "loss_weight": 0.5}]),
]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, mmseg_python):
    d = tmp_path_factory.mktemp("losses")
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 5, 12, 20, generator=g) * 2).numpy()
    labels = torch.randint(0, 5, (2, 48, 80), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.25] = 255
    labels[0, :10] = 255  # an ignored band
    np.savez(d / "input.npz", logits=logits, labels=labels.numpy())
    (d / "cases.json").write_text(json.dumps([mm for _, mm in CASES]))
    run_oracle(ORACLES / "mmseg_losses.py", [str(d / "input.npz"), str(d / "cases.json"), str(d / "out.npz")])
    return dict(logits=logits, labels=labels, **np.load(d / "out.npz"))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_loss_list_equals_mmseg(oracle, case):
    logits = torch.from_numpy(oracle["logits"]).requires_grad_(True)
    loss = combined_loss(logits, oracle["labels"], parse_losses(CASES[case][0]), ignore_index=255)
    loss.backward()
    assert abs(loss.item() - float(oracle[f"loss_{case}"])) <= 1e-5
    assert np.abs(logits.grad.numpy() - oracle[f"grad_{case}"]).max() <= 1e-5


@pytest.mark.parametrize("spec,message", [
    ([{"type": "dic"}],
     "losses[0]: unknown loss type 'dic' (did you mean 'dice'?); accepted: cross_entropy, dice, focal"),
    ([{"type": "dice", "weight": 1}, {"type": "focal", "gama": 2.0}],
     "losses[1] (focal): unknown key 'gama' (did you mean 'gamma'?); accepted: type, weight, gamma, alpha"),
    ([{"weight": 1.0}], "losses[0]: expected a mapping with a `type`"),
    ([{"type": "dice", "weight": -1}], "losses[0]: weight must be a number >= 0, got -1"),
    ([{"type": "dice", "use_sigmoid": "yes"}], "losses[0] (dice): use_sigmoid must be true or false, got 'yes'"),
    ([], "losses: expected a non-empty list"),
])
def test_bad_loss_lists_are_named(spec, message):
    with pytest.raises(ValueError) as info:
        TrainConfig(losses=spec)
    assert message in str(info.value)


def test_mmseg_names_and_defaults():
    terms = parse_losses([{"type": "CrossEntropyLoss"}, {"type": "DiceLoss", "weight": 3}])
    assert [(t.type, t.weight) for t in terms] == [("cross_entropy", 1.0), ("dice", 3.0)]
    assert terms[1].options == {"use_sigmoid": True, "naive_dice": False, "eps": 1e-3}


def test_training_loss_uses_the_list_and_keeps_setr_aux_cross_entropy():
    from segformer import create_model
    from segformer.models import segmentation_loss
    from segformer.training.losses import SegmentationLoss

    torch.manual_seed(0)
    spec = [{"type": "cross_entropy"}, {"type": "dice", "weight": 3.0}]
    x, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    setr = create_model("setr-naive", num_classes=3, depth=4, embed_dim=32, num_heads=2, channels=8,
                        img_size=(32, 32)).eval()
    with torch.no_grad():
        got = SegmentationLoss(255, None, spec)(setr, x, labels)
        logits, aux = setr.forward_aux(x)
    expected = combined_loss(logits, labels, parse_losses(spec)) + sum(0.4 * segmentation_loss(a, labels) for a in aux)
    assert abs(got.item() - expected.item()) <= 1e-6
    pose = create_model("segformer-b0-pose", num_classes=2, embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="a loss list applies to segmentation models, not to a pose model"):
        pose.loss(torch.zeros(1, 2, 4, 4), (torch.zeros(1, 2, 4, 4), torch.ones(1, 2)), losses=parse_losses(spec))
