"""Training data: the datasets of a config, and an endless, resumable stream of per-process micro-batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from ..data.datasets import SegmentationDataset, TransformedDataset, open_dataset
from ..data.transforms import TrainTransform
from .config import TrainConfig


def open_datasets(config: TrainConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, val) splits of `config.data`; the class count is checked against `config.num_classes`."""
    if config.data is None:
        raise ValueError("data: no dataset root given; set `data:` in the config or pass --data ROOT")
    train = open_dataset(config.data, config.train_split, num_classes=config.num_classes)
    if config.num_classes is not None and config.num_classes != train.num_classes:
        raise ValueError(f"num_classes is {config.num_classes} but dataset {config.data} ({train.kind}) has "
                         f"{train.num_classes} classes; drop num_classes or set it to {train.num_classes}")
    val = open_dataset(config.data, config.val_split, num_classes=train.num_classes)
    return train, val


def check_files(dataset) -> None:
    """Open the header of every image and label map of `dataset` (a `SegmentationDataset`; others are skipped)
    and compare their sizes, so that a bad file stops the run before training, not at an evaluation hours in.
    Raises a ValueError naming the file."""
    for image_path, label_path in getattr(dataset, "samples", ()):
        sizes = []
        for path in (image_path, label_path):
            try:
                with Image.open(path) as picture:
                    sizes.append(picture.size)
            except (OSError, Image.DecompressionBombError) as exc:
                raise ValueError(f"{dataset.split} split: {path} is not a readable image ({exc}); fix or remove "
                                 f"it (with its {'label map' if path == image_path else 'image'})") from None
        if sizes[0] != sizes[1]:
            raise ValueError(f"{dataset.split} split: label map {label_path} is {sizes[1][0]}x{sizes[1][1]} (WxH) but "
                             f"its image {image_path} is {sizes[0][0]}x{sizes[0][1]}; they must be the same size")


def default_scale(dataset: SegmentationDataset, crop_size: tuple[int, int]) -> tuple[int, int]:
    """The resize bound when the config gives none: the dataset's recipe scale (ADE20K (2048, 512), Cityscapes
    (2048, 1024)), else (4 x crop, crop) as those recipes pair them."""
    if dataset.scale is not None:
        return tuple(dataset.scale)
    return 4 * max(crop_size), min(crop_size)


def train_transform(config: TrainConfig, ignore_index: int = 255) -> TrainTransform:
    """mmseg's training pipeline for a resolved config (`resolve_run_length` fills the augmentation's nulls)."""
    if config.scale is None or config.ratio_range is None or config.photometric is None:
        raise ValueError("train_transform needs a resolved config: scale, ratio_range and photometric set "
                         "(see trainer.resolve_config)")
    return TrainTransform(crop_size=config.crop_size, scale=config.scale, ratio_range=config.ratio_range,
                          cat_max_ratio=config.cat_max_ratio, flip_prob=config.flip_prob,
                          photometric=config.photometric, ignore_index=ignore_index)


class BatchStream(torch.utils.data.Sampler):
    """Endless micro-batches of dataset indices for one process, starting `start` micro-batches in.

    Epoch e shuffles with `DistributedSampler(seed, epoch=e)`; this process takes its share (every
    world_size-th index) in batches of `batch_size`, dropping a short tail. Indices are offset by
    e x len(dataset), so `TransformedDataset` reads file i % len and draws fresh augmentations every epoch.
    The stream is a pure function of (seed, world size, rank, batch size, start): resuming is exact."""

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start: int = 0):
        self.length, self.batch_size, self.rank, self.world_size = length, batch_size, rank, world_size
        self.seed, self.start = seed, start
        self.per_epoch = -(-length // world_size) // batch_size  # DistributedSampler pads to a multiple
        if self.per_epoch == 0:
            raise ValueError(f"the training split has {length} images, fewer than one batch of {batch_size} "
                             f"per process ({world_size} process(es)); lower batch_size or add images")

    def __iter__(self) -> Iterator[list[int]]:
        epoch, step = divmod(self.start, self.per_epoch)
        while True:
            sampler = DistributedSampler(range(self.length), num_replicas=self.world_size, rank=self.rank,
                                         shuffle=True, seed=self.seed)
            sampler.set_epoch(epoch)
            order = [epoch * self.length + i for i in sampler]
            for b in range(step, self.per_epoch):
                yield order[b * self.batch_size:(b + 1) * self.batch_size]
            epoch, step = epoch + 1, 0


def train_loader(dataset: SegmentationDataset, config: TrainConfig, batch_size: int, rank: int, world_size: int,
                 start: int, pin_memory: bool = False, transform=None) -> DataLoader:
    """A DataLoader over `BatchStream` (`transform(image, label, rng)`: the config's segmentation pipeline unless
    given); its own generator keeps the global RNG untouched (exact resume)."""
    transform = transform or train_transform(config, dataset.ignore_index)
    transformed = TransformedDataset(dataset, transform, seed=config.seed)
    stream = BatchStream(len(dataset), batch_size, rank, world_size, config.seed, start)
    return DataLoader(transformed, batch_sampler=stream, num_workers=config.num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(config.seed))
