"""Model definitions: encoders, heads, and the named variants."""

from .base import (
    ModelConfig,
    SegmentationModel,
    SegmentationOutput,
    config_from_dict,
    input_channels,
    model_from_config,
)
from .decoders import ClassificationHead, MLPDecoder, MMSegMLPDecoder
from .loss import segmentation_loss
from .mit import MiTConfig, MixTransformer, mit_config
from .segmentor import SegFormer, SegFormerConfig
from .setr import SETR, SETRConfig, setr_config
from .vit import VisionTransformer, ViTConfig
from .zoo import create_model, list_models, model_config

__all__ = ["ModelConfig", "SegmentationModel", "SegmentationOutput", "config_from_dict", "input_channels",
           "model_from_config",
           "ClassificationHead", "MLPDecoder", "MMSegMLPDecoder", "MiTConfig", "MixTransformer", "mit_config",
           "SegFormer", "SegFormerConfig", "segmentation_loss", "create_model", "list_models", "model_config",
           "SETR", "SETRConfig", "setr_config", "VisionTransformer", "ViTConfig"]
