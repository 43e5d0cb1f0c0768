"""SETR / ViT checkpoints for `load_model` and `convert`: our SETR layout, MMSegmentation SETR (and mmseg ViT
backbone files), and timm / JAX ImageNet ViTs. `loader.py` hands over to this module as soon as it sees a
ViT layout (or a `model="setr-..."` override), so the SegFormer path stays unaware of SETR."""

from __future__ import annotations

import dataclasses
import json
import warnings

import torch
from torch import nn

from ..models.setr import SETR, SETRConfig, setr_config
from ..models.vit import VisionTransformer, ViTConfig, resize_pos_embed, square_grid
from ..models.zoo import ZOO, model_config
from . import setr_mmseg, timm_vit
from .io import class_names

OURS_MARK = "encoder.blocks.0.attn.qkv.weight"
HEAD_PREFIXES = ("neck.", "decode_head.", "aux_heads.")
# ViT fields a SETR preset takes from the checkpoint (its architecture), the others (img_size, out_indices,
# with_cls_token, patch_bias, final_norm, ...) from the preset (the SETR recipe).
SHAPE_FIELDS = ("in_channels", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias")
# SETRConfig fields that shape the neck and heads, per decoder: a checkpoint's heads load only into the same.
HEAD_FIELDS = {"mla": ("channels", "mla_channels", "up_scale", "aux_indices"),
               "up": ("channels", "num_convs", "kernel_size", "up_scale", "aux_indices", "aux_num_convs",
                      "aux_kernel_size", "aux_up_scale")}


def detect(keys: list[str]) -> str | None:
    """'ours', 'mmseg' or 'timm' for a ViT / SETR layout, else None."""
    if OURS_MARK in keys:
        return "ours"
    if setr_mmseg.matches(keys):
        return "mmseg"
    if timm_vit.matches(keys):
        return "timm"
    return None


def saved_config(cfg_json: dict | None, meta: dict) -> dict | None:
    """Our SETR config dict from a config.json or safetensors metadata, if that is what they hold."""
    data = (cfg_json or {}).get("segformer")
    if data is None and meta.get("segformer_config"):
        data = json.loads(meta["segformer_config"])
    return data if isinstance(data, dict) and data.get("architecture") == "setr" else None


def read(sd: dict[str, torch.Tensor], meta: dict, cfg_json: dict | None, source: str
         ) -> tuple[dict[str, torch.Tensor], SETRConfig, bool]:
    """(our-layout state dict, config, has_head) of a ViT / SETR checkpoint."""
    fmt = detect(list(sd))
    saved = saved_config(cfg_json, meta)
    if fmt is None:
        raise ValueError(f"{source}: the config describes a SETR, but the weights are not a ViT / SETR checkpoint "
                         f"(accepted: ours, mmseg SETR, timm ViT); first keys: {list(sd)[:5]}")
    if fmt == "ours":
        native, unknown = sd, [k for k in sd if not k.startswith(("encoder.",) + HEAD_PREFIXES)]
    elif fmt == "mmseg":
        native, unknown = setr_mmseg.to_native(sd)
    else:
        native, unknown, classifier = timm_vit.to_native(sd)
        if classifier:
            warnings.warn(f"{source}: ImageNet classifier tensors ignored (segmentation does not use them): "
                          f"{classifier}", stacklevel=4)
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} key(s) are not part of the {fmt} ViT/SETR layout: "
                         f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    if saved is not None:
        config = SETRConfig.from_dict(saved)
    elif fmt == "ours":
        raise ValueError(f"{source}: our SETR layout without its config.json (or safetensors metadata); keep the "
                         f"file next to the config.json that save_pretrained wrote")
    else:
        config = infer_config(native)
        names = class_names(meta)
        if names and len(names) == config.num_classes:
            config.class_names = names
    return native, config, any(k.startswith(HEAD_PREFIXES) for k in native)


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def infer_config(sd: dict[str, torch.Tensor]) -> SETRConfig:
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
               final_norm="encoder.norm.weight" in sd, img_size=(grid[0] * patch, grid[1] * patch))
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


def wants_setr(config: object, overrides: dict) -> bool:
    """True when `load_model` should hand over here: a ViT checkpoint, or a `model=` override (SETR only)."""
    return isinstance(config, SETRConfig) or "model" in overrides


