"""Datasets (ADE20K, Cityscapes, COCO-Stuff, Pascal Context, VOC, folder, synthetic), mmseg transforms, palettes."""

from .datasets import ADE20K, Cityscapes, FolderDataset, SegmentationDataset, TransformedDataset, open_dataset
from .more_datasets import COCOStuff164k, PascalContext, PascalVOC
from .synthetic import SYNTHETIC_CLASSES, write_synthetic
from .transforms import PhotoMetricDistortion, TestTransform, TrainTransform

__all__ = ["ADE20K", "Cityscapes", "COCOStuff164k", "PascalContext", "PascalVOC", "FolderDataset",
           "SegmentationDataset", "TransformedDataset", "open_dataset",
           "SYNTHETIC_CLASSES", "write_synthetic", "PhotoMetricDistortion",
           "TestTransform", "TrainTransform"]
