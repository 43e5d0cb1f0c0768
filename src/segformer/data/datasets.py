"""Datasets: ADE20K, Cityscapes and a generic folder layout, detected from the root folder.

Each dataset lists (image, label map) pairs at construction (so a missing label map or an empty split
fails at once, naming the file) and checks every label map when it is loaded (size and class ids).
`load(i)` returns raw arrays; `TransformedDataset` wraps a dataset with a transform for a DataLoader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..preprocess import reduce_labels, to_label_array, to_rgb_array
from .palettes import ADE20K_CLASSES, CITYSCAPES_CLASSES

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Cityscapes label id -> train id (cityscapesScripts helpers/labels.py); every id not listed is ignored.
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


class SegmentationDataset(torch.utils.data.Dataset):
    """A list of (image, label map) files; `dataset[i]` = `load(i)` = (RGB uint8 (H, W, 3), int64 (H, W))."""

    kind = "folder"
    scale: tuple[int, int] | None = None  # the recipes' resize bound (test Resize, train RandomResize base)

    def __init__(self, root: str | Path, split: str, samples: list[tuple[Path, Path]], class_names: list[str],
                 ignore_index: int = IGNORE_INDEX):
        self.root, self.split = Path(root), split
        self.samples = samples
        self.class_names = list(class_names)
        self.ignore_index = ignore_index

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load(index)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.samples[index]
        image = to_rgb_array(image_path)
        if not image.flags.writeable:  # PIL-backed arrays are read-only; transforms and users may write
            image = image.copy()
        try:
            label = to_label_array(label_path)
        except ValueError as exc:  # name the file where the message does not
            if str(label_path) in str(exc):
                raise
            raise ValueError(f"{label_path}: {exc}") from exc
        label = self.convert_label(label, label_path)
        if label.shape != image.shape[:2]:
            raise ValueError(f"label map {label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                             f"{image_path} is {image.shape[1]}x{image.shape[0]}; they must be the same size")
        bad = (label != self.ignore_index) & ((label < 0) | (label >= self.num_classes))
        if bad.any():
            raise ValueError(f"label map {label_path} contains class id {int(label[bad][0])} but the dataset has "
                             f"{self.num_classes} classes: accepted ids are 0..{self.num_classes - 1} and "
                             f"{self.ignore_index} (ignore)")
        return image, label

    def convert_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        """Raw ids on disk -> training ids (identity here; ADE20K and Cityscapes override)."""
        return label

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, {len(self)} images)"


def pair_files(image_dir: Path, label_dir: Path, image_suffixes: tuple[str, ...],
          label_names: Callable[[Path], list[str]]) -> list[tuple[Path, Path]]:
    """Pairs every image under `image_dir` (recursively) with its label map; errors name the missing file."""
    if not image_dir.is_dir():
        raise FileNotFoundError(f"split folder {image_dir} does not exist")
    lowered = tuple(s.lower() for s in image_suffixes)
    images = sorted(p for p in image_dir.rglob("*") if p.is_file() and p.name.lower().endswith(lowered))
    if not images:
        raise ValueError(f"split folder {image_dir} is empty: no files ending in {', '.join(image_suffixes)}")
    pairs, seen = [], {}
    for image in images:
        candidates = [label_dir / image.parent.relative_to(image_dir) / name for name in label_names(image)]
        label = next((c for c in candidates if c.is_file()), None)
        if label is None:
            raise FileNotFoundError(f"image {image} has no label map: expected {candidates[0]}")
        if label in seen:
            raise ValueError(f"images {seen[label]} and {image} share the label map {label}; rename one")
        seen[label] = image
        pairs.append((image, label))
    return pairs


def split_dir(parent: Path, split: str, aliases: dict[str, str]) -> str:
    """The folder name for `split` under `parent`, accepting train/val/test and the dataset's own names."""
    for name in (split, aliases.get(split)):
        if name and (parent / name).is_dir():
            return name
    found = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    raise FileNotFoundError(f"no split {split!r} under {parent}: found {found or 'no split folders'}")


