"""Hugging Face transformers layout (`SegformerForSemanticSegmentation`, `...ForImageClassification`,
`SegformerModel`): the legacy on-disk names that the hub files use, and transformers 5's in-memory
names (what `torch.save(model.state_dict())` writes). HF uses LayerNorm eps 1e-5 everywhere."""

from __future__ import annotations

import torch

from ..models.mit import MiTConfig
from ..models.segmentor import SegFormerConfig
from ..models.zoo import MIT_EPS
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from .format import KeyFormat
from .keymap import KeyMap, merge_pairs, reverse_fuse_order, split_pairs

EPS = MIT_EPS["hf"]

_BLOCK = "encoder.stages.{s}.blocks.{b}."
LEGACY = KeyMap([
    ("encoder.patch_embeddings.{S}.proj", "encoder.stages.{s}.patch_embed.proj"),
    ("encoder.patch_embeddings.{S}.layer_norm", "encoder.stages.{s}.patch_embed.norm"),
    ("encoder.block.{S}.{b}.layer_norm_1", _BLOCK + "norm1"),
    ("encoder.block.{S}.{b}.attention.self.query", _BLOCK + "attn.q"),
    ("encoder.block.{S}.{b}.attention.self.key", _BLOCK + "attn.k"),
    ("encoder.block.{S}.{b}.attention.self.value", _BLOCK + "attn.v"),
    ("encoder.block.{S}.{b}.attention.self.sr", _BLOCK + "attn.sr"),
    ("encoder.block.{S}.{b}.attention.self.layer_norm", _BLOCK + "attn.norm"),
    ("encoder.block.{S}.{b}.attention.output.dense", _BLOCK + "attn.proj"),
    ("encoder.block.{S}.{b}.layer_norm_2", _BLOCK + "norm2"),
    ("encoder.block.{S}.{b}.mlp.dense1", _BLOCK + "mlp.fc1"),
    ("encoder.block.{S}.{b}.mlp.dwconv.dwconv", _BLOCK + "mlp.dwconv"),
    ("encoder.block.{S}.{b}.mlp.dense2", _BLOCK + "mlp.fc2"),
    ("encoder.layer_norm.{S}", "encoder.stages.{s}.norm"),
    ("decode_head.linear_c.{S}.proj", "decode_head.linear_c.{s}"),
    ("decode_head.linear_fuse", "decode_head.linear_fuse"),
    ("decode_head.batch_norm", "decode_head.bn"),
    ("decode_head.classifier", "decode_head.classifier"),
    ("classifier", "decode_head.fc"),
])

_V5_BLOCK = "stages.{S}.blocks.{b}."
V5 = KeyMap([
    ("stages.{S}.patch_embeddings.proj", "encoder.stages.{s}.patch_embed.proj"),
    ("stages.{S}.patch_embeddings.layer_norm", "encoder.stages.{s}.patch_embed.norm"),
    (_V5_BLOCK + "layernorm_before", _BLOCK + "norm1"),
    (_V5_BLOCK + "attention.q_proj", _BLOCK + "attn.q"),
    (_V5_BLOCK + "attention.k_proj", _BLOCK + "attn.k"),
    (_V5_BLOCK + "attention.v_proj", _BLOCK + "attn.v"),
    (_V5_BLOCK + "attention.o_proj", _BLOCK + "attn.proj"),
    (_V5_BLOCK + "attention.sequence_reduction.sequence_reduction", _BLOCK + "attn.sr"),
    (_V5_BLOCK + "attention.sequence_reduction.layer_norm", _BLOCK + "attn.norm"),
    (_V5_BLOCK + "layernorm_after", _BLOCK + "norm2"),
    (_V5_BLOCK + "mlp.fc1", _BLOCK + "mlp.fc1"),
    (_V5_BLOCK + "mlp.dwconv.dwconv", _BLOCK + "mlp.dwconv"),
    (_V5_BLOCK + "mlp.fc2", _BLOCK + "mlp.fc2"),
    ("stages.{S}.layer_norm", "encoder.stages.{s}.norm"),
    ("decode_head.linear_projections.{S}.proj", "decode_head.linear_c.{s}"),
    ("decode_head.linear_fuse", "decode_head.linear_fuse"),
    ("decode_head.batch_norm", "decode_head.bn"),
    ("decode_head.classifier", "decode_head.classifier"),
    ("classifier", "decode_head.fc"),
])


