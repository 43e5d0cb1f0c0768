"""SegFormer checkpoints (MiT encoder, All-MLP / classification / pose heads): the config read off tensor shapes and
the model `load_model` builds for a checkpoint and its overrides."""

from __future__ import annotations

import dataclasses
import warnings

import torch

from ..models.base import split_overrides
from ..models.mit import MiTConfig, MixTransformer
from ..models.pose import COCO_NUM_KEYPOINTS
from ..models.segmentor import SegFormer, SegFormerConfig
from ..models.zoo import default_decoder_dim, pose_overrides
from .format import Architecture, Format, Plan


def infer_config(sd: dict[str, torch.Tensor], eps: dict[str, float]) -> SegFormerConfig:
    """Architecture from our-layout tensor shapes. Heads are not visible in shapes: the SegFormer
    default (1, 2, 5, 8) is used (override with num_heads=...). Strides follow kernel k -> (k + 1) // 2,
    the rule of every published MiT (7 -> 4, 3 -> 2)."""
    stage = "encoder.stages.{}."
    try:
        proj = [sd[stage.format(i) + "patch_embed.proj.weight"] for i in range(4)]
    except KeyError as exc:
        raise ValueError(f"checkpoint lacks the patch embedding {exc.args[0]!r}: not a 4-stage MiT") from None
    depths = [len({k.split(".")[4] for k in sd if k.startswith(stage.format(i) + "blocks.")}) for i in range(4)]
    dims = [p.shape[0] for p in proj]
    sr = [sd[stage.format(i) + "blocks.0.attn.sr.weight"].shape[-1]
          if stage.format(i) + "blocks.0.attn.sr.weight" in sd else 1 for i in range(4)]
    mlp = [sd[stage.format(i) + "blocks.0.mlp.fc1.weight"].shape[0] // dims[i] for i in range(4)]
    encoder = MiTConfig(in_channels=proj[0].shape[1], embed_dims=dims, depths=depths, sr_ratios=sr,
                        patch_sizes=[p.shape[-1] for p in proj], strides=[(p.shape[-1] + 1) // 2 for p in proj],
                        mlp_ratios=mlp, qkv_bias=stage.format(0) + "blocks.0.attn.q.bias" in sd, **eps)
    if "decode_head.fc.weight" in sd:
        return SegFormerConfig(encoder=encoder, task="classification", num_classes=sd["decode_head.fc.weight"].shape[0])
    if "decode_head.classifier.weight" in sd:
        cls = sd["decode_head.classifier.weight"]
        style = "mmseg" if "decode_head.convs.0.conv.weight" in sd else "hf"
        return SegFormerConfig(encoder=encoder, num_classes=cls.shape[0], decoder_style=style, decoder_dim=cls.shape[1])
    return SegFormerConfig(encoder=encoder)


def _infer(sd: dict[str, torch.Tensor], fmt: Format) -> SegFormerConfig:
    config = infer_config(sd, dict(fmt.eps))
    if fmt.task == "pose":  # the reference's heatmap head: no dropout
        config = dataclasses.replace(config, task="pose", decoder_dropout=0.0)
    return config


def plan(sd: dict[str, torch.Tensor], config: SegFormerConfig, has_head: bool, source: str, overrides: dict) -> Plan:
    """Overrides: `num_classes` (re-initialises the classifier), `task`, `num_keypoints` (pose), `token_merging` and
    SegFormerConfig / MiTConfig fields. An encoder-only checkpoint gives a `MixTransformer` unless a task asks for
    a head, which then starts fresh (and is reported)."""
    overrides = dict(overrides)
    token_merging = overrides.pop("token_merging", None)
    task = overrides.pop("task", None)
    # pose: num_keypoints, and for a new pose head its defaults (a saved pose head keeps its own settings)
    new_task = (task or config.task) != config.task
    overrides = pose_overrides(task or config.task, overrides, defaults=not has_head or new_task)
    task = overrides.pop("task", task)
    num_classes = overrides.pop("num_classes", None)
    enc, head = split_overrides(overrides, SegFormerConfig, MiTConfig, "load_model: unknown override(s)",
                                extra=("num_classes", "task", "token_merging"))
    encoder_cfg = dataclasses.replace(config.encoder, **enc)
    if task == "encoder" or (task is None and not has_head):
        return Plan(MixTransformer(encoder_cfg), encoder_part(sd))
    fresh, num_classes = _fresh_head(config, task, num_classes, has_head, source, head)
    if fresh == ("decode_head.",):  # a new head: the zoo's defaults unless overridden
        head.setdefault("decoder_dim", default_decoder_dim(encoder_cfg.depths,
                                                           head.get("decoder_style", config.decoder_style)))
    config = dataclasses.replace(config, encoder=encoder_cfg, task=task or config.task,
                                 num_classes=num_classes or config.num_classes, **head)
    model = SegFormer(config)
    if fresh == ("decode_head.",):
        warnings.warn(f"{source}: encoder-only checkpoint: the {config.task} head (decode_head.*, "
                      f"{sum(p.numel() for p in model.decode_head.parameters())} parameters) is initialised fresh",
                      stacklevel=3)
    if token_merging is not None:
        model.set_token_merging(token_merging)
    return Plan(model, sd, fresh)


def _fresh_head(config: SegFormerConfig, task: str | None, num_classes: int | None, has_head: bool, source: str,
                head: dict) -> tuple[tuple[str, ...], int | None]:
    """(prefixes that start fresh, num_classes) for a load asking for `task` / `num_classes`; a new classifier
    drops the checkpoint's class names from `head`."""
    if not has_head or (task is not None and task != config.task):
        head.setdefault("class_names", None)
        if num_classes is None and (task or config.task) != config.task:
            num_classes = COCO_NUM_KEYPOINTS if task == "pose" else SegFormerConfig.num_classes
        return ("decode_head.",), num_classes
    if num_classes is not None and num_classes != config.num_classes:
        last = "decode_head.fc." if config.task == "classification" else "decode_head.classifier."
        warnings.warn(f"{source}: num_classes {config.num_classes} -> {num_classes}: the classifier "
                      f"({last.rstrip('.')}) is initialised fresh", stacklevel=4)
        head.setdefault("class_names", None)
        return (last,), num_classes
    return (), num_classes


def encoder_part(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `encoder.` tensors of a model's state dict, named as in the encoder alone."""
    return {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}


ARCHITECTURE = Architecture("segformer", "SegFormer", "SegFormer", "MiT", ("decode_head.",),
                            MixTransformer, _infer, plan)
