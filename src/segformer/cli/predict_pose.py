"""`segformer predict` for pose models: keypoints of the people in given boxes, drawn as skeletons.

Boxes come from `--boxes FILE.json` in COCO's detection-results format (a list of {"image_id", "bbox": [x, y,
w, h], "score", "category_id"}); an entry belongs to the input image whose file name, or whose name stem read as
a number (COCO's 000000397133.jpg is image 397133), equals its image_id. Without --boxes (or with no box for an
image) the whole image is one person box (score 1). Writes NAME_pose.png and NAME_keypoints.json per image: each
person's keypoints [x, y, score] and its score as MMPose's CocoMetric ranks it (box score x the mean keypoint score
above 0.2)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .common import device_of

DEFAULT_INPUT = (384, 288)  # (h, w)


def read_boxes(path: str | Path, threshold: float) -> dict[str, np.ndarray]:
    """image_id (as a string) -> (N, 5) x1, y1, x2, y2, score of the person detections scoring >= threshold."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--boxes {path}: not a readable JSON file ({exc})") from None
    if not isinstance(entries, list):
        raise ValueError(f"--boxes {path}: expected a list of COCO detections ({{'image_id', 'bbox': [x, y, w, h], "
                         f"'score'}}), got a {type(entries).__name__}")
    out: dict[str, list] = {}
    for i, det in enumerate(entries):
        if not isinstance(det, dict) or "image_id" not in det or len(det.get("bbox", ())) != 4:
            raise ValueError(f"--boxes {path}: entry {i} lacks image_id or a 4-number bbox: {det!r}")
        if det.get("category_id", 1) != 1 or det.get("score", 1.0) < threshold:
            continue
        x, y, w, h = (float(v) for v in det["bbox"])
        out.setdefault(str(det["image_id"]), []).append([x, y, x + w, y + h, float(det.get("score", 1.0))])
    return {k: np.array(v, dtype=np.float32) for k, v in out.items()}


def boxes_for(image: Path, boxes: dict[str, np.ndarray]) -> np.ndarray | None:
    if image.name in boxes:
        return boxes[image.name]
    stem = image.stem.lstrip("0") or "0"
    return boxes.get(stem) if stem.isdigit() else None


def _keypoint_meta(args: argparse.Namespace, model):
    """Keypoint names, left/right pairs and skeleton of the model's keypoints (COCO's when it names none and has
    17; without names and pairs the flip test is impossible)."""
    from ..data.keypoints import COCO_KEYPOINTS, KeypointMeta

    names, count = model.config.class_names, model.config.num_classes
    if not names and count != 17 and not args.no_flip_test:
        raise ValueError(f"model {args.model} predicts {count} keypoints without naming them: the flip test needs "
                         f"their left/right pairs; pass --no-flip-test (keypoints are then drawn without a skeleton)")
    names = names or (COCO_KEYPOINTS if count == 17 else [f"keypoint_{i}" for i in range(count)])
    return KeypointMeta.from_category({"keypoints": list(names)})  # COCO's skeleton for COCO's names, else none


def run_pose_predict(args: argparse.Namespace, model, inputs: list) -> int:
    """Predict and draw every (image, relative output stem) input; returns the exit code (1 if any image failed)."""
    from ..coco_eval import rescore
    from ..pose_inference import predict_keypoints
    from ..preprocess import to_rgb_array
    from ..utils.io import atomic_write_text
    from ..visualize import draw_keypoints
    from .common import save_png

    jobs = [(image, Path(args.out) / stem) for image, stem in inputs]
    taken = [p for _, p in jobs if p.with_name(f"{p.name}_pose.png").exists()]
    if taken and not args.overwrite:
        raise FileExistsError(f"{len(taken)} output(s) exist, e.g. {taken[0]}_pose.png; pass --overwrite")
    height, width = (tuple(args.size) * 2)[:2] if args.size else DEFAULT_INPUT
    boxes = read_boxes(args.boxes, args.box_threshold) if args.boxes else {}
    meta = _keypoint_meta(args, model)
    device = device_of(args)
    model.to(device).eval()
    failed = 0
    for image, stem in jobs:
        try:
            rgb = to_rgb_array(image)
            found = boxes_for(image, boxes)
            found = found if found is not None else np.array([[0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1, 1]])
            keypoints, scores = predict_keypoints(model, rgb, found[:, :4], input_size=(width, height), meta=meta,
                                                  flip_test=not args.no_flip_test)
            save_png(draw_keypoints(rgb, keypoints, scores, meta.skeleton, meta.flip_indices,
                                    boxes=found[:, :4]), stem.with_name(f"{stem.name}_pose.png"))
            people = [{"keypoints": np.concatenate([k, s[:, None]], 1).round(2).tolist(),
                       "score": rescore(s, float(box[4]))} for k, s, box in zip(keypoints, scores, found)]
            atomic_write_text(stem.with_name(f"{stem.name}_keypoints.json"), json.dumps(people))
        except Exception as exc:  # one bad image must not stop the batch: report it, go on, fail at the end
            failed += 1
            print(f"segformer predict: failed on {image}: {exc}", file=sys.stderr)
    print(f"segformer predict: {len(jobs)} images, {len(jobs) - failed} written, {failed} failed; outputs in "
          f"{args.out}")
    return 1 if failed else 0