def matches(keys: list[str]) -> bool:
    return any(".patch_embeddings." in k for k in keys)


def _strip(key: str) -> str:
    return key[len("segformer."):] if key.startswith("segformer.") else key


def to_native(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    sd = {_strip(k): v for k, v in state_dict.items()}
    keymap = V5 if any(k.startswith("stages.") for k in sd) else LEGACY
    out, unknown = keymap.to_native(sd)
    out = merge_pairs(out, "k", "v", "kv")
    if "decode_head.linear_fuse.weight" in out:
        out["decode_head.linear_fuse.weight"] = reverse_fuse_order(out["decode_head.linear_fuse.weight"])
    return out, unknown


def from_native(state_dict: dict[str, torch.Tensor], config: SegFormerConfig | None) -> dict[str, torch.Tensor]:
    """Legacy on-disk HF names (what the hub files and `save_pretrained` use)."""
    if config is not None and config.task == "segmentation" and config.decoder_style != "hf":
        raise ValueError("an mmseg-style decoder has a per-stage ReLU that HF's SegformerDecodeHead cannot express; "
                         "convert it --to mmseg or --to ours instead. For a model transformers can load, train with "
                         "the HF-style head: `segformer train RECIPE --set model_args.decoder_style=hf ...` (the "
                         "default without a recipe)")
    sd = dict(state_dict)
    if "decode_head.linear_fuse.weight" in sd:
        sd["decode_head.linear_fuse.weight"] = reverse_fuse_order(sd["decode_head.linear_fuse.weight"])
    sd = LEGACY.from_native(split_pairs(sd, "kv", "k", "v"))
    with_head = config is not None
    return {(f"segformer.{k}" if with_head and k.startswith("encoder.") else k): v for k, v in sd.items()}


FORMAT = KeyFormat("hf", "segformer", matches, to_native, from_native, eps=EPS)


# transformers config.json key -> our config field ("encoder." = MiTConfig), as config_to_hf writes them.
FIELDS = {"hidden_sizes": "encoder.embed_dims", "depths": "encoder.depths", "num_attention_heads": "encoder.num_heads",
          "sr_ratios": "encoder.sr_ratios", "patch_sizes": "encoder.patch_sizes", "strides": "encoder.strides",
          "mlp_ratios": "encoder.mlp_ratios", "num_channels": "encoder.in_channels",
          "hidden_dropout_prob": "encoder.drop_rate", "attention_probs_dropout_prob": "encoder.attn_drop_rate",
          "drop_path_rate": "encoder.drop_path_rate", "decoder_hidden_size": "decoder_dim",
          "classifier_dropout_prob": "decoder_dropout", "id2label": "num_classes",
          "semantic_loss_ignore_index": "ignore_index"}
_STAGE_LISTS = ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios")


def check_config(cfg: dict) -> None:
    """Raise a ValueError naming the first key of a transformers SegFormer config.json that has the wrong type."""
    for key in _STAGE_LISTS:
        value = cfg.get(key)
        if not (isinstance(value, list) and len(value) == 4
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            raise ValueError(f"key {key!r} must be a list of 4 positive integers (one per stage), got {value!r}")
    for key in ("num_labels", "num_channels", "decoder_hidden_size", "semantic_loss_ignore_index"):
        if key in cfg and not (isinstance(cfg[key], int) and not isinstance(cfg[key], bool)):
            raise ValueError(f"key {key!r} must be an integer, got {cfg[key]!r}")
    if not isinstance(cfg.get("id2label") or {}, dict):
        raise ValueError(f"key 'id2label' must be a mapping of class id to name, got {cfg['id2label']!r}")


def conflicts(cfg: dict, config: SegFormerConfig) -> list[str]:
    """The transformers fields of a config.json that disagree with `config` (its "segformer" entry), as
    "key: value in the file (entry: value)"; class names are not compared."""
    check_config(cfg)
    theirs = config_from_hf(cfg, task=config.task)
    found = []
    for key, field in FIELDS.items():
        a, b = theirs, config
        for part in field.split("."):
            a, b = getattr(a, part), getattr(b, part)
        if (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            shown = f"{len(cfg[key])} labels" if key == "id2label" else repr(cfg.get(key))
            found.append(f"{key}: {shown} (entry: {field} = {b!r})")
    return found


def config_from_hf(cfg: dict, task: str | None = None) -> SegFormerConfig:
    """Our config from a transformers `config.json` dict."""
    archs = cfg.get("architectures") or []
    if task is None:
        task = "classification" if "SegformerForImageClassification" in archs else "segmentation"
    id2label = {int(k): v for k, v in (cfg.get("id2label") or {}).items()}
    num_classes = int(cfg.get("num_labels") or len(id2label) or 2)
    names = [id2label[i] for i in range(num_classes)] if len(id2label) == num_classes else None
    if names and all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        names = None
    encoder = MiTConfig(
        in_channels=cfg.get("num_channels", 3), embed_dims=cfg["hidden_sizes"], depths=cfg["depths"],
        num_heads=cfg["num_attention_heads"], sr_ratios=cfg["sr_ratios"], patch_sizes=cfg["patch_sizes"],
        strides=cfg["strides"], mlp_ratios=cfg["mlp_ratios"], drop_rate=cfg.get("hidden_dropout_prob", 0.0),
        attn_drop_rate=cfg.get("attention_probs_dropout_prob", 0.0), drop_path_rate=cfg.get("drop_path_rate", 0.1),
        **EPS)
    return SegFormerConfig(
        encoder=encoder, num_classes=num_classes, task=task, decoder_style="hf",
        decoder_dim=cfg.get("decoder_hidden_size", 256), decoder_dropout=cfg.get("classifier_dropout_prob", 0.1),
        ignore_index=cfg.get("semantic_loss_ignore_index", 255), class_names=names)


def config_to_hf(config: SegFormerConfig) -> dict:
    """A transformers `config.json` dict (HF itself ignores our extra `segformer` entry)."""
    enc = config.encoder
    names = config.class_names or [f"LABEL_{i}" for i in range(config.num_classes)]
    arch = "SegformerForImageClassification" if config.task == "classification" else "SegformerForSemanticSegmentation"
    return {
        "architectures": [arch], "model_type": "segformer", "num_channels": enc.in_channels,
        "num_encoder_blocks": 4, "depths": list(enc.depths), "sr_ratios": list(enc.sr_ratios),
        "hidden_sizes": list(enc.embed_dims), "patch_sizes": list(enc.patch_sizes), "strides": list(enc.strides),
        "num_attention_heads": list(enc.num_heads), "mlp_ratios": list(enc.mlp_ratios), "hidden_act": "gelu",
        "hidden_dropout_prob": enc.drop_rate, "attention_probs_dropout_prob": enc.attn_drop_rate,
        "classifier_dropout_prob": config.decoder_dropout, "drop_path_rate": enc.drop_path_rate,
        "layer_norm_eps": 1e-6, "decoder_hidden_size": config.decoder_dim,
        "semantic_loss_ignore_index": config.ignore_index, "reshape_last_stage": True,
        "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
        "segformer": config.to_dict(),
    }


def preprocessor_to_hf(config: SegFormerConfig) -> dict:
    """transformers' `preprocessor_config.json` (a `SegformerImageProcessor`), so that `AutoImageProcessor` and
    `pipeline("image-segmentation")` take the saved directory. HF resizes to a fixed size: 512 x 512 without a
    recorded test pipeline; with one, no resize when it records none, else short x short for mmseg's keep-ratio
    (long, short) bound (the HF default for the ADE20K recipes' (2048, 512))."""
    record = config.test_pipeline or {"scale": [512, 512]}
    scale = record.get("scale")
    side = min(scale) if scale else 512
    return {"image_processor_type": "SegformerImageProcessor", "do_resize": scale is not None,
            "size": {"height": side, "width": side}, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
            "do_reduce_labels": False}
