"""Checkpoint layouts (HF, NVlabs, MMSegmentation, MMPose, timm, ours): detection, conversion, loading and saving.

Each layout is a `Format` in one registry keyed by (name, architecture); `fit_state_dict` is the one way tensors
go into a model."""

from .arch_segformer import infer_config
from .fit import LoadReport, fit_state_dict
from .format import Format
from .io import read_checkpoint
from .loader import convert, load_model, save_pretrained
from .registry import FORMATS, detect, get_format
from .source import detect_format, read_source

__all__ = ["FORMATS", "Format", "LoadReport", "convert", "detect", "detect_format", "fit_state_dict", "get_format",
           "infer_config", "load_model", "read_checkpoint", "read_source", "save_pretrained"]
