"""Semantic segmentation metrics exactly as MMSegmentation's IoUMetric, and a dataset evaluation loop.

Per image, pixels labelled `ignore_index` are dropped; intersection, union, predicted and labelled
areas are summed per class over the whole dataset (and across DDP ranks); then IoU_c = I_c / U_c,
Acc_c = I_c / label_c, aAcc = sum I / sum label, and mIoU / mAcc are NaN-means over classes (a class
with 0 / 0 is skipped), all in percent. Areas are int64 (mmseg sums float32 histograms, which stop
being exact above 2**24 pixels per class; the ratios agree to float32 precision).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from . import inference
from .data.datasets import SegmentationDataset, TransformedDataset
from .data.transforms import TestTransform
from .protocol import make_test_pipeline, resolve_scale, resolve_window
from .utils.distributed import is_initialized, rank_and_world

logger = logging.getLogger(__name__)

AREA_NAMES = ("area_intersect", "area_union", "area_pred_label", "area_label")


def intersect_and_union(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray, num_classes: int,
                        ignore_index: int = 255) -> torch.Tensor:
    """(4, K) int64 per-class pixel counts for one prediction: intersection, union, predicted, labelled.

    Like mmseg's histograms over [0, K - 1], ids outside 0..K-1 count in no class (but a labelled pixel
    predicted out of range still counts as labelled).
    """
    pred, label = torch.as_tensor(pred), torch.as_tensor(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction has shape {tuple(pred.shape)} but the label map has {tuple(label.shape)}")
    label = label.to(pred.device)
    keep = label != ignore_index
    pred, label = pred[keep].long(), label[keep].long()

    def hist(values: torch.Tensor) -> torch.Tensor:
        values = values[(values >= 0) & (values < num_classes)]
        return torch.bincount(values, minlength=num_classes)

    inter, area_pred, area_label = hist(pred[pred == label]), hist(pred), hist(label)
    return torch.stack([inter, area_pred + area_label - inter, area_pred, area_label]).cpu()


def areas_to_metrics(areas: torch.Tensor | np.ndarray) -> dict:
    """(4, K) summed areas -> {"aAcc", "mIoU", "mAcc" (percent floats), "IoU", "Acc" (per-class lists, NaN
    for a class with 0 / 0)}."""
    inter, union, _, label = np.asarray(areas, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        acc = inter / label
        a_acc = inter.sum() / label.sum()

    def nanmean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) * 100 if np.isfinite(values).any() else math.nan

    return {"aAcc": float(a_acc) * 100, "mIoU": nanmean(iou), "mAcc": nanmean(acc),
            "IoU": (iou * 100).tolist(), "Acc": (acc * 100).tolist()}


class IoUMetric:
    """Accumulates `intersect_and_union` over images; `all_reduce` sums across DDP ranks; `compute` scores."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Sequence[str] | None = None):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        self.areas = torch.zeros(4, num_classes, dtype=torch.int64)
        self.num_images = 0

    def update(self, pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        """Add one (H, W) prediction and its (H, W) label map."""
        self.areas += intersect_and_union(pred, label, self.num_classes, self.ignore_index)
        self.num_images += 1

    def all_reduce(self) -> None:
        """Sum the areas (and image counts) of all ranks in place; a no-op without torch.distributed."""
        if not is_initialized():
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        packed = torch.cat([self.areas.flatten(), torch.tensor([self.num_images])]).to(device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        packed = packed.cpu()
        self.areas, self.num_images = packed[:-1].view(4, self.num_classes), int(packed[-1])

    def compute(self) -> dict:
        """Metrics (percent) plus the class names, the summed areas and the image count."""
        out = areas_to_metrics(self.areas)
        out["classes"] = self.class_names
        out.update({name: self.areas[i].tolist() for i, name in enumerate(AREA_NAMES)})
        out["num_images"] = self.num_images
        return out


def first_input(dataset: SegmentationDataset, scale: tuple[int, int] | None = None, index: int = 0) -> torch.Tensor:
    """Image `index` (default the first) as `evaluate` feeds it to the model: (3, H, W), resized into `scale`
    or the dataset's recipe and normalised."""
    return TestTransform(scale if scale is not None else dataset.scale)(*dataset[index])[0]


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SegmentationDataset, *, scale: tuple[int, int] | None = None,
             mode: str | None = None, crop_size: tuple[int, int] | None = None, stride: tuple[int, int] | None = None,
             scales: Sequence[float] | None = None, flip: bool = False, dtype: str | torch.dtype | None = None,
             num_workers: int = 0, progress: bool = True) -> dict:
    """Score `model` on `dataset` with the mmseg test pipeline; returns `IoUMetric.compute()` plus "protocol"
    (the scale, mode and window used, as `protocol.make_test_pipeline` records them).

    Unset settings come from the test pipeline recorded with the model (`protocol.py`; training records it),
    else: the dataset's recipe scale, "whole", a 512 window at 2/3 stride.
    Each image is resized keep-ratio into `scale` (default: the dataset's recipe scale, e.g. (2048, 512)
    for ADE20K; none for a folder), run with `mode` ("whole" or "slide" with `crop_size`/`stride`, plus
    optional multi-scale `scales` (relative to the resized image) and `flip`; `dtype` for autocast), and its
    scores resized bilinearly to the label map's size before the argmax. Under torch.distributed each rank
    scores every world_size-th image and the areas are summed, so every rank returns the full result.
    """
    if mode is not None and mode not in inference.MODES:
        raise ValueError(f"unknown inference mode {mode!r}; accepted: {', '.join(inference.MODES)}")
    mode, crop_size, stride = resolve_window(model, mode, crop_size, stride)
    scale = resolve_scale(model, scale, dataset.scale)
    rank, world = rank_and_world()
    param = next(model.parameters(), None)  # a runtime runner (segformer.runtimes) has none: CPU
    device = param.device if param is not None else torch.device("cpu")
    metric = IoUMetric(dataset.num_classes, dataset.ignore_index, dataset.class_names)
    shard = torch.utils.data.Subset(TransformedDataset(dataset, TestTransform(scale)), range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(shard, batch_size=1, num_workers=num_workers)
    was_training = model.training
    model.eval()
    try:
        for image, label in tqdm(loader, desc="eval", disable=not progress or rank != 0, unit="img"):
            logits = inference.scores(model, image.to(device), mode, crop_size=crop_size, stride=stride, scales=scales,
                                      flip=flip, dtype=dtype)
            if logits.shape[-2:] != label.shape[-2:]:
                logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
            metric.update(logits.argmax(dim=1)[0], label[0])
    finally:
        model.train(was_training)
    metric.all_reduce()
    return {**metric.compute(), "protocol": make_test_pipeline(scale, mode, crop_size, stride)}

