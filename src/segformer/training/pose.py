"""What training a top-down pose model changes: COCO-format keypoint data, MMPose's pipeline and heatmap
targets (the model's own `loss` is the keypoint MSE) and PCK evaluation. The `Trainer` asks `is_pose(config)`
and uses these."""

from __future__ import annotations

from torch import nn

from ..data.keypoints import KeypointDataset, open_keypoints
from ..data.pose_transforms import PoseTrainTransform
from ..models.zoo import get_entry
from ..pose_evaluation import coco_ap_available, evaluate_pose
from .config import TrainConfig


def is_pose(config: TrainConfig) -> bool:
    return get_entry(config.model).task == "pose"


def input_size(config: TrainConfig) -> tuple[int, int]:
    """The network input (w, h) of a pose config (crop_size is (h, w))."""
    return config.crop_size[1], config.crop_size[0]


def open_pose_datasets(config: TrainConfig) -> tuple[KeypointDataset, KeypointDataset]:
    if config.data is None:
        raise ValueError("data: no dataset root given; set `data:` in the config or pass --data ROOT")
    train, val = open_keypoints(config.data, config.train_split), open_keypoints(config.data, config.val_split)
    if config.num_classes is not None and config.num_classes != train.num_classes:
        raise ValueError(f"num_classes is {config.num_classes} but {config.data} has {train.num_classes} keypoints")
    return train, val


def pose_transform(config: TrainConfig, dataset: KeypointDataset) -> PoseTrainTransform:
    return PoseTrainTransform(input_size(config), dataset.meta, sigma=config.sigma, flip_prob=config.flip_prob)


def best_metrics(dataset: KeypointDataset) -> tuple[str, ...]:
    """What a pose evaluation reports and `save_best` may name: PCK, and COCO AP where it is computed."""
    return ("PCK@0.1", "PCK@0.05", "AP") if coco_ap_available(dataset) else ("PCK@0.1", "PCK@0.05")


def evaluate(model: nn.Module, dataset: KeypointDataset, config: TrainConfig, progress: bool = False) -> dict:
    """PCK@0.1 / PCK@0.05 on the ground-truth boxes (flip test per the config), and COCO AP where available."""
    return evaluate_pose(model, dataset, input_size=input_size(config), flip_test=config.flip_test,
                         progress=progress)
