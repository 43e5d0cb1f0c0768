"""Pose metrics as MMPose: PCK normalised by the person box (`PCKAccuracy`, norm_item "bbox") and, with the
`coco` extra (pycocotools), COCO keypoint AP from OKS; plus the dataset evaluation loop.

PCK@thr: a keypoint is correct when its distance to the ground truth, divided by the box's longer side, is
below thr; accuracy is computed per keypoint type over the labelled instances, then averaged over the types
that have any (MMPose's `keypoint_pck_accuracy`), in percent here.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from tqdm import tqdm

from .data.keypoints import COCO_KEYPOINTS, KeypointDataset
from .pose_inference import predict_batch


def pck_accuracy(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, thr: float, norm: np.ndarray) -> float:
    """Mean over keypoint types of the fraction of labelled keypoints within thr x norm (a fraction, 0..1).

    pred, gt (N, K, 2); mask (N, K) labelled; norm (N, 2) per-axis normalisers (an instance with a 0 is
    skipped; a negative one counts as 1e6, as MMPose does)."""
    pred, gt = np.asarray(pred, dtype=np.float32), np.asarray(gt, dtype=np.float32)
    norm = np.asarray(norm, dtype=np.float32).copy()
    valid = np.asarray(mask, dtype=bool) & ~(norm == 0).any(axis=1, keepdims=True)
    norm[norm <= 0] = 1e6
    distance = np.linalg.norm((pred - gt) / norm[:, None, :], axis=-1).astype(np.float32)
    counts = valid.sum(axis=0)
    hits = ((distance < thr) & valid).sum(axis=0)
    per_type = hits[counts > 0] / counts[counts > 0]
    return float(per_type.mean()) if len(per_type) else 0.0


class PCKMetric:
    """Accumulates predictions (image pixels) and ground truth per instance; `compute` gives PCK@thr in percent."""

    def __init__(self, thresholds: tuple[float, ...] = (0.1, 0.05)):
        self.thresholds = thresholds
        self.pred, self.gt, self.mask, self.size = [], [], [], []

    def update(self, pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, boxes_xyxy: np.ndarray) -> None:
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        self.pred.append(np.asarray(pred, dtype=np.float32))
        self.gt.append(np.asarray(gt, dtype=np.float32))
        self.mask.append(np.asarray(visible) > 0)
        self.size.append((boxes[:, 2:] - boxes[:, :2]).max(axis=1, keepdims=True).repeat(2, axis=1))

    def compute(self) -> dict:
        if not self.pred:
            raise ValueError("PCKMetric.compute: no instances were evaluated")
        args = [np.concatenate(x) for x in (self.pred, self.gt, self.mask, self.size)]
        out = {f"PCK@{thr:g}": 100.0 * pck_accuracy(args[0], args[1], args[2], thr, args[3])
               for thr in self.thresholds}
        out["num_instances"] = int(len(args[0]))
        return out


def coco_ap_available(dataset: KeypointDataset) -> bool:
    """Whether COCO's keypoint AP can be computed on `dataset`: pycocotools installed, COCO's 17 keypoints."""
    return dataset.meta.names == COCO_KEYPOINTS and importlib.util.find_spec("pycocotools") is not None


def evaluate_pose(model: torch.nn.Module, dataset: KeypointDataset, *, input_size: tuple[int, int],
                  flip_test: bool = True, batch_size: int = 16, progress: bool = False,
                  coco_ap: bool | None = None) -> dict:
    """PCK@0.1 and PCK@0.05 (percent) of a top-down pose model on the ground-truth boxes of `dataset`
    (input_size (w, h)), with the flip test by default, and COCO's keypoint AP (`coco_eval.keypoint_ap`):
    `coco_ap=None` adds it when pycocotools is installed and the keypoints are COCO's 17, True requires it.
    On a dataset of detector boxes (`open_keypoints(..., detections=)`) there is no PCK, only the AP."""
    detected = dataset.detections is not None
    if detected and coco_ap is False:
        raise ValueError(f"{dataset.detections}: on detector boxes only COCO keypoint AP can be computed, and it "
                         f"was turned off")
    metric, results = PCKMetric(), []
    model.eval()
    indices = range(0, len(dataset), batch_size)
    for start in tqdm(indices, disable=not progress, desc="eval", unit="batch"):
        images, items = zip(*(dataset.load(i) for i in range(start, min(start + batch_size, len(dataset)))))
        boxes = np.stack([it.box for it in items])
        keypoints, scores = predict_batch(model, images, boxes, input_size,
                                          flip_indices=dataset.meta.flip_indices if flip_test else None)
        if not detected:
            metric.update(keypoints, np.stack([it.keypoints for it in items]),
                          np.stack([it.visible for it in items]), boxes)
        results += [(it, k, s) for it, k, s in zip(items, keypoints, scores)]
    out = {"num_instances": len(results)} if detected else metric.compute()
    if detected or coco_ap or (coco_ap is None and coco_ap_available(dataset)):
        from .coco_eval import keypoint_ap

        out.update(keypoint_ap(dataset, results, input_size))
    return out


def mean_pose(dataset: KeypointDataset) -> np.ndarray:
    """(K, 2): the labelled keypoints' mean offset from their box's center, in units of the box's longer side."""
    offsets = np.stack([(i.keypoints - (i.box[:2] + i.box[2:]) / 2) / (i.box[2:] - i.box[:2]).max()
                        for i in dataset.instances])
    seen = np.stack([i.visible for i in dataset.instances])[..., None] > 0
    return (offsets * seen).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)


def shifted_window_pck(model: torch.nn.Module, train_set: KeypointDataset, val_set: KeypointDataset, *,
                       input_size: tuple[int, int], shift: float = 0.15, flip_test: bool = True) -> dict:
    """What a pose model learnt from the pixels: PCK@0.1 / PCK@0.05 (percent) of `model` and of an image-blind
    predictor (the training set's `mean_pose`, placed in the window) when every test window is moved by `shift`
    x its box's width and height (signs drawn with seed 0). PCK stays normalised by the true box. With ground-truth
    windows (shift 0) the mean pose scores high on sets whose boxes hug the persons; moved, it scores ~0."""
    model.eval()
    images, insts = zip(*(val_set.load(i) for i in range(len(val_set))))
    boxes = np.stack([i.box for i in insts])
    size = boxes[:, 2:] - boxes[:, :2]
    offset = shift * size * np.random.default_rng(0).choice([-1, 1], size=size.shape)
    moved = boxes + np.concatenate([offset, offset], axis=1)
    keypoints = np.concatenate([predict_batch(model, images[i:i + 16], moved[i:i + 16], input_size,
                                              val_set.meta.flip_indices if flip_test else None)[0]
                                for i in range(0, len(images), 16)])
    norm = size.max(axis=1, keepdims=True).repeat(2, axis=1)
    prior = mean_pose(train_set)[None] * norm[:, None] + ((moved[:, :2] + moved[:, 2:]) / 2)[:, None]
    gt, seen = np.stack([i.keypoints for i in insts]), np.stack([i.visible for i in insts]) > 0
    return {f"{name} PCK@{thr:g}": 100 * pck_accuracy(pred, gt, seen, thr, norm)
            for name, pred in (("model", keypoints), ("mean pose", prior)) for thr in (0.1, 0.05)}
