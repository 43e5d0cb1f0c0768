"""Issue 13, one test per failure: bad and unlucky input against the CLI and the API (see docs/reliability.md).
Tiny models and data; the run-folder tests share one synthetic set."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import segformer
from helpers import FaultAt
from segformer import cli
from segformer.checkpoints.io import write_safetensors
from segformer.data.synthetic import write_synthetic
from segformer.models.segmentor import SegFormer
from segformer.training import NonFiniteLossError, TrainConfig, train
from segformer.training.checkpoint import list_checkpoints, load_checkpoint
from segformer.training.optim import LRSchedule
from segformer.utils.io import atomic_write_text, clean_stale_temps
from test_training import TINY, records, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("rel") / "data", num_train=6, num_val=2, min_size=32, max_size=40)


def tiny_model(num_classes: int = 6, **kw) -> SegFormer:
    torch.manual_seed(0)
    return segformer.create_model("segformer-b0", num_classes=num_classes, **{**TINY, **kw})


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = cli.main(args)
    return code, capsys.readouterr().err


# 1 ------------------------------------------------------------------------------------------------------------
def test_1_a_fully_unlabelled_image_trains_with_loss_zero(synth, tmp_path):
    data = tmp_path / "d"
    write_synthetic(data, num_train=2, num_val=1, min_size=32, max_size=40)
    mask = data / "masks" / "train" / "00001.png"
    Image.fromarray(np.full(np.asarray(Image.open(mask)).shape, 255, np.uint8)).save(mask)
    metrics = train(tiny_config(data, tmp_path / "run", batch_size=1, iters=2, eval_interval=0, warmup_iters=0))
    losses = [r["loss"] for r in records(tmp_path / "run") if "loss" in r]
    assert len(losses) == 2 and 0.0 in losses and all(np.isfinite(losses))  # one epoch: every image once
    assert np.isfinite(metrics["aAcc"])


# 2 ------------------------------------------------------------------------------------------------------------
def test_2_a_corrupt_val_image_stops_the_run_before_training(synth, tmp_path, capsys):
    data = tmp_path / "dv"
    write_synthetic(data, num_train=4, num_val=2, min_size=32, max_size=40)
    (data / "images" / "val" / "00001.png").write_text("x\n")
    code, err = run_cli(["train", "--data", str(data), "--out", str(tmp_path / "r2"), "--iters", "20",
                         "--set", "num_workers=0", "--set", "progress=false"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"val split: {data / 'images' / 'val' / '00001.png'} is not a readable image" in err
    assert not (tmp_path / "r2").exists()


class FailingVal(torch.utils.data.Dataset):
    """A validation set whose reads fail while `broken` is set (a disk error, a file removed mid-run)."""

    def __init__(self, dataset):
        self.dataset, self.broken = dataset, True

    def __len__(self):
        return len(self.dataset)

    def load(self, i):
        if self.broken:
            raise OSError(f"read error on image {i}")
        return self.dataset.load(i)

    __getitem__ = load

    def __getattr__(self, name):  # num_classes, class_names, ignore_index, scale
        return getattr(self.dataset, name)


def test_2_a_failed_final_evaluation_keeps_the_trained_model(synth, tmp_path, caplog):
    from segformer.data.datasets import open_dataset

    config = tiny_config(synth, tmp_path / "run", iters=3, eval_interval=0, checkpoint_interval=2)
    val = FailingVal(open_dataset(synth, "val"))
    with pytest.raises(OSError, match="read error"):
        train(config, val_set=val)
    assert [i for i, _ in list_checkpoints(tmp_path / "run")] == [2, 3]  # 3 is not a multiple of 2: saved anyway
    assert "the trained model is safe in" in caplog.text and "--resume" in caplog.text
    assert not (tmp_path / "run" / "final").exists()
    val.broken = False
    train(config, resume="auto", val_set=val)  # only the evaluation is repeated
    final = load_file(tmp_path / "run" / "final" / "model.safetensors")
    trained = segformer.load_model(tmp_path / "run" / "final").state_dict()
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_0000003.pt")["model"]
    assert final and all(torch.equal(v, saved[k]) for k, v in trained.items())
    assert [r["iter"] for r in records(tmp_path / "run")] == [1, 2, 3, 3]  # 3 losses, one evaluation


def test_2_a_run_that_failed_before_its_first_checkpoint_is_started_over(synth, tmp_path, capsys):
    model = Diverging(tiny_model().config, at=2)
    config = tiny_config(synth, tmp_path / "run", iters=2, eval_interval=0, checkpoint_interval=4)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written before"):
        train(config, model=model)
    with pytest.raises(FileExistsError, match="pass --resume to continue it, --overwrite to start it over"):
        train(config)
    with pytest.raises(FileNotFoundError, match="stopped before its first one; start it over with --overwrite"):
        train(config, resume="auto")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    train(config, overwrite=True)
    assert [i for i, _ in list_checkpoints(tmp_path / "run")] == [2]
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # only run files are replaced
    with pytest.raises(ValueError, match="pass one of them"):
        train(config, resume="auto", overwrite=True)


# 4 ------------------------------------------------------------------------------------------------------------
class Diverging(FaultAt):
    """A SegFormer whose weights turn NaN during its `at`-th training forward (after the loss is computed from
    finite weights, so the loss check cannot see it before the step)."""

    def fault(self, out):
        with torch.no_grad():
            self.decode_head.classifier.bias.fill_(float("nan"))
        return out


def test_4_a_non_finite_checkpoint_is_never_written(synth, tmp_path):
    config = tiny_config(synth, tmp_path / "run", iters=4, eval_interval=0, checkpoint_interval=1)
    with pytest.raises(NonFiniteLossError) as info:
        train(config, model=Diverging(tiny_model().config, at=2))
    message = str(info.value)
    assert "after iteration 2 of 4" in message and "NaN or infinite" in message
    assert "iter_0000001.pt (iteration 1), is intact" in message
    assert [i for i, _ in list_checkpoints(tmp_path / "run")] == [1]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_0000001.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("key,value", [("lr", "inf"), ("lr", ".nan"), ("weight_decay", ".inf"),
                                       ("betas", "[0.9, .inf]"), ("clip_grad", ".nan")])
def test_4_non_finite_hyper_parameters_are_refused(key, value, capsys):
    code, err = run_cli(["train", "--data", "x", "--out", "y", "--set", f"{key}={value}"], capsys)
    assert code == 2 and f"{key} must be a finite number" in err
    with pytest.raises(ValueError, match=f"{key} must be a finite number"):
        TrainConfig(**{key: float(value.strip(".")) if key != "betas" else (0.9, float("inf"))})


# 3 ------------------------------------------------------------------------------------------------------------
def test_3_resume_applies_a_changed_learning_rate(synth, tmp_path, caplog):
    base = dict(iters=4, eval_interval=0, checkpoint_interval=2, keep_checkpoints=0, warmup_iters=0)
    train(tiny_config(synth, tmp_path / "a", lr=1e-3, iters=2, **{k: v for k, v in base.items() if k != "iters"}))
    changed = tiny_config(synth, tmp_path / "b", lr=4e-3, **base)
    train(changed, resume=tmp_path / "a" / "checkpoints" / "iter_0000002.pt")
    assert "lr: 0.001 -> 0.004" in caplog.text and "apply from iteration 2" in caplog.text
    schedule = LRSchedule(torch.optim.SGD([torch.zeros(1)], lr=4e-3), 4, warmup_iters=0)
    logged = {r["iter"]: r["lr"] for r in records(tmp_path / "b") if "lr" in r}
    assert logged[3] == pytest.approx(schedule.lr_at(2, 4e-3)) and logged[4] == pytest.approx(schedule.lr_at(3, 4e-3))
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "iter_0000004.pt")
    assert state["config"]["lr"] == 4e-3
    assert sorted({g["initial_lr"] for g in state["optimizer"]["param_groups"]}) == pytest.approx([4e-3, 4e-2])


# 6 ------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def hf_dir(tmp_path):
    model = tiny_model(3)
    model.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _edit(folder: Path, change) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(change(cfg)))


@pytest.mark.parametrize("change,expected", [
    (lambda c: [1, 2], "a model config.json is a JSON object of settings, got a list"),
    (lambda c: {**c, "segformer": {**c["segformer"], "encoder": {**c["segformer"]["encoder"], "depths": None}}},
     "not a valid model config"),
    (lambda c: {k: v for k, v in c.items() if k != "segformer"} | {"depths": None},
     "key 'depths' must be a list of 4 positive integers (one per stage), got None"),
    (lambda c: {k: v for k, v in c.items() if k != "segformer"} | {"hidden_sizes": "a,b"},
     "key 'hidden_sizes' must be a list of 4 positive integers (one per stage), got 'a,b'"),
    (lambda c: {k: v for k, v in c.items() if k != "segformer"} | {"id2label": [1]},
     "key 'id2label' must be a mapping"),
])
def test_6_bad_config_json_is_one_line_naming_the_file(hf_dir, tmp_path, capsys, change, expected):
    _edit(hf_dir, change)
    code, err = run_cli(["convert", str(hf_dir), str(tmp_path / "out"), "--to", "ours"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(hf_dir / "config.json") in err and expected in err


def test_6_invalid_json_names_the_file_and_debug_shows_the_traceback(hf_dir, tmp_path, capsys, monkeypatch):
    (hf_dir / "config.json").write_text("{not json")
    code, err = run_cli(["convert", str(hf_dir), str(tmp_path / "out")], capsys)
    assert code == 2 and f"{hf_dir / 'config.json'}: not valid JSON" in err
    monkeypatch.setenv("SEGFORMER_DEBUG", "1")
    with pytest.raises(ValueError, match="not valid JSON"):
        cli.main(["convert", str(hf_dir), str(tmp_path / "out")])


def test_6_real_bugs_keep_their_traceback(monkeypatch):
    import argparse

    def bug(args):
        raise AttributeError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(parser, "parse_args", lambda argv: argparse.Namespace(func=bug, command="models"))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with pytest.raises(AttributeError, match="a bug"):
        cli.main(["models"])


class _RaisesInWorker(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise ValueError("label map /data/m/1.png contains class id 9 but the dataset has 6 classes")


def test_6_errors_from_dataloader_workers_lose_the_worker_traceback():
    loader = torch.utils.data.DataLoader(_RaisesInWorker(), num_workers=1)
    with pytest.raises(ValueError) as info:
        next(iter(loader))
    assert "Original Traceback" in str(info.value)  # what torch gives
    assert cli.one_line(info.value) == "label map /data/m/1.png contains class id 9 but the dataset has 6 classes"


# 8 ------------------------------------------------------------------------------------------------------------
MEMORY_DRIVER = r"""
import resource, sys
import numpy as np
import segformer
from segformer.preprocess import ImageProcessor
model = segformer.create_model("segformer-b0", num_classes=8, depths=[1, 1, 1, 1]).eval()
processor = ImageProcessor(size=(64, 64))
segformer.predict(model, np.zeros((64, 64, 3), np.uint8), processor=processor)  # warm-up
rgb = np.full((3000, 3000, 3), 90, dtype=np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
labels = segformer.predict(model, rgb, processor=processor)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, labels.dtype, labels.shape)
"""


def test_8_huge_image_memory_is_the_label_map_plus_a_constant():
    """3000x3000, 8 classes, model input 64x64 (`--size 64`): the full-resolution logits would be 275 MiB and the
    unbanded code peaked at +405 MiB; banded, predict adds the 9 MiB label map plus a few 16 MiB bands."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEMORY_DRIVER], capture_output=True, text=True, timeout=300,
                         check=True, env=env).stdout.split()
    assert out[1:] == ["uint8", "(3000,", "3000)"]
    assert float(out[0]) < 200, f"predict added {out[0]} MiB"


