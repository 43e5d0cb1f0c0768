"""Datasets: layout detection, label conversion (ADE20K, Cityscapes), every bad-data error, image modes, and
the seeded DataLoader wrapper."""

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segformer.data import (
    ADE20K,
    Cityscapes,
    FolderDataset,
    TrainTransform,
    TransformedDataset,
    open_dataset,
)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_folder(root: Path, n: int = 3, split: str = "val", classes=("sky", "tree", "road")) -> Path:
    for i in range(n):
        _save(root / "images" / split / f"im{i}.jpg", _rgb(20, 30, i))
        _save(root / "masks" / split / f"im{i}.png", np.full((20, 30), i % 3, np.uint8))
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def make_ade(root: Path, split: str = "validation") -> Path:
    for i in range(2):
        _save(root / "images" / split / f"ADE_{i}.jpg", _rgb(12, 16, i))
        _save(root / "annotations" / split / f"ADE_{i}.png", np.array([[0, 1, 150, 255] * 4] * 12, np.uint8))
    return root


def make_cityscapes(root: Path, kinds=("labelTrainIds",)) -> Path:
    for i, city in enumerate(["aachen", "bonn"]):
        stem = f"{city}_000000_00001{i}"
        _save(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", _rgb(8, 16, i))
        for kind in kinds:
            ids = np.array([[7, 26, 33, 0, 9, 255, 19, 24] * 2] * 8, np.uint8)
            label = ids if kind == "labelIds" else np.array([[0, 13, 18, 255, 1, 255, 6, 11] * 2] * 8, np.uint8)
            _save(root / "gtFine" / "val" / city / f"{stem}_gtFine_{kind}.png", label)
    return root


# --- detection ---------------------------------------------------------------------------------------------------

def test_layouts_are_detected(tmp_path):
    folder = open_dataset(make_folder(tmp_path / "f"), "val")
    assert type(folder) is FolderDataset and folder.kind == "folder" and len(folder) == 3
    assert folder.class_names == ["sky", "tree", "road"] and folder.scale is None

    make_ade(tmp_path / "a" / "ADEChallengeData2016")
    for root in (tmp_path / "a", tmp_path / "a" / "ADEChallengeData2016"):
        ade = open_dataset(root, "val")
        assert type(ade) is ADE20K and ade.num_classes == 150 and len(ade) == 2 and ade.scale == (2048, 512)
    assert len(open_dataset(tmp_path / "a", "validation")) == 2

    city = open_dataset(make_cityscapes(tmp_path / "c"), "val")
    assert type(city) is Cityscapes and city.num_classes == 19 and len(city) == 2 and city.scale == (2048, 1024)
    assert city.class_names[0] == "road" and city.class_names[18] == "bicycle"


def test_unknown_layout_and_missing_root(tmp_path):
    (tmp_path / "images").mkdir()
    msg = (f"cannot tell the dataset layout of {tmp_path}: expected ADE20K (ADEChallengeData2016/ or images/ + "
           "annotations/), Cityscapes (leftImg8bit/ + gtFine/), COCO-Stuff 164k (images/val2017/ + annotations/), "
           "Pascal Context (SegmentationClassContext/), Pascal VOC (JPEGImages/ + SegmentationClass/) or a folder "
           "(images/<split>/ + masks/<split>/ [+ classes.txt])")
    with pytest.raises(ValueError, match=re.escape(msg)):
        open_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"dataset folder {tmp_path / 'nope'} does not exist")):
        open_dataset(tmp_path / "nope")


# --- bad data: each error names the file -------------------------------------------------------------------------

def test_image_without_mask(tmp_path):
    root = make_folder(tmp_path)
    (root / "masks" / "val" / "im1.png").unlink()
    msg = f"image {root / 'images' / 'val' / 'im1.jpg'} has no label map: expected {root / 'masks' / 'val' / 'im1.png'}"
    with pytest.raises(FileNotFoundError, match=re.escape(msg)):
        open_dataset(root, "val")