def prepare(sd: dict[str, torch.Tensor], config: object, has_head: bool, source: str, overrides: dict
            ) -> tuple[nn.Module, dict[str, torch.Tensor], tuple[str, ...]]:
    """(model, state dict fitted to it, prefixes initialised fresh) for `load_model`. Overrides: `model` (a SETR
    zoo name whose recipe wraps the checkpoint's encoder), `task` ("segmentation" / "encoder"), `num_classes`,
    and SETRConfig / ViTConfig fields. An encoder-only checkpoint gives a VisionTransformer unless a task or
    model asks for a SETR ("segmentation" = `model="setr-pup"`); new heads are initialised fresh (and reported)."""
    overrides = dict(overrides)
    name, task = overrides.pop("model", None), overrides.pop("task", None)
    num_classes = overrides.pop("num_classes", None)
    if name is not None and (name not in ZOO or ZOO[name].arch != "setr"):
        setr_names = ", ".join(n for n in sorted(ZOO) if ZOO[n].arch == "setr")
        raise ValueError(f"load_model: model={name!r} is not a SETR model; accepted: {setr_names}")
    if not isinstance(config, SETRConfig):
        raise ValueError(f"{source}: holds a SegFormer (MiT) checkpoint, which cannot fill "
                         f"{name or 'a SETR model'}: SETR needs ViT weights (our SETR layout, MMSegmentation SETR "
                         f"or a timm ViT); load it without model= to get a SegFormer")
    if overrides.pop("token_merging", None) is not None:
        raise ValueError("load_model: token_merging is SegFormer++ (MiT attention); SETR has none")
    if task not in (None, "segmentation", "encoder"):
        raise ValueError(f"load_model: task {task!r} does not apply to SETR; accepted: 'segmentation', 'encoder'")
    enc_fields = {f.name for f in dataclasses.fields(ViTConfig)}
    head_fields = {f.name for f in dataclasses.fields(SETRConfig)} - {"encoder", "num_classes"}
    unknown = set(overrides) - enc_fields - head_fields
    if unknown:
        raise ValueError(f"load_model: unknown override(s) {sorted(unknown)}; accepted: model, num_classes, task, "
                         f"{', '.join(sorted(enc_fields | head_fields))}")
    if name is None and task == "segmentation" and not has_head:
        name = "setr-pup"
    if name is not None:  # the zoo recipe around the checkpoint's encoder architecture
        shape = {k: getattr(config.encoder, k) for k in SHAPE_FIELDS}
        classes = num_classes or (config.num_classes if has_head else None)  # else the preset's
        target = model_config(name, **{**shape, **overrides, **({"num_classes": classes} if classes else {})})
        if target.num_classes == config.num_classes:
            target = dataclasses.replace(target, class_names=config.class_names)
    else:
        encoder = dataclasses.replace(config.encoder, **{k: v for k, v in overrides.items() if k in enc_fields})
        head = {k: v for k, v in overrides.items() if k in head_fields}
        target = dataclasses.replace(config, encoder=encoder, num_classes=num_classes or config.num_classes, **head)
    fields = HEAD_FIELDS["mla" if target.decoder == "mla" else "up"]
    keep_head = has_head and target.decoder == config.decoder and all(
        getattr(target, f) == getattr(config, f) for f in fields)
    if target.encoder.patch_size != config.encoder.patch_size:
        p = config.encoder.patch_size
        raise ValueError(f"{source}: the checkpoint's patch size is {p}x{p} (encoder.patch_embed.proj.weight "
                         f"{tuple(sd['encoder.patch_embed.proj.weight'].shape)}), the model asks for "
                         f"{target.encoder.patch_size}; patch embeddings cannot be resized: use patch_size={p}")
    sd, dropped = _fit_encoder(sd, config.encoder, target.encoder)
    encoder = _unfilled_encoder(target.encoder)  # the checkpoint fills all of it (load_model checks)
    if task == "encoder" or (name is None and task is None and not has_head):
        _report(source, dropped, None)
        return encoder, {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}, ()
    model = SETR(target, encoder)
    fresh: tuple[str, ...] = ()
    if not keep_head:
        fresh = HEAD_PREFIXES
    elif target.num_classes != config.num_classes:  # same heads, new classes: only the classifiers are new
        fresh = ("decode_head.classifier.",) + tuple(f"aux_heads.{i}.classifier." for i in range(len(model.aux_heads)))
    sd = {k: v for k, v in sd.items() if not k.startswith(fresh)}
    if fresh:
        why = ("encoder-only checkpoint" if not has_head else "new classes" if keep_head
               else f"heads differ from {name or 'the checkpoint'}")
        count = sum(p.numel() for n, p in model.named_parameters() if n.startswith(fresh))
        _report(source, dropped, f"initialised fresh ({why}; {count} parameters): "
                                 f"{', '.join(p.rstrip('.') for p in fresh)}")
    else:
        _report(source, dropped, None)
    return model, sd, fresh


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


def _report(source: str, dropped: list[str], fresh: str | None) -> None:
    if dropped:
        warnings.warn(f"{source}: not used by this encoder configuration (patch_bias / final_norm off, as in "
                      f"MMSegmentation's SETR): {dropped}", stacklevel=4)
    if fresh:
        warnings.warn(f"{source}: {fresh}", stacklevel=4)


def from_native(sd: dict[str, torch.Tensor], config: SETRConfig | None, to: str) -> dict[str, torch.Tensor]:
    """Our SETR (or bare ViT encoder, config None) state dict in the mmseg or timm layout."""
    if to == "mmseg":
        return setr_mmseg.from_native(sd, config)
    if to == "timm":
        if config is not None:
            warnings.warn("a timm ViT holds the encoder only: the SETR neck and heads are not written", stacklevel=3)
        return timm_vit.from_native(sd)
    raise ValueError(f"SETR / ViT models convert --to ours, mmseg or timm (transformers and NVlabs have no SETR "
                     f"layout), got --to {to}")
