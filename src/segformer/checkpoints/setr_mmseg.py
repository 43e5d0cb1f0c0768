"""MMSegmentation layout of SETR: `VisionTransformer` backbone (+ `MLANeck`), `SETRUPHead` / `SETRMLAHead`
decode head and `SETRUPHead` / `FCNHead` auxiliary heads; LayerNorm eps 1e-6. Also reads mmseg ViT
backbone files (the output of mmseg's `vit2mmseg.py`: `layers.N.*` without `backbone.`).

mmseg's attention is an `nn.MultiheadAttention` whose fused `in_proj` rows are q, k, v: our `attn.qkv`."""

from __future__ import annotations

import torch

from ..models.setr import SETRConfig
from ..models.zoo import VIT_EPS
from .format import KeyFormat
from .keymap import KeyMap

_LAYER = "layers.{b}."
_BLOCK = "encoder.blocks.{b}."
_ENCODER = [
    ("cls_token", "encoder.cls_token"),
    ("pos_embed", "encoder.pos_embed"),
    ("patch_embed.projection", "encoder.patch_embed.proj"),
    (_LAYER + "ln1", _BLOCK + "norm1"),
    (_LAYER + "attn.attn.in_proj", _BLOCK + "attn.qkv"),  # in_proj_weight -> attn.qkv.weight (see below)
    (_LAYER + "attn.attn.out_proj", _BLOCK + "attn.proj"),
    (_LAYER + "ln2", _BLOCK + "norm2"),
    (_LAYER + "ffn.layers.0.0", _BLOCK + "mlp.fc1"),
    (_LAYER + "ffn.layers.1", _BLOCK + "mlp.fc2"),
    ("ln1", "encoder.norm"),  # the optional final norm (`final_norm=True`)
]
# Naive / PUP: the UP head and its auxiliary UP heads ({b}: auxiliary head index, {S}: conv stage).
UP_KEYS = KeyMap(_ENCODER + [
    ("decode_head.norm", "decode_head.norm"),
    ("decode_head.up_convs.{S}.0.conv", "decode_head.stages.{s}.conv"),
    ("decode_head.up_convs.{S}.0.bn", "decode_head.stages.{s}.bn"),
    ("decode_head.conv_seg", "decode_head.classifier"),
    ("auxiliary_head.{b}.norm", "aux_heads.{b}.norm"),
    ("auxiliary_head.{b}.up_convs.{S}.0.conv", "aux_heads.{b}.stages.{s}.conv"),
    ("auxiliary_head.{b}.up_convs.{S}.0.bn", "aux_heads.{b}.stages.{s}.bn"),
    ("auxiliary_head.{b}.conv_seg", "aux_heads.{b}.classifier"),
])
# MLA: neck + MLA head ({S}: level, {b}: conv within a level) and 1x1 FCN auxiliary heads ({b}: head index).
MLA_KEYS = KeyMap(_ENCODER + [
    ("neck.norm.{S}", "neck.norms.{s}"),
    ("neck.mla.channel_proj.{S}", "neck.proj.{s}"),
    ("neck.mla.feat_extract.{S}", "neck.fuse.{s}"),
    ("decode_head.up_convs.{S}.{b}", "decode_head.branches.{s}.{b}"),
    ("decode_head.conv_seg", "decode_head.classifier"),
    ("auxiliary_head.{b}.conv_seg", "aux_heads.{b}.classifier"),
])


def matches(keys: list[str]) -> bool:
    return any(k.removeprefix("backbone.") == "patch_embed.projection.weight" for k in keys)


def to_native(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    sd = {k.removeprefix("backbone."): v for k, v in state_dict.items()}
    # "in_proj_weight" has no "." before its suffix: make it look like a module + parameter name.
    sd = {k.replace("attn.attn.in_proj_", "attn.attn.in_proj."): v for k, v in sd.items()}
    keymap = MLA_KEYS if any(k.startswith("neck.") for k in sd) else UP_KEYS
    return keymap.to_native(sd)


def from_native(state_dict: dict[str, torch.Tensor], config: SETRConfig | None) -> dict[str, torch.Tensor]:
    """mmseg keys for our SETR state dict (`backbone.`-prefixed), or for a bare encoder (config None:
    the `layers.N.*` layout of mmseg's pretrained-backbone files)."""
    keymap = MLA_KEYS if config is not None and config.decoder == "mla" else UP_KEYS
    out = {}
    for key, value in keymap.from_native(state_dict).items():
        key = key.replace("attn.attn.in_proj.", "attn.attn.in_proj_")
        head = key.startswith(("neck.", "decode_head.", "auxiliary_head."))
        out[key if head or config is None else f"backbone.{key}"] = value
    return out


FORMAT = KeyFormat("mmseg", "setr", matches, to_native, from_native, eps=VIT_EPS["mmseg"])
