"""The fused segmentation loss equals the straightforward one (F.interpolate + F.cross_entropy) and HF's, in value
and in gradient."""

import pytest
import torch
import torch.nn.functional as F
from transformers import SegformerForSemanticSegmentation

import segformer
from segformer.checkpoints.hf import to_native
from segformer.models import segmentation_loss
from test_hf_parity import hf_config


def _plain(logits, labels, weight=None):
    up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, labels, weight=weight, ignore_index=255)


@pytest.mark.parametrize("logit_size,label_size", [((7, 9), (29, 35)), ((8, 8), (8, 8)), ((16, 16), (64, 64))])
@pytest.mark.parametrize("weighted", [False, True])
def test_equals_interpolate_then_cross_entropy(logit_size, label_size, weighted):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 11, *logit_size, generator=g) * 3).requires_grad_()
    labels = torch.randint(0, 11, (3, *label_size), generator=g)
    labels[:, : label_size[0] // 3] = 255  # ignored rows
    weight = torch.rand(11, generator=g) + 0.1 if weighted else None
    expected = _plain(logits, labels, weight)
    (grad_expected,) = torch.autograd.grad(expected, logits)
    got = segmentation_loss(logits, labels, 255, weight)
    (grad_got,) = torch.autograd.grad(got * 1.0, logits)
    assert abs(got.item() - expected.item()) <= 1e-6 * max(1.0, abs(expected.item()))
    assert (grad_got - grad_expected).abs().max().item() <= 1e-6 * grad_expected.abs().max().item()


def test_upstream_gradient_scales_and_all_ignored_is_zero():
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    labels = torch.randint(0, 4, (2, 20, 20))
    (g1,) = torch.autograd.grad(segmentation_loss(logits, labels), logits)
    (g3,) = torch.autograd.grad(3.0 * segmentation_loss(logits, labels), logits)
    assert (g3 - 3 * g1).abs().max().item() <= 1e-6 * g3.abs().max().item()
    confident = torch.zeros(1, 3, 4, 4)
    confident[:, 0] = 200.0  # softmax of the target underflows to 0: its log-probability must stay exact
    target = torch.ones(1, 4, 4, dtype=torch.long)
    assert segmentation_loss(confident, target).item() == pytest.approx(_plain(confident, target).item(), rel=1e-6)
    assert segmentation_loss(confident, target).item() == pytest.approx(200.0, rel=1e-6)
    ignored = torch.full((2, 20, 20), 255)  # a fully unlabelled batch: F.cross_entropy says 0 / 0, mmseg 0
    assert torch.isnan(_plain(logits, ignored))
    loss = segmentation_loss(logits, ignored)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.item() == 0.0 and not grad.any()
    with pytest.raises(ValueError, match=r"need logits \(B, K, h, w\) and labels \(B, H, W\), got \(2, 4, 5, 5\) and "
                                         r"\(20, 20\)"):
        segmentation_loss(logits, labels[0])


def test_training_loss_and_gradients_equal_hf(tmp_path):
    """Train-mode forward (dropout and drop-path off) and loss on the same weights and batch: transformers'
    `SegformerForSemanticSegmentation(labels=...)` vs ours; the loss and every parameter's gradient agree."""
    torch.manual_seed(0)
    ref = SegformerForSemanticSegmentation(hf_config("b0", num_labels=9, drop_path_rate=0.0,
                                                     classifier_dropout_prob=0.0))
    ref.save_pretrained(tmp_path)
    ours = segformer.load_model(tmp_path)
    ref.train(), ours.train()
    x, labels = torch.randn(2, 3, 64, 96), torch.randint(0, 9, (2, 64, 96))
    labels[:, :5] = 255
    expected = ref(pixel_values=x, labels=labels).loss
    got = ours.loss(ours(x), labels)
    assert abs(got.item() - expected.item()) <= 1e-5
    expected.backward()
    got.backward()
    theirs, unknown = to_native({n: p.grad for n, p in ref.named_parameters()})  # our names and layout (fused kv)
    mine = {n: p.grad for n, p in ours.named_parameters()}
    assert not unknown and mine.keys() == theirs.keys()
    # Relative to the largest gradient: the decoder's projection biases (and stage 4's last norm bias, which only
    # feeds them) get an exactly-zero gradient in both (train-mode BatchNorm removes per-channel constants).
    scale = max(t.abs().max().item() for t in theirs.values())
    assert max((mine[n] - theirs[n]).abs().max().item() for n in mine) <= 1e-5 * scale
