"""Datasets (ADE20K, Cityscapes, folder, synthetic), the mmseg transforms, and palettes."""

from .datasets import ADE20K, Cityscapes, FolderDataset, SegmentationDataset, TransformedDataset, open_dataset
from .synthetic import SYNTHETIC_CLASSES, write_synthetic
from .transforms import PhotoMetricDistortion, TestTransform, TrainTransform

__all__ = ["ADE20K", "Cityscapes", "FolderDataset", "SegmentationDataset", "TransformedDataset", "open_dataset",
           "SYNTHETIC_CLASSES", "write_synthetic", "PhotoMetricDistortion",
           "TestTransform", "TrainTransform"]
