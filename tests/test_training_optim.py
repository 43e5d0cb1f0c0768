"""Optimiser rules and schedules against MMSegmentation / mmengine (fixtures written by them:
tests/oracles/mmseg_param_groups.py, tests/oracles/mmseg_lr_schedule.py), and the training losses."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from segformer import create_model
from segformer.checkpoints import mmseg as mmseg_format
from segformer.models import segmentation_loss as cross_entropy
from segformer.training.config import TrainConfig
from segformer.training.losses import SegmentationLoss
from segformer.training.optim import LRSchedule, build_optimizer, param_groups

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_SETR = dict(depth=4, embed_dim=32, num_heads=2, img_size=(32, 32), channels=16, mla_channels=8)


def our_rules(model, **kwargs) -> dict[str, tuple[float, float]]:
    return {name: (g["lr"], g["weight_decay"]) for g in param_groups(model, **kwargs) for name, _ in g["params"]}


def test_segformer_param_groups_match_mmseg_builder():
    """Every parameter's (lr, weight decay) as mmengine's builder set them for mmseg's SegFormer-B0 config
    (custom_keys head lr x10, norm / pos_block decay 0). mmseg names are mapped to ours by tagging each fixture
    tensor with its row number and sending it through our mmseg checkpoint key map (which also splits mmseg's
    fused q/k/v into our q and kv)."""
    fixture = json.loads((FIXTURES / "mmseg_segformer_b0_param_groups.json").read_text())
    rows = fixture["params"]
    tagged = {r["name"]: torch.full(r["shape"], float(i)) for i, r in enumerate(rows)}
    native, unknown = mmseg_format.to_native(tagged)
    assert not unknown
    model = create_model("segformer-b0", decoder_style="mmseg", num_classes=150)
    ours = our_rules(model, lr=fixture["base_lr"], weight_decay=fixture["base_weight_decay"], head_lr_mult=10.0,
                     no_decay="mmseg")
    assert set(native) == set(ours)
    params = dict(model.named_parameters())
    for name, tag in native.items():
        assert tag.unique().numel() == 1 and tag.shape == params[name].shape
        row = rows[int(tag.flatten()[0])]
        assert ours[name] == pytest.approx((row["lr"], row["weight_decay"]), rel=1e-12), (name, row["name"])
    # The quirk the "mmseg" rule reproduces: the stage-closing LayerNorms (mmseg `layers.i.2`) keep weight decay,
    # which the model's own rule (NVlabs' MiT names them norm1..4) exempts.
    model_rule = our_rules(model, lr=6e-5, weight_decay=0.01, no_decay="model")
    differ = sorted(n for n in ours if ours[n] != model_rule[n])
    assert differ == sorted(f"encoder.stages.{i}.norm.{p}" for i in range(4) for p in ("weight", "bias"))
    assert all(ours[n][1] == 0.01 and model_rule[n][1] == 0.0 for n in differ)


@pytest.mark.parametrize("decoder", ["pup", "mla"])
def test_setr_heads_train_at_ten_times(decoder):
    """mmseg's SETR rule is custom_keys {'head': lr_mult 10}: the decode and auxiliary heads, not the MLA neck."""
    model = create_model(f"setr-{decoder}", num_classes=5, **TINY_SETR)
    rules = our_rules(model, lr=0.01, weight_decay=0.0, no_decay="none")
    assert {n for n, (lr, _) in rules.items() if lr == pytest.approx(0.1)} == {n for n in rules if "head" in n}
    assert any(n.startswith("aux_heads.") for n in rules) and all(wd == 0.0 for _, wd in rules.values())
    if decoder == "mla":
        assert rules["neck.proj.0.conv.weight"][0] == 0.01


def test_build_optimizer_kinds():
    model = create_model("segformer-b0", num_classes=3)
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0))
    adamw = build_optimizer(model, TrainConfig())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.999)
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(model.parameters()))
    frozen = create_model("setr-mla", num_classes=3, **TINY_SETR)  # its unused class token has no gradient
    counted = sum(len(g["params"]) for g in build_optimizer(frozen, TrainConfig()).param_groups)
    assert counted == sum(p.requires_grad for p in frozen.parameters()) < len(list(frozen.parameters()))


@pytest.mark.parametrize("trace", json.loads((FIXTURES / "mmseg_lr_schedules.json").read_text()),
                         ids=lambda t: t["config"].split("/")[1])
def test_schedule_matches_mmengine(trace):
    """The lr each iteration trains with, body and head group, as mmengine's LinearLR + PolyLR stepping gave."""
    warm = [s for s in trace["param_scheduler"] if s["type"] == "LinearLR"]
    poly = next(s for s in trace["param_scheduler"] if s["type"] == "PolyLR")
    model = torch.nn.Module()
    model.body, model.decode_head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(param_groups(model, lr=trace["optimizer"]["lr"], weight_decay=0.0), lr=1.0)
    schedule = LRSchedule(opt, trace["max_iters"], warmup_iters=warm[0]["end"] if warm else 0,
                          warmup_ratio=warm[0]["start_factor"] if warm else 0.0, power=poly["power"],
                          min_lr=poly["eta_min"])
    for it, body, head in trace["rows"]:
        schedule.set(it)
        assert opt.param_groups[0]["lr"] == pytest.approx(body, rel=1e-9, abs=1e-15), it
        assert opt.param_groups[1]["lr"] == pytest.approx(head, rel=1e-9, abs=1e-15), it


def test_cross_entropy_weights_ignore_and_upsampling():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    labels[0, :2] = 255
    weights = [0.5, 1.0, 3.0]
    got = float(cross_entropy(logits, labels, 255, torch.tensor(weights)))
    # By hand: bilinear (half-pixel) upsampling to 8x8, log-softmax, weighted mean over labelled pixels.
    up = torch.nn.functional.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False).numpy()
    logp = up - np.log(np.exp(up).sum(1, keepdims=True))
    lab = labels.numpy()
    keep = lab != 255
    picked = np.take_along_axis(logp, np.where(keep, lab, 0)[:, None], 1)[:, 0][keep]
    w = np.array(weights)[lab[keep]]
    assert got == pytest.approx(float(-(w * picked).sum() / w.sum()), rel=1e-5)


def test_loss_uses_the_models_own_loss_with_aux_heads():
    torch.manual_seed(0)
    model = create_model("setr-pup", num_classes=4, **TINY_SETR)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    with torch.no_grad():
        plain = SegmentationLoss()(model, x, y)
        weighted = SegmentationLoss(class_weights=[1.0] * 4)(model, x, y)  # our cross-entropy path
        logits, aux = model.forward_aux(x)
        by_hand = cross_entropy(logits, y) + 0.4 * sum(cross_entropy(a, y) for a in aux)
    assert len(aux) == 3
    assert float(plain) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(weighted) == pytest.approx(float(by_hand), rel=1e-6)
    with pytest.raises(ValueError, match="class_weights has 3 values but the model predicts 4 classes"):
        SegmentationLoss(class_weights=[1.0] * 3)(model, x, y)
    assert math.isfinite(float(plain))