def _png_header_claiming(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width x height (its data is a 1x1 image: only the header is ever read)."""
    import struct
    import zlib

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytes(data[12:29]).replace(struct.pack(">II", 1, 1), struct.pack(">II", width, height), 1)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(data))


def test_8_max_pixels_refuses_from_the_header(tmp_path, capsys):
    big = tmp_path / "big.png"
    _png_header_claiming(big, 20000, 20000)  # 400 MP: decoding would take 1.1 GiB
    with pytest.raises(ValueError, match=r"is 20000x20000 = 400,000,000 pixels, above the limit of 100,000,000"):
        segformer.predict(tiny_model(), big)
    Image.new("RGB", (300, 200), (90, 90, 90)).save(tmp_path / "small.png")
    model_dir = tmp_path / "m"
    tiny_model().save_pretrained(model_dir)
    code = cli.main(["predict", str(tmp_path / "small.png"), "--model", str(model_dir), "--out", str(tmp_path / "o"),
                     "--size", "64", "--max-pixels", "50000"])
    err = capsys.readouterr().err
    assert code == 1 and "300x200 = 60,000 pixels, above the limit of 50,000" in err
    assert cli.main(["predict", str(tmp_path / "small.png"), "--model", str(model_dir), "--out",
                     str(tmp_path / "o"), "--size", "64", "--max-pixels", "0"]) == 0


# 5 ------------------------------------------------------------------------------------------------------------
class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_5_a_malicious_pickle_is_refused_naming_the_global(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _System(f"touch {marker}")}, evil)
    code, err = run_cli(["convert", str(evil), str(tmp_path / "out.pth"), "--to", "mmseg"], capsys)
    assert code == 2 and err.count("\n") == 1 and not marker.exists()
    assert f"{evil}: refused: the file holds code or Python objects beyond tensors" in err
    assert "references posix.system" in err or "references nt.system" in err
    assert "weights_only=False" not in err and "weights_only" not in err
    with pytest.raises(ValueError, match="refused: the file holds code") as info:  # --resume reads the same way
        load_checkpoint(evil)
    assert "weights_only" not in str(info.value) and not marker.exists()


# 7 ------------------------------------------------------------------------------------------------------------
def test_7_interrupted_save_never_mixes_weights_and_config(tmp_path, monkeypatch):
    old, new = tiny_model(3), tiny_model(3, num_heads=[1, 2, 2, 2])  # same tensor shapes, other attention heads
    folder = old.save_pretrained(tmp_path / "m")
    import segformer.checkpoints.loader as loader

    def crash(*args, **kwargs):  # the process dies after the weights, before config.json
        raise KeyboardInterrupt

    monkeypatch.setattr(loader, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(folder, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # the half-built folder is gone
    kept = segformer.load_model(folder)
    assert kept.config.encoder.num_heads == old.config.encoder.num_heads
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in kept.state_dict().items())
    # A folder mixed by hand (or by an older version, file by file): the weights' own record refuses it.
    write_safetensors(folder / "model.safetensors", _hf_weights(new), {"format": "pt", "segformer_config":
                      json.dumps(new.config.to_dict())}, overwrite=True)
    with pytest.raises(ValueError, match=r"config.json does not match the config recorded in model.safetensors "
                                         r"\(encoder differ\)"):
        segformer.load_model(folder)


def _hf_weights(model):
    from segformer.checkpoints import hf

    return hf.from_native(model.state_dict(), model.config)


# 9 ------------------------------------------------------------------------------------------------------------
def test_9_non_finite_weights_warn_on_load_and_are_refused_by_convert(tmp_path, capsys):
    model = tiny_model(3)
    with torch.no_grad():
        model.decode_head.classifier.weight[0, :2] = float("nan")
    model.save_pretrained(tmp_path / "m")
    with pytest.warns(UserWarning, match="2 weight values are NaN or infinite"):
        segformer.load_model(tmp_path / "m")
    code, err = run_cli(["convert", str(tmp_path / "m"), str(tmp_path / "c")], capsys)
    assert code == 2 and "2 weight values are NaN or infinite; refusing to convert" in err
    assert not (tmp_path / "c").exists()


def test_9_predict_checks_out_before_loading_the_model(tmp_path, capsys):
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("")
    code, err = run_cli(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "no-such-model"),
                         "--out", str(tmp_path / "file" / "out")], capsys)
    assert code == 2 and f"--out {tmp_path / 'file' / 'out'}: cannot write there" in err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_9_temporaries_left_by_a_kill_are_removed_on_the_next_write(tmp_path):
    stale_file = tmp_path / f".model.safetensors.{_dead_pid()}.abcd1234.tmp"
    stale_dir = tmp_path / f".final.{_dead_pid()}.efgh5678.tmp"
    live = tmp_path / f".model.safetensors.{os.getpid()}.ijkl9012.tmp"  # a write in progress: kept
    other = tmp_path / ".notes.tmp"  # not our naming: kept
    stale_file.write_bytes(b"partial")
    stale_dir.mkdir()
    (stale_dir / "config.json").write_text("{}")
    for path in (live, other):
        path.write_bytes(b"")
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "metrics.json"])
    assert clean_stale_temps(tmp_path) == []


def test_9_files_follow_the_umask(synth, tmp_path):
    umask, mode = 0o002, 0o664  # not tempfile's 0600, and not a fixed 0644 either
    old = os.umask(umask)
    try:
        model = tiny_model(6)
        model.save_pretrained(tmp_path / "pretrained")
        segformer.checkpoints.convert(tmp_path / "pretrained", tmp_path / "converted")
        segformer.checkpoints.convert(tmp_path / "pretrained", tmp_path / "nv.pth", to="nvlabs")
        train(tiny_config(synth, tmp_path / "run", iters=1, eval_interval=0), model=model)
    finally:
        os.umask(old)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 8 and {oct(p.stat().st_mode & 0o777) for p in written} == {oct(mode)}
    folders = [tmp_path / "pretrained", tmp_path / "converted", tmp_path / "run" / "final"]
    assert {oct(p.stat().st_mode & 0o777) for p in folders} == {oct(0o777 & ~umask)}


def test_9_synth_overwrite_replaces_only_a_synthetic_set(tmp_path, capsys):
    mine = tmp_path / "mine"
    for sub in ("images/train", "masks/train"):
        (mine / sub).mkdir(parents=True)
    (mine / "classes.txt").write_text("a\nb\n")
    code, err = run_cli(["synth", str(mine), "--overwrite", "--train", "2", "--val", "1"], capsys)
    assert code == 2 and "was not written by `segformer synth`" in err
    assert (mine / "classes.txt").read_text() == "a\nb\n"
    assert cli.main(["synth", str(tmp_path / "s"), "--train", "2", "--val", "1"]) == 0
    assert cli.main(["synth", str(tmp_path / "s"), "--train", "3", "--val", "1", "--overwrite"]) == 0


def test_9_hand_edited_hf_fields_are_refused_and_renamed_classes_taken(hf_dir):
    _edit(hf_dir, lambda c: {**c, "decoder_hidden_size": 32, "hidden_dropout_prob": 0.3})
    with pytest.raises(ValueError) as info:
        segformer.load_model(hf_dir)
    message = str(info.value)
    assert str(hf_dir / "config.json") in message and "disagree with its \"segformer\" entry" in message
    assert "decoder_hidden_size: 32 (entry: decoder_dim = 16)" in message and "hidden_dropout_prob: 0.3" in message
    _edit(hf_dir, lambda c: {**c, "decoder_hidden_size": 16, "hidden_dropout_prob": 0.0,
                             "id2label": {"0": "sky", "1": "road", "2": "car"}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = segformer.load_model(hf_dir)
    assert model.config.class_names == ["sky", "road", "car"]
    assert any("id2label differs" in str(w.message) for w in caught)
