"""The trainer end to end on tiny models: the run directory, exact resume after SIGKILL, NaN stop, gradient
accumulation, AMP, padding of small images, pretrained weights."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

import segformer
from helpers import FaultAt
from segformer import cli
from segformer.data.datasets import open_dataset
from segformer.data.synthetic import write_synthetic
from segformer.evaluation import evaluate
from segformer.training import NonFiniteLossError, TrainConfig, load_config, train
from segformer.training.checkpoint import list_checkpoints, load_checkpoint
from segformer.training.data import train_loader
from segformer.training.pretrained import build_model

TINY = {"depths": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 32], "num_heads": [1, 1, 1, 1], "decoder_dim": 16}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """6 classes, sizes 24-40 px (some smaller than the 32 px crop), ignore patches: the demo's data, tiny."""
    return write_synthetic(tmp_path_factory.mktemp("synth") / "data", num_train=8, num_val=3, min_size=24,
                           max_size=40)


def write_plain_set(root: Path, num_train: int = 8, num_val: int = 2, size: int = 40) -> Path:
    """3 classes, every pixel labelled (no 255), all images `size` px: equal pixel counts in every batch."""
    g = np.random.default_rng(0)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(count):
            image = g.integers(0, 256, (size, size, 3), dtype=np.uint8)
            label = (image[..., 0] > 128).astype(np.uint8) + (image[..., 1] > 200).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(label).save(root / "masks" / split / f"{i}.png")
    (root / "classes.txt").write_text("a\nb\nc\n")
    return root


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(model="segformer-b0", model_args=dict(TINY), data=str(data), crop_size=(32, 32), batch_size=2,
                iters=8, lr=1e-3, warmup_iters=2, eval_interval=4, checkpoint_interval=4, log_interval=1,
                num_workers=0, progress=False, out=str(out))
    return TrainConfig(**{**base, **overrides})


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_cli_run_directory(synth, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(synth), "--out", str(run), "--iters", "4", "--batch-size", "2", "--crop", "32",
            "--set", "num_workers=0", "--set", "progress=false", "--set", "eval_interval=2", "--set", "log_interval=2",
            "--set", "checkpoint_interval=2", "--set", "keep_checkpoints=1", "--set", f"model_args={json.dumps(TINY)}"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    resolved = load_config(run / "config.yaml")
    assert resolved.num_classes == 6 and resolved.scale == (128, 32) and resolved.iters == 4
    assert [(r["iter"], "loss" in r, "mIoU" in r) for r in records(run)] == [
        (2, True, False), (2, False, True), (4, True, False), (4, False, True)]
    assert [i for i, _ in list_checkpoints(run)] == [4]  # keep_checkpoints=1
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["IoU"]) == list(metrics["Acc"]) == ["background", "disc", "square", "triangle", "ring",
                                                            "stripes"]
    assert f"mIoU {metrics['mIoU']:.2f}" in out and str(run / "final") in out
    # final/ is the trained model: reloaded, it scores exactly what metrics.json says, and equals the checkpoint.
    model = segformer.load_model(run / "final")
    assert model.config.class_names[1] == "disc"
    again = evaluate(model, open_dataset(synth, "val"), scale=resolved.scale, progress=False)
    assert again["mIoU"] == pytest.approx(metrics["mIoU"], abs=1e-9)
    ckpt = load_checkpoint(run / "checkpoints" / "iter_0000004.pt")
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
    for name in ("loss", "miou", "per_class_iou"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(args) == 2  # an existing run is never overwritten
    assert "already holds a run" in capsys.readouterr().err


KILLER = """
import os, signal, sys
from segformer.data.datasets import open_dataset
from segformer.training import load_config, train
config = load_config(sys.argv[1])
train_set, val_set = open_dataset(config.data, "train"), open_dataset(config.data, "val")
load, calls = train_set.load, [0]
def dying_load(i):  # SIGKILL (no clean-up of any kind) when iteration 7 asks for its data
    calls[0] += 1
    if calls[0] > int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return load(i)
train_set.load = dying_load
train(config, train_set=train_set, val_set=val_set)
"""


def test_resume_after_sigkill_is_bit_exact(synth, tmp_path):
    """8 iterations straight vs 4 (checkpoint) + 2 more, SIGKILL, --resume to 8: identical weights and log.
    Drop-path, dropout, photometric augmentation and a mid-run evaluation all draw or guard random numbers."""
    straight = tiny_config(synth, tmp_path / "straight")
    train(straight)
    killed = tiny_config(synth, tmp_path / "killed")
    config_path = tmp_path / "killed.yaml"
    config_path.write_text(json.dumps(killed.to_dict()))  # JSON is YAML
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(config_path), str(6 * killed.batch_size)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [r["iter"] for r in records(tmp_path / "killed") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [i for i, _ in list_checkpoints(tmp_path / "killed")] == [4]
    assert cli.main(["train", str(config_path), "--resume"]) == 0
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = ("sec_per_iter",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in records(tmp_path / "straight")] == \
           [{k: v for k, v in r.items() if k not in drop} for r in records(tmp_path / "killed")]
    assert json.loads((tmp_path / "straight" / "metrics.json").read_text()) == \
           json.loads((tmp_path / "killed" / "metrics.json").read_text())


class Poisoned(FaultAt):
    """A SegFormer whose `at`-th training forward returns NaN logits."""

    def fault(self, out):
        return out * float("nan")


def test_nan_loss_stops_naming_the_iteration(synth, tmp_path):
    config = tiny_config(synth, tmp_path / "run", iters=10, eval_interval=0)
    model = Poisoned(segformer.create_model("segformer-b0", num_classes=6, **TINY).config, at=7)
    with pytest.raises(NonFiniteLossError) as info:
        train(config, model=model)
    message = str(info.value)
    assert "loss is nan at iteration 7 of 10" in message
    assert "iter_0000004.pt (iteration 4), is intact" in message
    assert [i for i, _ in list_checkpoints(tmp_path / "run")] == [4]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_0000004.pt")
    assert state["iteration"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert max(r["iter"] for r in records(tmp_path / "run")) == 6
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "metrics.json").exists()


class PixelNet(nn.Module):
    """Any model that returns logits: no BatchNorm, no dropout, no `loss`, no `no_weight_decay`."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    data = write_plain_set(tmp_path / "plain")
    common = dict(model_args={}, crop_size=(32, 32), ratio_range=(1.0, 1.0), iters=3, optimizer="sgd", lr=0.1,
                  weight_decay=0.0, warmup_iters=0, eval_interval=0, checkpoint_interval=100)
    runs = {}
    for name, batch, accum in (("full", 4, 1), ("accum", 4, 2), ("half", 2, 1)):
        train(tiny_config(data, tmp_path / name, batch_size=batch, grad_accum=accum, **common), model=PixelNet())
        runs[name] = load_file(tmp_path / name / "final" / "model.safetensors")
    diff = max((runs["full"][k] - runs["accum"][k]).abs().max().item() for k in runs["full"])
    assert diff < 1e-6
    assert max((runs["full"][k] - runs["half"][k]).abs().max().item() for k in runs["full"]) > 1e-4


def test_amp(synth, tmp_path):
    metrics = train(tiny_config(synth, tmp_path / "bf16", iters=2, amp="bf16", clip_grad=1.0, eval_interval=0))
    assert np.isfinite(metrics["aAcc"])
    assert all("grad_norm" in r for r in records(tmp_path / "bf16") if "loss" in r)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
            train(tiny_config(synth, tmp_path / "fp16", amp="fp16"))


def test_small_images_are_padded(tmp_path):
    """Images smaller than the crop: image padded with 0 (after normalising), label with 255 (mmseg)."""
    data = write_plain_set(tmp_path / "plain", num_train=2, size=20)
    config = tiny_config(data, tmp_path / "run", crop_size=(32, 48), scale=(20, 20), ratio_range=(1.0, 1.0),
                         photometric=False)
    images, labels = next(iter(train_loader(open_dataset(data, "train"), config, 2, rank=0, world_size=1, start=0)))
    assert images.shape == (2, 3, 32, 48) and labels.shape == (2, 32, 48)
    assert (labels[:, 20:] == 255).all() and (labels[:, :, 20:] == 255).all() and (labels[:, :20, :20] < 3).all()
    assert (images[:, :, 20:] == 0).all() and (images[:, :, :, 20:] == 0).all()


def test_pretrained_encoder_loads_and_head_starts_fresh(tmp_path):
    torch.manual_seed(1)
    source = segformer.create_model("segformer-b0", num_classes=3, **TINY)
    source.save_pretrained(tmp_path / "src")
    config = TrainConfig(model="segformer-b0", model_args=dict(TINY), pretrained=str(tmp_path / "src"),
                         num_classes=6)
    model = build_model(config)
    src = source.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in model.state_dict().items() if k.startswith("encoder."))
    assert model.decode_head.classifier.weight.shape[0] == 6
    same = build_model(TrainConfig(model="segformer-b0", model_args=dict(TINY), pretrained=str(tmp_path / "src"),
                                   num_classes=3))
    assert all(torch.equal(v, src[k]) for k, v in same.state_dict().items())  # same classes: the head too
    wider = TrainConfig(model="segformer-b0", model_args={**TINY, "embed_dims": [8, 16, 32, 64]},
                        pretrained=str(tmp_path / "src"), num_classes=6)
    with pytest.raises(ValueError, match=r"pretrained .*src: its encoder .* does not fit segformer-b0"):
        build_model(wider)


def test_setr_with_auxiliary_heads_trains(synth, tmp_path):
    args = dict(depth=4, embed_dim=32, num_heads=2, img_size=[32, 32], channels=16, mla_channels=8)
    config = tiny_config(synth, tmp_path / "run", model="setr-mla", model_args=args, iters=2, optimizer="sgd",
                         lr=0.01, weight_decay=0.0, warmup_iters=0, eval_interval=0, no_decay="none")
    train(config)
    model = segformer.load_model(tmp_path / "run" / "final")
    assert type(model).__name__ == "SETR" and len(model.aux_heads) == 4 and model.config.num_classes == 6
    assert all(np.isfinite(r["loss"]) for r in records(tmp_path / "run") if "loss" in r)


def test_segformer_b0_learns_the_synthetic_set_from_scratch(tmp_path):
    """The demo's recipe at 60-80 px and 1000 steps (~70 s on 2 cores): full-size B0 from random weights, batch
    8 (measured: mIoU 71.9). Predicting background everywhere scores mIoU ~11 (its IoU / 6 classes), and
    colour alone cannot separate disc/ring or square/triangle (test_synthetic.py)."""
    data = write_synthetic(tmp_path / "data", num_train=400, num_val=24, min_size=60, max_size=80)
    config = TrainConfig(model="segformer-b0", model_args={"drop_path_rate": 0.0, "decoder_dropout": 0.0},
                         data=str(data), crop_size=(60, 60), scale=(80, 60), ratio_range=(1.0, 1.0),
                         photometric=False, batch_size=8, iters=1000, lr=6e-4, head_lr_mult=10.0, warmup_iters=20,
                         eval_interval=0, checkpoint_interval=1000, log_interval=100, num_workers=0, progress=False,
                         out=str(tmp_path / "run"))
    metrics = train(config)
    losses = [r["loss"] for r in records(tmp_path / "run") if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert metrics["mIoU"] >= 60
