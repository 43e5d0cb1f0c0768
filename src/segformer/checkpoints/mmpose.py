"""The SegFormer++ MMPose layout: `backbone.*` as MMSegmentation's MiT plus the heatmap head
`head.{convs.i.{conv,bn}, fusion_conv.{conv,bn}, final_layer}` (the reference's `SegformerHead`).

The head is mmseg's SegFormer decoder without dropout, so only its prefix and the last layer's name differ;
the backbone keys and their eps (1e-6 everywhere) are mmseg's. Loaded models get `task="pose"`."""

from __future__ import annotations

import torch

from ..models.segmentor import SegFormerConfig
from . import mmseg
from .format import KeyFormat

EPS = mmseg.EPS
# (MMPose head prefix, the mmseg decode-head prefix our mmseg converter reads)
_HEAD = (("head.convs.", "decode_head.convs."), ("head.fusion_conv.", "decode_head.fusion_conv."),
         ("head.final_layer.", "decode_head.conv_seg."))


def matches(keys: list[str]) -> bool:
    return mmseg.matches(keys) and any(k.startswith("head.final_layer.") for k in keys)


def _rename(key: str, pairs) -> str:
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def to_native(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    return mmseg.to_native({_rename(k, _HEAD): v for k, v in state_dict.items()})


def from_native(state_dict: dict[str, torch.Tensor], config: SegFormerConfig | None) -> dict[str, torch.Tensor]:
    if config is None or config.task != "pose":
        raise ValueError("the MMPose layout holds a pose model (task='pose'); convert segmentation models "
                         "--to mmseg, --to hf, --to nvlabs or --to ours")
    out = mmseg.from_native(state_dict, config)
    return {_rename(k, [(new, old) for old, new in _HEAD]): v for k, v in out.items()}


def keypoint_names(meta: dict) -> list[str] | None:
    """Keypoint names from an MMEngine checkpoint's `meta.dataset_meta.keypoint_id2name`, when present."""
    names = (meta.get("dataset_meta") or {}).get("keypoint_id2name")
    if isinstance(names, dict) and names:
        return [str(names[i]) for i in sorted(names)]
    return None


FORMAT = KeyFormat("mmpose", "segformer", matches, to_native, from_native, eps=EPS, task="pose", names=keypoint_names)
