"""The original NVlabs/SegFormer release: ImageNet `mit_bX.pth` (bare encoder + `head`) and fine-tuned
segmentation checkpoints (`backbone.` + `decode_head.`, often inside `state_dict` next to `meta`).
NVlabs uses eps 1e-6 in blocks and stage norms, PyTorch's default 1e-5 in patch-embed and sr norms."""

from __future__ import annotations

import torch

from ..models.segmentor import SegFormerConfig
from ..models.zoo import MIT_EPS
from .format import KeyFormat
from .keymap import KeyMap, reverse_fuse_order

EPS = MIT_EPS["nvlabs"]

_BLOCK = "encoder.stages.{s}.blocks.{b}."
KEYS = KeyMap([
    ("patch_embed{S}.proj", "encoder.stages.{s}.patch_embed.proj"),
    ("patch_embed{S}.norm", "encoder.stages.{s}.patch_embed.norm"),
    ("block{S}.{b}.norm1", _BLOCK + "norm1"),
    ("block{S}.{b}.attn.q", _BLOCK + "attn.q"),
    ("block{S}.{b}.attn.kv", _BLOCK + "attn.kv"),
    ("block{S}.{b}.attn.proj", _BLOCK + "attn.proj"),
    ("block{S}.{b}.attn.sr", _BLOCK + "attn.sr"),
    ("block{S}.{b}.attn.norm", _BLOCK + "attn.norm"),
    ("block{S}.{b}.norm2", _BLOCK + "norm2"),
    ("block{S}.{b}.mlp.fc1", _BLOCK + "mlp.fc1"),
    ("block{S}.{b}.mlp.dwconv.dwconv", _BLOCK + "mlp.dwconv"),
    ("block{S}.{b}.mlp.fc2", _BLOCK + "mlp.fc2"),
    ("norm{S}", "encoder.stages.{s}.norm"),
    ("head", "decode_head.fc"),
    ("decode_head.linear_c{S}.proj", "decode_head.linear_c.{s}"),
    ("decode_head.linear_fuse.conv", "decode_head.linear_fuse"),
    ("decode_head.linear_fuse.bn", "decode_head.bn"),
    ("decode_head.linear_pred", "decode_head.classifier"),
], stage_base=1)

# NVlabs' SegFormerHead inherits mmseg 0.x's BaseDecodeHead, whose `conv_seg` is created but never used.
UNUSED_PREFIXES = ("decode_head.conv_seg.",)


def matches(keys: list[str]) -> bool:
    return any(k.endswith("patch_embed1.proj.weight") for k in keys)


def to_native(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    sd = {k.removeprefix("backbone."): v for k, v in state_dict.items()}
    out, unknown = KEYS.to_native(sd)
    if "decode_head.linear_fuse.weight" in out:
        out["decode_head.linear_fuse.weight"] = reverse_fuse_order(out["decode_head.linear_fuse.weight"])
    return out, unknown


def from_native(state_dict: dict[str, torch.Tensor], config: SegFormerConfig | None) -> dict[str, torch.Tensor]:
    if config is not None and config.task == "segmentation" and config.decoder_style != "hf":
        raise ValueError("NVlabs' SegFormerHead is the HF-style All-MLP decoder; an mmseg-style decoder "
                         "(per-stage ReLU) cannot be written in that layout: convert it --to mmseg or --to ours")
    sd = dict(state_dict)
    if "decode_head.linear_fuse.weight" in sd:
        sd["decode_head.linear_fuse.weight"] = reverse_fuse_order(sd["decode_head.linear_fuse.weight"])
    sd = KEYS.from_native(sd)
    segmentation = config is not None and config.task == "segmentation"
    return {(k if k.startswith("decode_head.") or not segmentation else f"backbone.{k}"): v for k, v in sd.items()}


FORMAT = KeyFormat("nvlabs", "segformer", matches, to_native, from_native, eps=EPS, unused=UNUSED_PREFIXES)