def test_empty_and_missing_split(tmp_path):
    root = make_folder(tmp_path)
    (root / "images" / "train").mkdir()
    (root / "images" / "train" / "notes.txt").write_text("not an image")
    msg = (f"split folder {root / 'images' / 'train'} is empty: no files ending in .jpg, .jpeg, .png, .bmp, .tif, "
           ".tiff, .webp")
    with pytest.raises(ValueError, match=re.escape(msg)):
        open_dataset(root, "train")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no split 'test' under {root / 'images'}: found "
                                                           "['train', 'val']")):
        open_dataset(root, "test")


def test_mask_size_differs_from_image(tmp_path):
    root = make_folder(tmp_path)
    _save(root / "masks" / "val" / "im2.png", np.zeros((21, 30), np.uint8))
    ds = open_dataset(root, "val")
    ds.load(0)
    msg = (f"label map {root / 'masks' / 'val' / 'im2.png'} is 30x21 (WxH) but its image "
           f"{root / 'images' / 'val' / 'im2.jpg'} is 30x20; they must be the same size")
    with pytest.raises(ValueError, match=re.escape(msg)):
        ds.load(2)


def test_label_above_class_count(tmp_path):
    root = make_folder(tmp_path)
    mask = np.zeros((20, 30), np.uint8)
    mask[5, 5], mask[6, 6] = 255, 3  # 255 is fine, 3 is not (3 classes)
    _save(root / "masks" / "val" / "im0.png", mask)
    msg = (f"label map {root / 'masks' / 'val' / 'im0.png'} contains class id 3 but the dataset has 3 classes: "
           "accepted ids are 0..2 and 255 (ignore)")
    with pytest.raises(ValueError, match=re.escape(msg)):
        open_dataset(root, "val").load(0)


def test_classes_file_rules(tmp_path):
    root = make_folder(tmp_path, classes=())
    msg = f"{root} has no classes.txt: add one (one class name per line) or pass num_classes"
    with pytest.raises(ValueError, match=re.escape(msg)):
        open_dataset(root, "val")
    ds = open_dataset(root, "val", num_classes=4)
    assert ds.class_names == ["class_0", "class_1", "class_2", "class_3"]
    (root / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'classes.txt'} lists 2 classes but 4 were requested")):
        open_dataset(root, "val", num_classes=4)
    (root / "classes.txt").write_text("a\n\nb\n")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'classes.txt'} must hold one non-empty class name")):
        open_dataset(root, "val")


def test_colour_mask_is_rejected_with_its_name(tmp_path):
    root = make_folder(tmp_path)
    _save(root / "masks" / "val" / "im1.png", _rgb(20, 30))
    with pytest.raises(ValueError, match=re.escape(f"{root / 'masks' / 'val' / 'im1.png'}: label map has PIL mode "
                                                   "RGB")):
        open_dataset(root, "val").load(1)


# --- conversions ------------------------------------------------------------------------------------------------

def test_ade20k_reduce_zero_label(tmp_path):
    root = make_ade(tmp_path)
    _, label = ADE20K(root, "val").load(0)
    assert label[0, :4].tolist() == [255, 0, 149, 255]
    _save(root / "annotations" / "validation" / "ADE_1.png", np.full((12, 16), 151, np.uint8))
    msg = f"label map {root / 'annotations' / 'validation' / 'ADE_1.png'} contains id 151; ADE20K annotations hold"
    with pytest.raises(ValueError, match=re.escape(msg)):
        ADE20K(root, "val").load(1)


