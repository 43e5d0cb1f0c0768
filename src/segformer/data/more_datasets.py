"""COCO-Stuff 164k, Pascal Context (59 / 60) and Pascal VOC 2012 (+ SBD aug), in MMSegmentation's on-disk layouts.

Each reads the files mmseg's dataset converters write (tools/dataset_converters/{coco_stuff164k, pascal_context,
voc_aug}.py) with mmseg's class lists, label mappings and test scales; `open_dataset` detects them from the root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..preprocess import reduce_labels
from . import class_lists as cl
from .datasets import IGNORE_INDEX, SegmentationDataset, pair_files, split_dir

# COCO-Stuff stuffthingmaps ids 0..181 (0-based COCO category ids) that name no class; the other 171 ids map to
# train ids 0..170 in order (mmseg's coco_stuff164k.py converter table).
COCO_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)


def coco_stuff_lut() -> np.ndarray:
    """(256,) COCO-Stuff stuffthingmaps id -> train id (255 for unused ids and unlabelled)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    used = [i for i in range(182) if i not in COCO_UNUSED_IDS]
    lut[used] = np.arange(len(used))
    return lut


class COCOStuff164k(SegmentationDataset):
    """images/{train2017,val2017}/*.jpg + annotations/<split>/*_labelTrainIds.png, 171 classes.

    Where only the raw stuffthingmaps `*.png` exist (COCO ids 0..181), they are mapped with mmseg's table.
    """

    kind = "coco_stuff"
    scale = (2048, 512)

    def __init__(self, root: str | Path, split: str = "val"):
        root = Path(root)
        name = split_dir(root / "images", split, {"train": "train2017", "val": "val2017"})
        samples = pair_files(root / "images" / name, root / "annotations" / name, (".jpg",),
                        lambda p: [f"{p.stem}_labelTrainIds.png", f"{p.stem}.png"])
        super().__init__(root, split, samples, list(cl.COCO_STUFF_CLASSES))
        self._lut = coco_stuff_lut()

    def convert_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        if path.name.endswith("_labelTrainIds.png"):
            return label
        return self._lut[np.clip(label, 0, 255)]


def _listed(root: Path, list_file: Path, label_dir: str) -> list[tuple[Path, Path]]:
    """(JPEGImages/NAME.jpg, LABEL_DIR/NAME.png) for every NAME in `list_file`; errors name the missing file."""
    if not list_file.is_file():
        raise FileNotFoundError(f"split list {list_file} does not exist")
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"split list {list_file} is empty")
    pairs = []
    for name in names:
        image, label = root / "JPEGImages" / f"{name}.jpg", root / label_dir / f"{name}.png"
        for path, what in ((image, "image"), (label, "label map")):
            if not path.is_file():
                raise FileNotFoundError(f"{list_file} lists {name!r} but its {what} {path} does not exist")
        pairs.append((image, label))
    return pairs


class PascalContext(SegmentationDataset):
    """VOC2010 JPEGImages/ + SegmentationClassContext/ (mmseg's converted 0..59 maps), lists in
    ImageSets/SegmentationContext/{train,val}.txt. 60 classes (0 = background), or 59 (`num_classes=59`, the
    default): reduce_zero_label, background -> 255."""

    scale = (520, 520)

    def __init__(self, root: str | Path, split: str = "val", num_classes: int = 59):
        if num_classes not in (59, 60):
            raise ValueError(f"Pascal Context has 59 classes (no background) or 60; got num_classes={num_classes}")
        root = Path(root)
        self.kind = "pascal_context" if num_classes == 60 else "pascal_context_59"
        split_file = {"training": "train", "validation": "val"}.get(split, split)
        samples = _listed(root, root / "ImageSets" / "SegmentationContext" / f"{split_file}.txt",
                          "SegmentationClassContext")
        names = cl.PASCAL_CONTEXT_CLASSES if num_classes == 60 else cl.PASCAL_CONTEXT59_CLASSES
        super().__init__(root, split, samples, list(names))

    def convert_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        bad = (label > 59) & (label != IGNORE_INDEX)
        if bad.any():
            raise ValueError(f"label map {path} contains id {int(label[bad][0])}; Pascal Context maps hold 0..59")
        return label if self.num_classes == 60 else reduce_labels(label, IGNORE_INDEX)


class PascalVOC(SegmentationDataset):
    """VOC2012 JPEGImages/ + SegmentationClass/ (palette PNGs, 255 = boundary), lists in ImageSets/Segmentation/.

    21 classes. Split "train" is mmseg's voc12aug when the SBD conversion is present (ImageSets/Segmentation/
    aug.txt + SegmentationClassAug/): train.txt with SegmentationClass followed by aug.txt with
    SegmentationClassAug (mmseg's ConcatDataset); "aug" is the latter alone.
    """

    kind = "voc"
    scale = (2048, 512)

    def __init__(self, root: str | Path, split: str = "val"):
        root = Path(root)
        lists = root / "ImageSets" / "Segmentation"
        split_file = {"training": "train", "validation": "val"}.get(split, split)
        has_aug = (lists / "aug.txt").is_file() and (root / "SegmentationClassAug").is_dir()
        if split_file == "aug":
            samples = _listed(root, lists / "aug.txt", "SegmentationClassAug")
        else:
            samples = _listed(root, lists / f"{split_file}.txt", "SegmentationClass")
            if split_file == "train" and has_aug:
                samples += _listed(root, lists / "aug.txt", "SegmentationClassAug")
        super().__init__(root, split, samples, list(cl.VOC_CLASSES))


def open_more(root: Path, split: str, num_classes: int | None) -> SegmentationDataset | None:
    """The dataset at `root` if it is one of this module's layouts (also under VOCdevkit/ or the mmseg data
    folder names), else None. Pascal Context: 60 classes when `num_classes` is 60, else 59."""
    for candidate in (root, root / "VOCdevkit" / "VOC2012", root / "VOCdevkit" / "VOC2010", root / "coco_stuff164k"):
        if (candidate / "SegmentationClassContext").is_dir():
            return PascalContext(candidate, split, 60 if num_classes == 60 else 59)
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return PascalVOC(candidate, split)
        images = candidate / "images"
        if (candidate / "annotations").is_dir() and ((images / "train2017").is_dir() or (images / "val2017").is_dir()):
            return COCOStuff164k(candidate, split)
    return None


__all__ = ["COCOStuff164k", "PascalContext", "PascalVOC", "coco_stuff_lut", "open_more"]
