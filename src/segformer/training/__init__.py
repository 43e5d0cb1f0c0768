"""Training: the papers' recipes (AdamW / SGD with parameter-wise rules, warm-up + poly), AMP, gradient
accumulation, exact resume and DDP under torchrun."""

from .config import TrainConfig, load_config
from .trainer import NonFiniteLossError, Trainer, train

__all__ = ["TrainConfig", "load_config", "NonFiniteLossError", "Trainer", "train"]
