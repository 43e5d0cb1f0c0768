"""COCO keypoint AP (OKS) with pycocotools (the optional `coco` extra), as MMPose's `CocoMetric` computes it by
default for top-down models (checked against it in tests/test_pose_mmpose_parity.py):

- each person gets the score box score x the mean of its keypoint scores above 0.2 (`score_mode="bbox_keypoint"`;
  ground-truth boxes score 1, a detector's box its own score, and a person with no keypoint above 0.2 scores 0);
- per image, OKS-NMS at 0.9 (`nms_mode="oks_nms"`): from the highest score down, a person whose OKS with a kept
  one exceeds 0.9 is dropped; OKS here uses the mean of the two persons' areas, the area of a person being that of
  its input window (box x 1.25 widened to the input's aspect, MMPose's `bbox_scales`), and all K keypoints;
- COCOeval "keypoints" on what remains, over the images evaluated.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict

import numpy as np

from .data.keypoints import COCO_KEYPOINTS, KeypointDataset
from .data.pose_transforms import crop_window

KEYPOINT_SCORE_THR = 0.2
NMS_THR = 0.9
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10


def rescore(keypoint_scores: np.ndarray, box_score: float = 1.0, thr: float = KEYPOINT_SCORE_THR) -> float:
    """Box score x the mean keypoint score over the keypoints scoring above `thr` (0 when none does)."""
    good = np.asarray(keypoint_scores)[np.asarray(keypoint_scores) > thr]
    return float(box_score * good.mean()) if len(good) else 0.0


def oks(one: np.ndarray, others: np.ndarray, area: float, other_areas: np.ndarray,
        sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """OKS of keypoints `one` (K, 2) with each of `others` (N, K, 2), normalised by the mean of the two areas."""
    variances = (2 * sigmas) ** 2
    dist2 = ((np.asarray(others) - np.asarray(one)) ** 2).sum(-1)
    scale = (area + np.asarray(other_areas)[:, None]) / 2 + np.spacing(1)
    return np.exp(-dist2 / variances / scale / 2).mean(axis=1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float = NMS_THR,
            sigmas: np.ndarray = COCO_SIGMAS) -> list[int]:
    """Indices kept by greedy OKS-NMS, highest score first: a person overlapping a kept one by OKS > thr goes."""
    order, keep = np.argsort(scores)[::-1], []
    while len(order):
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[oks(keypoints[best], keypoints[rest], areas[best], areas[rest], sigmas) <= thr]
    return keep


def coco_detections(results: list, category_id: int, input_size: tuple[int, int], *, score_keypoints: bool = True,
                    nms_thr: float | None = NMS_THR) -> list[dict]:
    """COCO keypoint results from (instance, keypoints (K, 2), scores (K,)) triples: one entry per annotation id,
    scored (`score_keypoints`: box score x mean keypoint score, else the box score) and OKS-NMS'd per image."""
    per_image = defaultdict(dict)
    for inst, keypoints, scores in results:
        per_image[inst.image_id].setdefault(inst.annotation_id, (inst, keypoints, scores))
    detections = []
    for image_id, by_id in per_image.items():
        insts, keypoints, scores = zip(*(by_id[k] for k in sorted(by_id)))
        keypoints, scores = np.stack(keypoints).astype(np.float32), np.stack(scores).astype(np.float32)
        person = np.array([rescore(s, inst.score) if score_keypoints else inst.score
                           for inst, s in zip(insts, scores)])
        keep = list(range(len(insts)))
        if nms_thr is not None:
            areas = np.array([np.prod(crop_window(inst.box, input_size)[1]) for inst in insts])
            keep = oks_nms(keypoints, person, areas, nms_thr)
        detections += [{"image_id": image_id, "category_id": category_id, "score": float(person[i]),
                        "keypoints": np.concatenate([keypoints[i], scores[i][:, None]], 1).reshape(-1).tolist()}
                       for i in keep]
    return detections


def keypoint_ap(dataset: KeypointDataset, results: list, input_size: tuple[int, int], *,
                score_keypoints: bool = True, nms_thr: float | None = NMS_THR) -> dict:
    """{"AP", "AP50", "AP75", "AR"} in percent of (instance, keypoints (K, 2), scores (K,)) triples predicted on
    `dataset` with crops of `input_size` (w, h), scored and OKS-NMS'd as MMPose's CocoMetric (module docstring)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("COCO keypoint AP needs pycocotools: pip install 'segformer[coco]'") from None
    if dataset.meta.names != COCO_KEYPOINTS:
        raise ValueError("COCO keypoint AP needs COCO's 17 keypoints (OKS sigmas are defined for those only)")
    detections = coco_detections(results, dataset.category_id, input_size, score_keypoints=score_keypoints,
                                 nms_thr=nms_thr)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO(str(dataset.annotation_file))
        evaluator = COCOeval(gt, gt.loadRes(detections), "keypoints")
        evaluator.params.imgIds = sorted({inst.image_id for inst, _, _ in results})
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {name: 100 * float(stats[i]) for name, i in (("AP", 0), ("AP50", 1), ("AP75", 2), ("AR", 5))}