class ADE20K(SegmentationDataset):
    """ADEChallengeData2016: images/{training,validation}/*.jpg + annotations/<split>/*.png, 150 classes.

    reduce_zero_label (mmseg): 0 ("other") -> 255, k -> k - 1.
    """

    kind = "ade20k"
    scale = (2048, 512)

    def __init__(self, root: str | Path, split: str = "val"):
        root = Path(root)
        if (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        aliases = {"train": "training", "val": "validation", "training": "train", "validation": "val"}
        name = split_dir(root / "images", split, aliases)
        samples = pair_files(root / "images" / name, root / "annotations" / name, (".jpg", ".jpeg", ".png"),
                        lambda p: [p.stem + ".png"])
        super().__init__(root, split, samples, list(ADE20K_CLASSES))

    def convert_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        bad = (label > len(ADE20K_CLASSES)) & (label != 255)
        if bad.any():
            raise ValueError(f"label map {path} contains id {int(label[bad][0])}; ADE20K annotations hold "
                             f"0 (other) .. {len(ADE20K_CLASSES)}")
        return reduce_labels(label, IGNORE_INDEX)


class Cityscapes(SegmentationDataset):
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png + gtFine/<split>/<city>/*_gtFine_labelTrainIds.png.

    Where only `*_gtFine_labelIds.png` exist, label ids are mapped to the 19 train ids with the official
    cityscapesScripts table (everything else -> 255), and a warning says so.
    """

    kind = "cityscapes"
    scale = (2048, 1024)

    def __init__(self, root: str | Path, split: str = "val"):
        root = Path(root)
        name = split_dir(root / "leftImg8bit", split, {"validation": "val", "training": "train"})

        def label_names(image: Path) -> list[str]:
            stem = image.name[: -len("_leftImg8bit.png")]
            return [f"{stem}_gtFine_labelTrainIds.png", f"{stem}_gtFine_labelIds.png"]

        samples = pair_files(root / "leftImg8bit" / name, root / "gtFine" / name, ("_leftImg8bit.png",), label_names)
        n_ids = sum(label.name.endswith("_labelIds.png") for _, label in samples)
        if n_ids:
            logger.warning("Cityscapes %s: %d of %d label maps have no *_labelTrainIds.png; converting their "
                           "*_labelIds.png with the official id -> train id table", root, n_ids, len(samples))
        super().__init__(root, split, samples, list(CITYSCAPES_CLASSES))
        self._lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
        for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
            self._lut[label_id] = train_id

    def convert_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        if path.name.endswith("_labelIds.png"):
            return self._lut[np.clip(label, 0, 255)]
        return label


class FolderDataset(SegmentationDataset):
    """ROOT/images/<split>/NAME.{jpg,png,...} + ROOT/masks/<split>/NAME.png (+ ROOT/classes.txt).

    classes.txt holds one class name per line (id = line number, 0-based); without it, `num_classes`
    must be given. Label value 255 is ignored.
    """

    def __init__(self, root: str | Path, split: str = "val", num_classes: int | None = None):
        root = Path(root)
        classes_file = root / "classes.txt"
        if classes_file.is_file():
            names = [line.strip() for line in classes_file.read_text(encoding="utf-8").splitlines()]
            while names and not names[-1]:
                names.pop()
            if not names or not all(names):
                raise ValueError(f"{classes_file} must hold one non-empty class name per line")
            if num_classes is not None and num_classes != len(names):
                raise ValueError(f"{classes_file} lists {len(names)} classes but {num_classes} were requested")
        elif num_classes is not None:
            names = [f"class_{i}" for i in range(num_classes)]
        else:
            raise ValueError(f"{root} has no classes.txt: add one (one class name per line) or pass num_classes")
        name = split_dir(root / "images", split, {"val": "validation", "validation": "val",
                                                   "train": "training", "training": "train"})
        samples = pair_files(root / "images" / name, root / "masks" / name, IMAGE_EXTENSIONS,
                        lambda p: [p.stem + ".png"])
        super().__init__(root, split, samples, names)


def open_dataset(root: str | Path, split: str = "val", num_classes: int | None = None) -> SegmentationDataset:
    """Detect the layout of `root` (ADE20K, Cityscapes, COCO-Stuff 164k, Pascal Context, Pascal VOC or folder) and
    open `split` of it. `num_classes` picks Pascal Context 60 (else 59) and sizes a folder without classes.txt."""
    from .more_datasets import open_more  # imported here: that module builds on this one

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    more = open_more(root, split, num_classes)
    if more is not None:
        return more
    if (root / "ADEChallengeData2016").is_dir() or ((root / "images").is_dir() and (root / "annotations").is_dir()):
        return ADE20K(root, split)
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return Cityscapes(root, split)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return FolderDataset(root, split, num_classes)
    raise ValueError(f"cannot tell the dataset layout of {root}: expected ADE20K (ADEChallengeData2016/ or "
                     "images/ + annotations/), Cityscapes (leftImg8bit/ + gtFine/), COCO-Stuff 164k (images/val2017/ + "
                     "annotations/), Pascal Context (SegmentationClassContext/), Pascal VOC (JPEGImages/ + "
                     "SegmentationClass/) or a folder (images/<split>/ + masks/<split>/ [+ classes.txt])")


class TransformedDataset(torch.utils.data.Dataset):
    """`dataset` with `transform(image, label, rng)` applied; ready for a multi-worker DataLoader.

    Sample `index` of epoch `epoch` draws from `numpy.random.default_rng([seed, epoch, index])`, so a run
    repeats exactly with any number of workers. Call `set_epoch` before each epoch (with non-persistent
    workers), or let the sampler pass indices >= len(dataset): index k reads file k % len(dataset) and
    gets its own draw.
    """

    def __init__(self, dataset: SegmentationDataset, transform, seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.dataset.load(index % len(self.dataset))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.transform(image, label, rng)