def test_cityscapes_train_ids_and_label_id_conversion(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        train_ids = Cityscapes(make_cityscapes(tmp_path / "t"), "val")
    assert "converting" not in caplog.text
    expected = [0, 13, 18, 255, 1, 255, 6, 11]
    assert train_ids.load(0)[1][0, :8].tolist() == expected
    with caplog.at_level(logging.WARNING):
        ids = Cityscapes(make_cityscapes(tmp_path / "i", kinds=("labelIds",)), "val")
    assert "2 of 2 label maps have no *_labelTrainIds.png; converting their *_labelIds.png" in caplog.text
    # official table: 7 road -> 0, 26 car -> 13, 33 bicycle -> 18, 0 unlabeled / 9 parking / 255 -> ignore,
    # 19 traffic light -> 6, 24 person -> 11
    assert ids.load(1)[1][0, :8].tolist() == [0, 13, 18, 255, 255, 255, 6, 11]
    both = Cityscapes(make_cityscapes(tmp_path / "b", kinds=("labelIds", "labelTrainIds")), "val")
    assert all(label.name.endswith("_labelTrainIds.png") for _, label in both.samples)


def test_any_image_mode_loads_as_rgb(tmp_path):
    root = make_folder(tmp_path, n=1)
    gray = np.arange(600, dtype=np.uint8).reshape(20, 30)
    rgba = np.dstack([_rgb(20, 30), np.full((20, 30), 9, np.uint8)])
    sixteen = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
    palette = Image.fromarray((np.arange(600) % 4).astype(np.uint8).reshape(20, 30), mode="L").convert("P")
    palette.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120] + [0] * (768 - 12))
    cases = {"gray.png": (gray, None), "rgba.png": (rgba, "RGBA"), "sixteen.png": (sixteen, None)}
    for name, (array, mode) in cases.items():
        _save(root / "images" / "val" / name, array, mode)
    palette.save(root / "images" / "val" / "palette.png")
    for name in [*cases, "palette.png"]:
        _save(root / "masks" / "val" / name, np.zeros((20, 30), np.uint8))
    ds = open_dataset(root, "val")
    loaded = {image.name: ds.load(i)[0] for i, (image, _) in enumerate(ds.samples)}
    for image in loaded.values():
        assert image.dtype == np.uint8 and image.shape == (20, 30, 3) and image.flags.writeable
    assert (loaded["gray.png"] == gray[..., None]).all()
    assert (loaded["rgba.png"] == rgba[..., :3]).all()
    assert (loaded["sixteen.png"] == (sixteen >> 8)[..., None]).all()  # scaled, not clipped at 255
    assert loaded["palette.png"][0, :4].tolist() == [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120]]


def test_palette_mask_indices_are_the_class_ids(tmp_path):
    root = make_folder(tmp_path, n=1)
    mask = Image.fromarray(np.array([[0, 1, 2, 255, 0, 1] * 5] * 20, np.uint8), mode="L").convert("P")
    mask.putpalette([v % 256 for v in range(768)])
    mask.save(root / "masks" / "val" / "im0.png")
    assert open_dataset(root, "val").load(0)[1][0, :4].tolist() == [0, 1, 2, 255]


# --- DataLoader wrapper -----------------------------------------------------------------------------------------

def _batches(ds: TransformedDataset, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, shuffle=False)
    return list(loader)


def test_seeded_runs_repeat_with_any_worker_count(tmp_path):
    root = make_folder(tmp_path, n=4)
    transform = TrainTransform(crop_size=(16, 16), scale=(40, 20))
    ds = TransformedDataset(open_dataset(root, "val"), transform, seed=7)
    serial, parallel = _batches(ds, 0), _batches(ds, 2)
    for (a, la), (b, lb) in zip(serial, parallel, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.equal(_batches(TransformedDataset(ds.dataset, transform, seed=7), 0)[0][0], serial[0][0])
    ds.set_epoch(1)
    assert not torch.equal(_batches(ds, 0)[0][0], serial[0][0])  # a new epoch draws new augmentations
    other = TransformedDataset(ds.dataset, transform, seed=8)
    assert not torch.equal(other[0][0], TransformedDataset(ds.dataset, transform, seed=7)[0][0])
    # indices past the end read file k % len with their own draw
    assert not torch.equal(ds[4][0], ds[0][0])
