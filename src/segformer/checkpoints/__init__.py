"""Checkpoint formats (HF, NVlabs, MMSegmentation, ours): detection, conversion, loading and saving."""

from .io import read_checkpoint
from .loader import convert, detect_format, infer_config, load_model, read_source, save_pretrained

__all__ = ["convert", "detect_format", "infer_config", "load_model", "read_checkpoint", "read_source",
           "save_pretrained"]
