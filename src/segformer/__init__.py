"""segformer: semantic segmentation with transformers (SegFormer, SETR, SegFormer++)."""

from .checkpoints import load_model
from .inference import predict
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "predict", "__version__"]
