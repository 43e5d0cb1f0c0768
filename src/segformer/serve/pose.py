"""Keypoints for pose models (`POST /v1/keypoints`): person boxes in, COCO-style keypoints out, through
`segformer.pose_inference.predict_keypoints`, whose forward passes are batched like segmentation's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..data.keypoints import KeypointMeta
from .engine import RequestError, query_flag

MAX_BOXES = 100


@dataclass
class PoseOptions:
    """Query options of `POST /v1/keypoints`: boxes "x1,y1,x2,y2;..." (default: the whole image), flip test."""

    boxes: np.ndarray | None = None
    flip: bool = True


def meta_for(class_names) -> KeypointMeta:
    """The keypoint set of a pose model: COCO's 17 unless the model names another."""
    return KeypointMeta(tuple(class_names)) if class_names and len(class_names) != 17 else KeypointMeta()


def parse_pose_options(query: Mapping[str, str]) -> PoseOptions:
    unknown = sorted(set(query) - {"boxes", "flip"})
    if unknown:
        raise RequestError(400, f"unknown query parameter(s) {unknown}; accepted: boxes, flip")
    opts = PoseOptions(flip=query_flag(query["flip"], "flip") if "flip" in query else True)
    if query.get("boxes"):
        try:
            boxes = np.array([[float(v) for v in box.split(",")] for box in query["boxes"].split(";")],
                             dtype=np.float32)
        except ValueError:
            boxes = np.zeros((0, 0))
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not 1 <= len(boxes) <= MAX_BOXES or \
                (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
            raise RequestError(400, f"boxes takes 1 to {MAX_BOXES} boxes x1,y1,x2,y2 (x2 > x1, y2 > y1) separated "
                                    f"by ';', e.g. boxes=10,20,110,220;50,0,90,80; got {query['boxes']!r}")
        opts.boxes = boxes
    return opts


def people_json(keypoints: np.ndarray, scores: np.ndarray, boxes: np.ndarray | None, shape) -> list[dict]:
    """One entry per box: its box, keypoints [[x, y, score], ...] in image pixels, and the mean score."""
    if boxes is None:
        boxes = np.array([[0, 0, shape[1] - 1, shape[0] - 1]], dtype=np.float32)
    return [{"box": [round(float(v), 2) for v in box],
             "keypoints": np.concatenate([k, s[:, None]], 1).round(2).tolist(), "score": float(s.mean())}
            for box, k, s in zip(boxes, keypoints, scores)]
