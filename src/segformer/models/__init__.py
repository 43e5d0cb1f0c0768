"""Model definitions: encoders, heads, and the named variants."""

from .decoders import ClassificationHead, MLPDecoder, MMSegMLPDecoder
from .loss import segmentation_loss
from .mit import MiTConfig, MixTransformer, mit_config
from .segmentor import SegFormer, SegFormerConfig
from .setr import SETR, SETRConfig, setr_config
from .vit import VisionTransformer, ViTConfig
from .zoo import create_model, list_models, model_config

__all__ = ["ClassificationHead", "MLPDecoder", "MMSegMLPDecoder", "MiTConfig", "MixTransformer", "mit_config",
           "SegFormer", "SegFormerConfig", "segmentation_loss", "create_model", "list_models", "model_config",
           "SETR", "SETRConfig", "setr_config", "VisionTransformer", "ViTConfig"]
