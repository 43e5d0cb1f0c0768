"""The synthetic data set: layout, determinism, variety, colour overlap, ignore regions, and `segformer synth`."""

import re
from pathlib import Path

import numpy as np
import pytest

from segformer.cli import main
from segformer.data import SYNTHETIC_CLASSES, FolderDataset, open_dataset, write_synthetic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("s") / "set", num_train=40, num_val=8, seed=0)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_labels(synth):
    assert (synth / "classes.txt").read_text().splitlines() == list(SYNTHETIC_CLASSES)
    train, val = open_dataset(synth, "train"), open_dataset(synth, "val")
    assert type(train) is FolderDataset and len(train) == 40 and len(val) == 8 and train.num_classes == 6
    counts, sizes, with_ignore = np.zeros(256, np.int64), set(), 0
    for i in range(len(train)):
        image, label = train.load(i)  # load() checks sizes and ids
        assert image.dtype == np.uint8 and label.shape == image.shape[:2]
        assert 64 <= min(label.shape) and max(label.shape) <= 160
        sizes.add(label.shape)
        counts += np.bincount(label.ravel(), minlength=256)
        with_ignore += bool((label == 255).any())
    assert (counts[:6] > 0).all() and counts[6:255].sum() == 0  # every class, nothing else but 255
    assert 0.2 < counts[1:6].sum() / counts[:6].sum() < 0.6  # objects cover a real share of the pixels
    assert 0 < with_ignore < len(train) and len(sizes) > 30


def _colour_bins(dataset):
    bins, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset.load(i)
        keep = label != 255
        q = image[keep].astype(np.int64) // 32
        bins.append(q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2])
        labels.append(label[keep])
    return np.concatenate(bins), np.concatenate(labels)


def test_colour_tells_the_family_and_shape_the_class(synth):
    """A colour-only per-pixel classifier (majority class per RGB bin, fitted on train) beats always predicting
    the most frequent class on val, but within a pair of classes that share a colour family (disc/ring,
    square/triangle) it does no better than always guessing one class of the pair: shape decides."""
    bins, labels = _colour_bins(open_dataset(synth, "train"))
    table = np.zeros((512, 6), np.int64)
    np.add.at(table, (bins, labels), 1)
    val_bins, val_labels = _colour_bins(open_dataset(synth, "val"))
    colour_only = (table.argmax(1)[val_bins] == val_labels).mean()
    majority = (val_labels == np.bincount(labels).argmax()).mean()
    assert colour_only > majority + 0.1
    for pair in ([1, 4], [2, 3]):
        in_pair = np.isin(val_labels, pair)
        guess = np.array(pair)[table[:, pair].argmax(1)][val_bins[in_pair]]
        colour_only_pair = (guess == val_labels[in_pair]).mean()
        best_constant = max((val_labels[in_pair] == c).mean() for c in pair)  # even knowing val's counts
        assert colour_only_pair < best_constant + 0.05, (pair, colour_only_pair, best_constant)


def test_deterministic_for_a_seed(synth, tmp_path):
    again = write_synthetic(tmp_path / "again", num_train=40, num_val=8, seed=0)
    assert _files(again) == _files(synth)
    other = _files(write_synthetic(tmp_path / "other", num_train=3, num_val=0, seed=1))
    first = Path("images/train/00000.png")
    assert other[first] != _files(synth)[first]
    # sample i depends only on (seed, split, i): a smaller set is a prefix of a bigger one
    small = write_synthetic(tmp_path / "small", num_train=5, num_val=2, seed=0)
    big = _files(synth)
    assert all(big[k] == v for k, v in _files(small).items())


def test_never_clobbers(tmp_path):
    root = write_synthetic(tmp_path / "s", num_train=2, num_val=1, seed=0, min_size=32, max_size=48)
    with pytest.raises(FileExistsError, match=re.escape(f"{root} is not empty; pass overwrite=True (--overwrite)")):
        write_synthetic(root, num_train=2, num_val=1)
    write_synthetic(root, num_train=3, num_val=1, seed=2, min_size=32, max_size=48, overwrite=True)
    assert len(open_dataset(root, "train")) == 3
    (root / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=re.escape(f"{root} holds ['notes.txt'], not only a synthetic set")):
        write_synthetic(root, num_train=2, num_val=1, overwrite=True)
    assert (root / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folders left behind
    with pytest.raises(ValueError, match=re.escape("need 16 <= min_size <= max_size, got min_size=80, max_size=60")):
        write_synthetic(tmp_path / "t", min_size=80, max_size=60)


def test_cli_synth(tmp_path, capsys):
    root = tmp_path / "cli"
    assert main(["synth", str(root), "--train", "3", "--val", "2", "--seed", "5", "--max-size", "80"]) == 0
    assert f"wrote 3 train + 2 val images, 6 classes, to {root}" in capsys.readouterr().out
    assert len(open_dataset(root, "val")) == 2
    assert main(["synth", str(root), "--train", "3", "--val", "2"]) == 2
    assert "is not empty; pass overwrite=True (--overwrite) to replace it" in capsys.readouterr().err
