"""timm / JAX-converted ImageNet ViT checkpoints (`vit_large_patch16_384`, `jx_vit_large_p16_384`, ...):
`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
`norm`, and an ImageNet classifier (`head`, `pre_logits`, `fc_norm`) that segmentation does not use.

Our ViT uses timm's module names, so the encoder maps by adding `encoder.`; the classifier is set aside."""

from __future__ import annotations

import warnings

import torch

from ..models.setr import SETRConfig
from ..models.zoo import VIT_EPS
from .format import KeyFormat
from .keymap import KeyMap

# The ImageNet classifier: reported and set aside, never loaded.
CLASSIFIER_PREFIXES = ("head.", "pre_logits.", "fc_norm.")

_BLOCK = "blocks.{b}."
KEYS = KeyMap([
    ("cls_token", "encoder.cls_token"),
    ("pos_embed", "encoder.pos_embed"),
    ("patch_embed.proj", "encoder.patch_embed.proj"),
    (_BLOCK + "norm1", "encoder." + _BLOCK + "norm1"),
    (_BLOCK + "attn.qkv", "encoder." + _BLOCK + "attn.qkv"),
    (_BLOCK + "attn.proj", "encoder." + _BLOCK + "attn.proj"),
    (_BLOCK + "norm2", "encoder." + _BLOCK + "norm2"),
    (_BLOCK + "mlp.fc1", "encoder." + _BLOCK + "mlp.fc1"),
    (_BLOCK + "mlp.fc2", "encoder." + _BLOCK + "mlp.fc2"),
    ("norm", "encoder.norm"),
])


def matches(keys: list[str]) -> bool:
    return "patch_embed.proj.weight" in keys and "pos_embed" in keys


def to_native(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(our encoder keys, unknown keys); the loader sets the classifier (`CLASSIFIER_PREFIXES`) aside first."""
    return KEYS.to_native(state_dict)


def from_native(state_dict: dict[str, torch.Tensor], config: SETRConfig | None) -> dict[str, torch.Tensor]:
    """timm keys for the encoder part of our state dict (heads, neck: not part of a timm ViT)."""
    if config is not None:
        warnings.warn("a timm ViT holds the encoder only: the SETR neck and heads are not written", stacklevel=3)
    return KEYS.from_native({k: v for k, v in state_dict.items() if k.startswith("encoder.")})


FORMAT = KeyFormat("timm", "setr", matches, to_native, from_native, eps=VIT_EPS["timm"],
                   unused=CLASSIFIER_PREFIXES,
                   unused_note="ImageNet classifier tensors ignored (segmentation does not use them)")
