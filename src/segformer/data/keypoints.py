"""COCO-format keypoint data for top-down pose: one sample per annotated person (ground-truth box), and the
MMPose train / test pipelines (GetBBoxCenterScale, RandomFlip, RandomHalfBody, RandomBBoxTransform,
TopdownAffine, GenerateTarget with `MSRAHeatmap`).

Layouts (`open_keypoints(root, split)`): COCO itself (`annotations/person_keypoints_<split>2017.json` with
images in `<split>2017/`) or any COCO-format set as `annotations/<split>.json` with images in `images/<split>/`.
As MMPose: boxes (x, y, w, h) are clipped to the image; crowd instances, instances without labelled keypoints
and empty boxes are skipped; visibility 1 and 2 both count as labelled. Keypoint names, flip pairs (from
"left_"/"right_" names) and the skeleton come from the JSON category, COCO's are the default.

Detector boxes (`detections=`, MMPose's `bbox_file`): a COCO detection result file (a list of {image_id,
category_id, bbox [x, y, w, h], score}) replaces the annotated persons: as MMPose, only category 1 is kept, boxes
are not clipped, ids count the kept detections from 0, and those scoring below `box_score_thr` are dropped
(its `filter_cfg.bbox_score_thr`; 0 keeps all, MMPose's default). Empty boxes are dropped too (MMPose would warp
them to nothing). Such a set has no keypoints to score PCK with: it is for COCO's keypoint AP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                 (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))  # 0-based
COCO_UPPER_BODY = tuple(range(11))  # MMPose's coco.py: head, arms; the rest is lower body


@dataclass(frozen=True)
class KeypointMeta:
    """What a keypoint set needs beyond coordinates: names, left/right pairs, skeleton links, upper body."""

    names: tuple[str, ...] = COCO_KEYPOINTS
    skeleton: tuple[tuple[int, int], ...] = COCO_SKELETON
    upper_body: tuple[int, ...] = COCO_UPPER_BODY

    @cached_property
    def flip_indices(self) -> list[int]:
        """For each keypoint, the index of its mirror image ("left_x" <-> "right_x"; itself otherwise)."""
        index = {n: i for i, n in enumerate(self.names)}
        swap = {"left": "right", "right": "left"}
        out = []
        for name in self.names:
            head, sep, tail = name.partition("_")
            out.append(index.get(f"{swap[head]}{sep}{tail}", index[name]) if head in swap else index[name])
        return out

    @classmethod
    def from_category(cls, category: dict) -> KeypointMeta:
        names = tuple(category.get("keypoints") or COCO_KEYPOINTS)
        if names == COCO_KEYPOINTS:
            return cls()
        links = tuple((a - 1, b - 1) for a, b in category.get("skeleton") or [])  # COCO JSON links are 1-based
        upper = tuple(i for i, n in enumerate(names) if not any(p in n for p in ("hip", "knee", "ankle", "foot")))
        return cls(names, links, upper)


@dataclass
class PersonInstance:
    """One person: its image file, box (x1, y1, x2, y2), keypoints (K, 2), labelled flags (K,), ids."""

    image_path: Path
    box: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    image_id: int
    annotation_id: int
    area: float
    score: float = 1.0  # the box's: 1 for an annotated person, the detector's for a detection


class KeypointDataset:
    """The person instances of one COCO-format split. `load(i)` -> (RGB uint8 image, PersonInstance)."""

    ignore_index = 255  # unused by pose; kept for the trainer's dataset interface
    scale = None

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, detections: str | Path | None = None,
                 box_score_thr: float = 0.0):
        self.annotation_file, self.image_dir = Path(annotation_file), Path(image_dir)
        self.detections = Path(detections) if detections is not None else None
        data = _read_json(self.annotation_file, "annotation file")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"{self.annotation_file}: not a COCO keypoint file (no {key!r} entry)")
        categories = [c for c in data["categories"] if c.get("keypoints")] or data["categories"]
        self.meta = KeypointMeta.from_category(categories[0]) if categories else KeypointMeta()
        self.category_id = categories[0]["id"] if categories else 1
        images = {img["id"]: img for img in data["images"]}
        if self.detections is not None:
            self.instances = self._detected(images, box_score_thr)
            return
        self.instances = [inst for ann in data["annotations"]
                          if (inst := self._instance(ann, images, len(self.meta.names))) is not None]
        if not self.instances:
            raise ValueError(f"{self.annotation_file}: no usable person instance (every one is crowd, has no "
                             f"labelled keypoint or an empty box)")

    def _instance(self, ann: dict, images: dict, num_keypoints: int) -> PersonInstance | None:
        raw = np.asarray(ann.get("keypoints") or [], dtype=np.float32).reshape(-1, 3)
        if ann.get("iscrowd", 0) or len(raw) != num_keypoints or ann.get("num_keypoints", (raw[:, 2] > 0).sum()) == 0:
            return None
        img = images.get(ann["image_id"])
        if img is None:
            raise ValueError(f"{self.annotation_file}: annotation {ann.get('id')} names image {ann['image_id']}, "
                             f"which is not in 'images'")
        x, y, w, h = ann["bbox"]
        box = np.array([np.clip(x, 0, img["width"] - 1), np.clip(y, 0, img["height"] - 1),
                        np.clip(x + w, 0, img["width"] - 1), np.clip(y + h, 0, img["height"] - 1)], np.float32)
        if box[2] <= box[0] or box[3] <= box[1]:
            return None
        return PersonInstance(self.image_dir / img["file_name"], box, raw[:, :2].copy(),
                              np.minimum(1, raw[:, 2]), int(ann["image_id"]), int(ann.get("id", 0)),
                              float(ann.get("area", (box[2] - box[0]) * (box[3] - box[1]) * 0.53)))

    def _detected(self, images: dict, box_score_thr: float) -> list[PersonInstance]:
        """The persons of the detection file (module docstring), with zero keypoints none of them labelled."""
        where = f"detection file {self.detections}"
        entries = _read_json(self.detections, "detection file")
        if not isinstance(entries, list):
            raise ValueError(f"{where}: expected a list of COCO detections ({{image_id, category_id, bbox, score}})")
        instances, blank, person_id = [], np.zeros((len(self.meta.names), 2), np.float32), -1
        for position, det in enumerate(entries):
            if not isinstance(det, dict):
                raise ValueError(f"{where}: entry {position} is not an object {{image_id, category_id, bbox, score}}")
            if det.get("category_id") != 1:
                continue
            person_id += 1  # MMPose's ids: person detections counted from 0, before the score threshold
            missing = [k for k in ("image_id", "bbox", "score") if k not in det]
            if missing or len(det["bbox"]) < 4:
                raise ValueError(f"{where}: entry {position} lacks {missing or ['a 4-number bbox']}; each person "
                                 f"detection needs image_id, bbox [x, y, w, h] and score")
            img = images.get(det["image_id"])
            if img is None:
                raise ValueError(f"{where}: entry {position} names image {det['image_id']}, which is not in "
                                 f"{self.annotation_file}")
            x, y, w, h = (float(v) for v in det["bbox"][:4])
            if det["score"] < box_score_thr or w <= 0 or h <= 0:
                continue
            instances.append(PersonInstance(self.image_dir / img["file_name"], np.array([x, y, x + w, y + h],
                                            np.float32), blank.copy(), blank[:, 0].copy(), int(det["image_id"]),
                                            person_id, w * h, float(det["score"])))
        if not instances:
            raise ValueError(f"{where}: no person detection (category_id 1) with a non-empty box scoring >= "
                             f"{box_score_thr}")
        return instances

    @property
    def num_classes(self) -> int:  # the trainer's name for the number of outputs: heatmaps here
        return len(self.meta.names)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.names

    def __len__(self) -> int:
        return len(self.instances)

    def load(self, index: int) -> tuple[np.ndarray, PersonInstance]:
        inst = self.instances[index]
        if not inst.image_path.is_file():
            raise FileNotFoundError(f"{inst.image_path}: image of annotation {inst.annotation_id} "
                                    f"({self.annotation_file}) not found")
        with Image.open(inst.image_path) as im:
            return np.asarray(im.convert("RGB")), inst


def _read_json(path: Path, what: str):
    """The JSON in `path`; a missing file or bad JSON is an error naming the file and what it was for."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path}: not valid JSON ({exc})") from None


def open_keypoints(root: str | Path, split: str, detections: str | Path | None = None,
                   box_score_thr: float = 0.0) -> KeypointDataset:
    """Split `split` of a COCO-format keypoint set under `root` (see the module docstring for the layouts), its
    persons those of `detections` when given."""
    root = Path(root)
    layouts = [(root / "annotations" / f"person_keypoints_{split}2017.json", root / f"{split}2017"),
               (root / "annotations" / f"{split}.json", root / "images" / split)]
    for ann, images in layouts:
        if ann.is_file():
            return KeypointDataset(ann, images, detections, box_score_thr)
    raise FileNotFoundError(f"no keypoint annotations for split {split!r} under {root}: looked for "
                            + " and ".join(str(a) for a, _ in layouts))


def is_keypoint_root(root: str | Path) -> bool:
    """Whether `root` holds a COCO-format keypoint set (any split)."""
    ann = Path(root) / "annotations"
    return ann.is_dir() and any(ann.glob("person_keypoints_*.json")) or (Path(root) / "images").is_dir() and any(
        ann.glob("*.json"))
