"""Inference for any model that returns logits: on normalised tensors (`tensor.py`: whole image, sliding window,
multi-scale + flip) and on images (`predict.py`: label maps at the original size, from the model's recorded test
pipeline)."""

from ..protocol import MODES
from .predict import Prediction, PredictOptions, check_options, predict
from .tensor import multiscale, run_model, run_view, scaled_size, scores, slide, slide_blocks, whole, window_starts

__all__ = ["MODES", "PredictOptions", "Prediction", "check_options", "multiscale", "predict", "run_model", "run_view",
           "scaled_size", "scores", "slide", "slide_blocks", "whole", "window_starts"]
