"""COCO keypoint AP (OKS) with pycocotools (the optional `coco` extra), for the ground-truth-box evaluation.

Each instance is scored as MMPose's `CocoMetric` does by default (score_mode "bbox_keypoint" with box score 1):
the mean of its keypoint scores above 0.2. Ground-truth boxes give one prediction per person, so MMPose's
OKS-NMS has nothing to remove and is not applied."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from .data.keypoints import COCO_KEYPOINTS, KeypointDataset

KEYPOINT_SCORE_THR = 0.2


def keypoint_ap(dataset: KeypointDataset, results: list) -> dict:
    """{"AP", "AP50", "AP75", "AR"} in percent from (instance, keypoints (K, 2), scores (K,)) triples."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("COCO keypoint AP needs pycocotools: pip install 'segformer[coco]'") from None
    if dataset.meta.names != COCO_KEYPOINTS:
        raise ValueError("COCO keypoint AP needs COCO's 17 keypoints (OKS sigmas are defined for those only)")
    detections = []
    for inst, keypoints, scores in results:
        good = scores[scores > KEYPOINT_SCORE_THR]
        triples = np.concatenate([keypoints, scores[:, None]], axis=1)
        score = float(good.mean()) if len(good) else 0.0
        detections.append({"image_id": inst.image_id, "category_id": dataset.category_id,
                           "keypoints": triples.reshape(-1).tolist(), "score": score})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO(str(dataset.annotation_file))
        evaluator = COCOeval(gt, gt.loadRes(detections), "keypoints")
        evaluator.params.imgIds = sorted({inst.image_id for inst, _, _ in results})
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"AP": 100 * stats[0], "AP50": 100 * stats[1], "AP75": 100 * stats[2], "AR": 100 * stats[5]}
