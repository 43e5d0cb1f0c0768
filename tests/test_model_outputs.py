"""`model(x, labels=...)` and `output_hidden_states=True`, as transformers: the same weights (saved by HF, loaded by
us) give transformers' loss, gradients and encoder hidden states; SETR's loss adds its auxiliary heads, pose takes
(heatmaps, weights); plain `model(x)` still returns the logits tensor."""

import pytest
import torch
import torch.nn.functional as F
from transformers import SegformerConfig, SegformerForImageClassification, SegformerForSemanticSegmentation

import segformer
from segformer.models import SegmentationOutput

TINY_MIT = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def labels_with_ignore(shape, num_classes: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, shape, generator=g)
    labels[torch.rand(shape, generator=g) < 0.2] = 255
    return labels


def test_loss_and_hidden_states_equal_transformers(tmp_path):
    torch.manual_seed(0)
    ref = SegformerForSemanticSegmentation(SegformerConfig(num_labels=5, decoder_hidden_size=64)).eval()
    ref.save_pretrained(tmp_path)
    ours = segformer.load_model(tmp_path).eval()
    x, labels = torch.randn(2, 3, 64, 96), labels_with_ignore((2, 64, 96), 5)

    expected = ref(pixel_values=x, labels=labels, output_hidden_states=True)
    got = ours(x, labels=labels, output_hidden_states=True)
    assert isinstance(got, SegmentationOutput)
    assert abs(got.loss.item() - expected.loss.item()) <= 1e-5
    assert (got.logits - expected.logits).abs().max().item() <= 1e-5
    assert len(got.hidden_states) == len(expected.hidden_states) == 4
    for mine, theirs in zip(got.hidden_states, expected.hidden_states, strict=True):
        assert mine.shape == theirs.shape
        assert (mine - theirs).abs().max().item() <= 1e-5

    expected.loss.backward()
    got.loss.backward()
    grads = (ours.decode_head.classifier.weight.grad, ref.decode_head.classifier.weight.grad)
    assert (grads[0].flatten() - grads[1].flatten()).abs().max().item() <= 1e-5

    with torch.no_grad():
        plain = ours(x)
        only_states = ours(x, output_hidden_states=True)
    assert type(plain) is torch.Tensor and torch.equal(plain, got.logits.detach())
    assert only_states.loss is None and torch.equal(only_states.logits, plain)


def test_classification_loss_equals_transformers(tmp_path):
    torch.manual_seed(0)
    ref = SegformerForImageClassification(SegformerConfig(num_labels=4, hidden_sizes=[8, 16, 40, 64])).eval()
    ref.save_pretrained(tmp_path)
    ours = segformer.load_model(tmp_path).eval()
    x, labels = torch.randn(3, 3, 64, 64), torch.tensor([0, 3, 1])
    with torch.no_grad():
        expected = ref(pixel_values=x, labels=labels).loss.item()
        got = ours(x, labels=labels)
    assert abs(got.loss.item() - expected) <= 1e-5 and got.hidden_states is None


def test_setr_loss_includes_auxiliary_heads():
    torch.manual_seed(0)
    model = segformer.create_model("setr-mla", num_classes=3, depth=4, embed_dim=32, num_heads=2, channels=8,
                                   mla_channels=4, img_size=(32, 32)).eval()
    x, labels = torch.randn(2, 3, 32, 48), labels_with_ignore((2, 32, 48), 3)
    with torch.no_grad():
        out = model(x, labels=labels, output_hidden_states=True)
        logits, aux = model.forward_aux(x)

    def ce(z):
        return F.cross_entropy(F.interpolate(z, size=labels.shape[-2:], mode="bilinear", align_corners=False),
                               labels, ignore_index=255)

    expected = ce(logits) + model.aux_weight * sum(ce(a) for a in aux)
    assert len(aux) == 4 and model.aux_weight == pytest.approx(0.4)
    assert abs(out.loss.item() - expected.item()) <= 1e-5
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 32, 2, 3)] * 4  # out_indices of a 4-block ViT


def test_pose_loss_takes_heatmaps_and_weights():
    torch.manual_seed(0)
    model = segformer.create_model("segformer-b0-pose", num_classes=4, **TINY_MIT).eval()
    x = torch.randn(2, 3, 64, 48)
    target, weights = torch.rand(2, 4, 16, 12), torch.tensor([[1.0, 0.0, 1.0, 0.5], [1.0, 1.0, 0.0, 1.0]])
    with torch.no_grad():
        out = model(x, labels=(target, weights))
    expected = ((out.logits - target).square() * weights[:, :, None, None]).mean()  # MMPose KeypointMSELoss
    assert abs(out.loss.item() - expected.item()) <= 1e-6
