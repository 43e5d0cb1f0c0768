"""The model a config trains: a zoo model, randomly initialised or started from `pretrained` weights.

`pretrained` may be an encoder (an ImageNet MiT such as `nvidia/mit-b0`, a timm ViT for SETR) or a full
segmentation checkpoint in any format `segformer.load_model` reads. The encoder must fit the zoo model
exactly; the head is taken too when it has the same shape (same decoder, same classes), else it starts fresh.
"""

from __future__ import annotations

import logging

from torch import nn

from ..checkpoints import fit_state_dict, load_model
from ..models.mit import MixTransformer
from ..models.segmentor import SegFormer
from ..models.zoo import create_model, get_entry
from .config import TrainConfig

log = logging.getLogger(__name__)


def with_token_merging(model: nn.Module, strategy) -> nn.Module:
    """`model` switched to SegFormer++ token merging `strategy` (None: off); only SegFormers merge tokens."""
    if isinstance(model, SegFormer):
        model.set_token_merging(strategy)
    elif strategy is not None:
        raise ValueError(f"token_merging: a {type(model).__name__} has no token merging (SegFormer++ changes the "
                         "attention of SegFormer's MiT encoder)")
    return model


def build_model(config: TrainConfig) -> nn.Module:
    """`create_model(config.model, num_classes=..., **config.model_args)`, filled from `config.pretrained`."""
    args = {**config.model_args, "num_classes": config.num_classes} if config.num_classes else dict(config.model_args)
    entry = get_entry(config.model)
    if config.pretrained is None:
        return create_model(config.model, **args)
    if entry.arch == "setr":  # the loader wraps a ViT (timm, mmseg or ours) in the SETR recipe
        return load_model(config.pretrained, model=config.model, **args)
    source = load_model(config.pretrained)
    if not isinstance(source, (SegFormer, MixTransformer)):
        raise ValueError(f"pretrained {config.pretrained} holds a {type(source).__name__}, which cannot start "
                         f"{config.model} (a SegFormer needs MiT weights)")
    model = create_model(config.model, **args)  # the zoo model defines the architecture; weights come from source
    sd = source.state_dict()
    if isinstance(source, MixTransformer):
        sd = {f"encoder.{k}": v for k, v in sd.items()}
    own = model.state_dict()
    head_fits = {k for k in sd if k.startswith("decode_head.")} == {k for k in own if k.startswith("decode_head.")} \
        and all(v.shape == own[k].shape for k, v in sd.items() if k.startswith("decode_head."))
    try:
        report = fit_state_dict(model, sd, fresh=() if head_fits else ("decode_head.",), source=config.pretrained)
    except ValueError as exc:
        theirs = source.encoder.config if isinstance(source, SegFormer) else source.config
        raise ValueError(f"pretrained {config.pretrained}: its encoder (embed dims {theirs.embed_dims}, depths "
                         f"{theirs.depths}) does not fit {config.model} (embed dims "
                         f"{model.encoder.config.embed_dims}, depths {model.encoder.config.depths}): {exc}") from None
    if report.fresh:
        log.info("pretrained %s: the decode head does not fit %s with %d classes; it starts fresh",
                 config.pretrained, config.model, model.config.num_classes)
    return model
