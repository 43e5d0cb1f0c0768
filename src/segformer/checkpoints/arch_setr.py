"""SETR / ViT checkpoints (our SETR layout, MMSegmentation SETR and ViT backbone files, timm / JAX ImageNet ViTs):
the config read off tensor shapes and the model `load_model` builds for a checkpoint and its overrides."""

from __future__ import annotations

import dataclasses
import warnings

import torch

from ..models.base import split_overrides
from ..models.setr import SETR, SETRConfig, setr_config
from ..models.vit import VisionTransformer, ViTConfig, resize_pos_embed, square_grid
from ..models.zoo import ZOO, model_config
from .arch_segformer import encoder_part
from .format import Architecture, Format, Plan

HEAD_PREFIXES = ("neck.", "decode_head.", "aux_heads.")
# ViT fields a SETR preset takes from the checkpoint (its architecture), the others (img_size, out_indices,
# with_cls_token, patch_bias, final_norm, ...) from the preset (the SETR recipe).
SHAPE_FIELDS = ("in_channels", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias")
# SETRConfig fields that shape the neck and heads, per decoder: a checkpoint's heads load only into the same.
HEAD_FIELDS = {"mla": ("channels", "mla_channels", "up_scale", "aux_indices"),
               "up": ("channels", "num_convs", "kernel_size", "up_scale", "aux_indices", "aux_num_convs",
                      "aux_kernel_size", "aux_up_scale")}


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def infer_config(sd: dict[str, torch.Tensor], eps: dict[str, float] | None = None) -> SETRConfig:
    """SETR config from our-layout shapes. Not visible in shapes, taken from mmseg's SETR configs: heads =
    embed_dim / 64, out_indices and class-token use per decoder (see `setr_config`), an UP decode head
    upsamples x2 per stage when it has 4 stages (PUP) and x4 otherwise (naive), auxiliary UP heads x4.
    Override any of them with load_model(..., num_heads=..., out_indices=...)."""
    try:
        proj, pos = sd["encoder.patch_embed.proj.weight"], sd["encoder.pos_embed"]
    except KeyError as exc:
        raise ValueError(f"checkpoint lacks {exc.args[0]!r}: not a ViT encoder") from None
    dim, patch = proj.shape[0], proj.shape[-1]
    grid = square_grid(pos.shape[1])
    enc = dict(in_channels=proj.shape[1], patch_size=patch, embed_dim=dim, depth=_count(sd, "encoder.blocks."),
               num_heads=max(dim // 64, 1), mlp_ratio=sd["encoder.blocks.0.mlp.fc1.weight"].shape[0] / dim,
               qkv_bias="encoder.blocks.0.attn.qkv.bias" in sd, patch_bias="encoder.patch_embed.proj.bias" in sd,
               final_norm="encoder.norm.weight" in sd, img_size=(grid[0] * patch, grid[1] * patch), **(eps or {}))
    if "decode_head.classifier.weight" not in sd:  # encoder only: SETR-PUP's recipe around it
        return setr_config("pup", **enc)
    classifier = sd["decode_head.classifier.weight"]
    aux = _count(sd, "aux_heads.")
    if any(k.startswith("neck.") for k in sd):
        head = dict(channels=sd["neck.proj.0.conv.weight"].shape[0],
                    mla_channels=sd["decode_head.branches.0.0.conv.weight"].shape[0])
        return setr_config("mla", num_classes=classifier.shape[0], aux_indices=tuple(range(aux)), **head, **enc)
    convs = _count(sd, "decode_head.stages.")
    head = dict(num_convs=convs, kernel_size=sd["decode_head.stages.0.conv.weight"].shape[-1],
                channels=sd["decode_head.stages.0.conv.weight"].shape[0], up_scale=2 if convs == 4 else 4)
    if aux:
        head.update(aux_num_convs=_count(sd, "aux_heads.0.stages."),
                    aux_kernel_size=sd["aux_heads.0.stages.0.conv.weight"].shape[-1], aux_up_scale=4)
    return setr_config("pup" if convs == 4 else "naive", num_classes=classifier.shape[0],
                       aux_indices=tuple(range(aux)), **head, **enc)


def plan(sd: dict[str, torch.Tensor], config: object, has_head: bool, source: str, overrides: dict) -> Plan:
    """Overrides: `model` (a SETR zoo name whose recipe wraps the checkpoint's encoder), `task` ("segmentation" /
    "encoder"), `num_classes`, and SETRConfig / ViTConfig fields. An encoder-only checkpoint gives a
    VisionTransformer unless a task or model asks for a SETR ("segmentation" = `model="setr-pup"`); new heads are
    initialised fresh (and reported)."""
    overrides = dict(overrides)
    name, task = overrides.pop("model", None), overrides.pop("task", None)
    _check_request(name, task, config, source, overrides.pop("token_merging", None))
    if name is None and task == "segmentation" and not has_head:
        name = "setr-pup"
    target = _target_config(name, config, has_head, overrides)
    if target.encoder.patch_size != config.encoder.patch_size:
        p = config.encoder.patch_size
        raise ValueError(f"{source}: the checkpoint's patch size is {p}x{p} (encoder.patch_embed.proj.weight "
                         f"{tuple(sd['encoder.patch_embed.proj.weight'].shape)}), the model asks for "
                         f"{target.encoder.patch_size}; patch embeddings cannot be resized: use patch_size={p}")
    sd, dropped = _fit_encoder(sd, config.encoder, target.encoder)
    if dropped:
        warnings.warn(f"{source}: not used by this encoder configuration (patch_bias / final_norm off, as in "
                      f"MMSegmentation's SETR): {dropped}", stacklevel=3)
    encoder = _unfilled_encoder(target.encoder)  # the checkpoint fills all of it (fit_state_dict checks)
    if task == "encoder" or (name is None and task is None and not has_head):
        return Plan(encoder, encoder_part(sd))
    model = SETR(target, encoder)
    fresh, why = _fresh_heads(config, target, has_head, len(model.aux_heads))
    if fresh:
        why = why or f"heads differ from {name or 'the checkpoint'}"
        count = sum(p.numel() for n, p in model.named_parameters() if n.startswith(fresh))
        warnings.warn(f"{source}: initialised fresh ({why}; {count} parameters): "
                      f"{', '.join(p.rstrip('.') for p in fresh)}", stacklevel=3)
    return Plan(model, sd, fresh)


def _check_request(name: str | None, task: str | None, config: object, source: str, token_merging: object) -> None:
    if name is not None and (name not in ZOO or ZOO[name].arch != "setr"):
        setr_names = ", ".join(n for n in sorted(ZOO) if ZOO[n].arch == "setr")
        raise ValueError(f"load_model: model={name!r} is not a SETR model; accepted: {setr_names}")
    if not isinstance(config, SETRConfig):
        raise ValueError(f"{source}: holds a SegFormer (MiT) checkpoint, which cannot fill "
                         f"{name or 'a SETR model'}: SETR needs ViT weights (our SETR layout, MMSegmentation SETR "
                         f"or a timm ViT); load it without model= to get a SegFormer")
    if token_merging is not None:
        raise ValueError("load_model: token_merging is SegFormer++ (MiT attention); SETR has none")
    if task not in (None, "segmentation", "encoder"):
        raise ValueError(f"load_model: task {task!r} does not apply to SETR; accepted: 'segmentation', 'encoder'")


def _target_config(name: str | None, config: SETRConfig, has_head: bool, overrides: dict) -> SETRConfig:
    """The config to build: the zoo recipe `name` around the checkpoint's encoder, else the checkpoint's own,
    with the overrides."""
    num_classes = overrides.pop("num_classes", None)
    enc, head = split_overrides(overrides, SETRConfig, ViTConfig, "load_model: unknown override(s)",
                                extra=("model", "num_classes", "task"))
    if name is None:
        encoder = dataclasses.replace(config.encoder, **enc)
        return dataclasses.replace(config, encoder=encoder, num_classes=num_classes or config.num_classes, **head)
    shape = {k: getattr(config.encoder, k) for k in SHAPE_FIELDS}
    classes = num_classes or (config.num_classes if has_head else None)  # else the preset's
    target = model_config(name, **{**shape, **overrides, **({"num_classes": classes} if classes else {})})
    if target.num_classes == config.num_classes:
        target = dataclasses.replace(target, class_names=config.class_names)
    return target


def _fresh_heads(config: SETRConfig, target: SETRConfig, has_head: bool, aux_heads: int
                 ) -> tuple[tuple[str, ...], str | None]:
    """(prefixes that start fresh, why): all heads unless the checkpoint's fit the target, else only the
    classifiers when the classes change."""
    fields = HEAD_FIELDS["mla" if target.decoder == "mla" else "up"]
    keep_head = has_head and target.decoder == config.decoder and all(
        getattr(target, f) == getattr(config, f) for f in fields)
    if not keep_head:
        return HEAD_PREFIXES, None if has_head else "encoder-only checkpoint"
    if target.num_classes != config.num_classes:
        return ("decode_head.classifier.",) + tuple(f"aux_heads.{i}.classifier." for i in range(aux_heads)), \
            "new classes"
    return (), None


def _unfilled_encoder(config: ViTConfig) -> VisionTransformer:
    """A ViT with allocated but uninitialised weights: initialising ViT-L only to overwrite it costs seconds."""
    with torch.device("meta"):
        encoder = VisionTransformer(config)
    return encoder.to_empty(device="cpu")


def _fit_encoder(sd: dict[str, torch.Tensor], source: ViTConfig, target: ViTConfig
                 ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Resize pos_embed to the target grid and drop what the target encoder lacks (patch bias, final norm),
    as mmseg does when SETR starts from a timm ViT. Returns (state dict, dropped keys)."""
    sd = dict(sd)
    pos = sd.get("encoder.pos_embed")
    if pos is not None and source.grid != target.grid:
        sd["encoder.pos_embed"] = resize_pos_embed(pos, target.grid, source.grid, target.interpolate_mode)
    drop = []
    if not target.patch_bias:
        drop.append("encoder.patch_embed.proj.bias")
    if not target.final_norm:
        drop += ["encoder.norm.weight", "encoder.norm.bias"]
    dropped = [k for k in drop if k in sd]
    return {k: v for k, v in sd.items() if k not in dropped}, dropped


def _infer(sd: dict[str, torch.Tensor], fmt: Format) -> SETRConfig:
    return infer_config(sd, dict(fmt.eps))


ARCHITECTURE = Architecture("setr", "SETR", "ViT/SETR", "ViT", HEAD_PREFIXES, VisionTransformer, _infer,
                            plan)
