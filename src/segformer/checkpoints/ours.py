"""Our own layouts: tensors named after our modules (`encoder.`, `decode_head.`, SETR's `neck.` and `aux_heads.`).
The LayerNorm eps and everything else the shapes do not show come from the config saved beside the weights."""

from __future__ import annotations

import torch

from .format import KeyFormat

SEGFORMER_MARK = "stages.0.patch_embed.proj.weight"  # a MiT encoder, with or without `encoder.`
SETR_MARK = "encoder.blocks.0.attn.qkv.weight"
SETR_PARTS = ("encoder.", "neck.", "decode_head.", "aux_heads.")


def _same(state_dict: dict[str, torch.Tensor], config: object | None) -> dict[str, torch.Tensor]:
    return dict(state_dict)


def _segformer_to_native(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A bare MiT state dict (no `encoder.` prefix) is the encoder."""
    return {(k if k.startswith(("encoder.", "decode_head.")) else f"encoder.{k}"): v
            for k, v in state_dict.items()}, []


def _setr_to_native(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    return dict(state_dict), [k for k in state_dict if not k.startswith(SETR_PARTS)]


SEGFORMER = KeyFormat("ours", "segformer", lambda keys: any(k.endswith(SEGFORMER_MARK) for k in keys),
                      _segformer_to_native, _same)
SETR = KeyFormat("ours", "setr", lambda keys: SETR_MARK in keys, _setr_to_native, _same)
