"""MMSegmentation layout (`MixVisionTransformer` + `SegformerHead`), eps 1e-6 everywhere.

mmseg's attention is an `nn.MultiheadAttention` (fused `in_proj` rows q, k, v) and its Mix-FFN uses
1x1 convs for the two linear layers."""

from __future__ import annotations

import torch

from ..models.segmentor import SegFormerConfig
from ..models.zoo import MIT_EPS
from .format import KeyFormat
from .keymap import KeyMap

EPS = MIT_EPS["mmseg"]

_BLOCK = "encoder.stages.{s}.blocks.{b}."
_LAYER = "layers.{S}.1.{b}."
KEYS = KeyMap([
    ("layers.{S}.0.projection", "encoder.stages.{s}.patch_embed.proj"),
    ("layers.{S}.0.norm", "encoder.stages.{s}.patch_embed.norm"),
    (_LAYER + "norm1", _BLOCK + "norm1"),
    (_LAYER + "attn.attn.in_proj", _BLOCK + "attn.qkv"),  # in_proj_weight -> attn.qkv_weight
    (_LAYER + "attn.attn.out_proj", _BLOCK + "attn.proj"),
    (_LAYER + "attn.sr", _BLOCK + "attn.sr"),
    (_LAYER + "attn.norm", _BLOCK + "attn.norm"),
    (_LAYER + "norm2", _BLOCK + "norm2"),
    (_LAYER + "ffn.layers.0", _BLOCK + "mlp.fc1"),
    (_LAYER + "ffn.layers.1", _BLOCK + "mlp.dwconv"),
    (_LAYER + "ffn.layers.4", _BLOCK + "mlp.fc2"),
    ("layers.{S}.2", "encoder.stages.{s}.norm"),
    ("decode_head.convs.{S}.conv", "decode_head.convs.{s}.conv"),
    ("decode_head.convs.{S}.bn", "decode_head.convs.{s}.bn"),
    ("decode_head.fusion_conv.conv", "decode_head.linear_fuse"),
    ("decode_head.fusion_conv.bn", "decode_head.bn"),
    ("decode_head.conv_seg", "decode_head.classifier"),
])


def matches(keys: list[str]) -> bool:
    return any(k.endswith("layers.0.0.projection.weight") for k in keys)


def to_native(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    sd = {k.removeprefix("backbone."): v for k, v in state_dict.items()}
    # "in_proj_weight" has no "." before its suffix: make it look like a module + parameter name.
    sd = {k.replace("attn.attn.in_proj_", "attn.attn.in_proj."): v for k, v in sd.items()}
    renamed, unknown = KEYS.to_native(sd)
    out = {}
    for key, value in renamed.items():
        if ".attn.qkv." in key:  # q rows first, then k, v: q stays apart, k and v become our fused kv
            q, kv = value.split([value.shape[0] // 3, 2 * value.shape[0] // 3])
            out[key.replace(".qkv.", ".q.")] = q
            out[key.replace(".qkv.", ".kv.")] = kv
        elif (".mlp.fc1." in key or ".mlp.fc2." in key) and value.ndim == 4:
            out[key] = value.flatten(1)  # 1x1 conv weight -> Linear weight
        else:
            out[key] = value
    return out, unknown


def from_native(state_dict: dict[str, torch.Tensor], config: SegFormerConfig | None) -> dict[str, torch.Tensor]:
    if config is not None and config.task == "classification":
        raise ValueError("MMSegmentation has no SegFormer classification head; convert the encoder alone "
                         "or use --to hf / nvlabs / ours")
    if config is not None and config.decoder_style != "mmseg":
        raise ValueError("mmseg's SegformerHead has a per-stage conv+BN+ReLU that the HF-style decoder lacks: "
                         "convert this model --to hf, --to nvlabs or --to ours. For a model MMSegmentation can load, "
                         "train with a recipe (configs/segformer_*.yaml use decoder_style: mmseg) or "
                         "`--set model_args.decoder_style=mmseg`")
    sd = {}
    for key, value in state_dict.items():
        if ".attn.q." in key:
            sd[key.replace(".q.", ".qkv.")] = torch.cat([value, state_dict[key.replace(".q.", ".kv.")]])
        elif ".attn.kv." in key:
            continue
        elif ".mlp.fc1." in key or ".mlp.fc2." in key:
            sd[key] = value[..., None, None] if value.ndim == 2 else value
        else:
            sd[key] = value
    out = {}
    for key, value in KEYS.from_native(sd).items():
        key = key.replace("attn.attn.in_proj.", "attn.attn.in_proj_")
        out[key if key.startswith("decode_head.") or config is None else f"backbone.{key}"] = value
    return out


FORMAT = KeyFormat("mmseg", "segformer", matches, to_native, from_native, eps=EPS)
