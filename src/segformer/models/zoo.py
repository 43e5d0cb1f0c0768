"""Named variants: one table from a name to a config and, beside each, where its published weights are (a hub id
or a download URL), as timm's `default_cfgs`; also the facts about the reference implementations' checkpoints
that a config needs (LayerNorm eps per reference, the default decoder width)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import split_overrides
from .mit import MIT_VARIANTS, MiTConfig, mit_config
from .pose import POSE_DECODER_DIM
from .segmentor import SegFormer, SegFormerConfig
from .setr import DATASETS, DECODERS, SETR, SETRConfig, setr_config
from .token_merging import TokenMergingSpec

# MiT LayerNorm eps of each reference's checkpoints: transformers uses 1e-5 everywhere (PyTorch's default); the
# NVlabs code 1e-6 in blocks and stage norms but PyTorch's 1e-5 in patch-embedding and sequence-reduction norms;
# MMSegmentation 1e-6 everywhere. A checkpoint is run with its reference's eps.
MIT_EPS = {
    "hf": dict(block_eps=1e-5, stage_eps=1e-5, patch_embed_eps=1e-5, sr_eps=1e-5),
    "nvlabs": dict(block_eps=1e-6, stage_eps=1e-6, patch_embed_eps=1e-5, sr_eps=1e-5),
    "mmseg": dict(block_eps=1e-6, stage_eps=1e-6, patch_embed_eps=1e-6, sr_eps=1e-6),
}
MIT_EPS["mmpose"] = MIT_EPS["mmseg"]  # the SegFormer++ MMPose backbone is mmseg's MiT
# ViT LayerNorm eps (ViTConfig.eps) of each reference's checkpoints: 1e-6 in timm's and in MMSegmentation's.
VIT_EPS = {"timm": dict(eps=1e-6), "mmseg": dict(eps=1e-6)}
_SETR_URL = "https://download.openmmlab.com/mmsegmentation/v0.5/setr/"
# MMSegmentation's trained SETR checkpoints (not on the HF hub): download one, then `segformer.load_model(file)`.
_SETR_WEIGHTS = {
    ("naive", "ade20k"): "setr_naive_512x512_160k_b16_ade20k/setr_naive_512x512_160k_b16_ade20k_20210619_191258-"
                         "061f24f5.pth",
    ("pup", "ade20k"): "setr_pup_512x512_160k_b16_ade20k/setr_pup_512x512_160k_b16_ade20k_20210619_191343-7e0ce826.pth",
    ("mla", "ade20k"): "setr_mla_512x512_160k_b16_ade20k/setr_mla_512x512_160k_b16_ade20k_20210619_191057-f9741de7.pth",
    ("naive", "cityscapes"): "setr_naive_vit-large_8x1_768x768_80k_cityscapes/"
                             "setr_naive_vit-large_8x1_768x768_80k_cityscapes_20211123_000505-20728e80.pth",
    ("pup", "cityscapes"): "setr_pup_vit-large_8x1_768x768_80k_cityscapes/"
                           "setr_pup_vit-large_8x1_768x768_80k_cityscapes_20211122_155115-f6f37b8f.pth",
    ("mla", "cityscapes"): "setr_mla_vit-large_8x1_768x768_80k_cityscapes/"
                           "setr_mla_vit-large_8x1_768x768_80k_cityscapes_20211119_101003-7f8dccbe.pth",
}


@dataclass(frozen=True)
class ZooEntry:
    name: str
    variant: str  # "b0" ... "b5"
    num_classes: int
    task: str = "segmentation"
    hub_id: str | None = None
    description: str = ""
    arch: str = "segformer"  # "segformer" | "setr" (then variant is the decoder: "naive", "pup", "mla")
    dataset: str = ""  # SETR: the mmseg recipe ("ade20k", "cityscapes") that fixes crop size and aux heads
    url: str | None = None  # published weights that are not on the hub (SETR: MMSegmentation's download)


def default_decoder_dim(depths: tuple[int, ...], style: str) -> int:
    """HF/NVlabs: 256 for B0/B1 (the two MiTs of depths (2, 2, 2, 2)), 768 for B2-B5; mmseg's SegformerHead uses
    256 everywhere."""
    return 256 if style == "mmseg" or tuple(depths) == (2, 2, 2, 2) else 768


def _entries() -> dict[str, ZooEntry]:
    out = {}
    for v in MIT_VARIANTS:
        out[f"segformer-{v}"] = ZooEntry(f"segformer-{v}", v, 150, description=f"SegFormer-{v.upper()}, random init")
        ade_size = 640 if v == "b5" else 512
        out[f"segformer-{v}-ade-{ade_size}"] = ZooEntry(
            f"segformer-{v}-ade-{ade_size}", v, 150, hub_id=f"nvidia/segformer-{v}-finetuned-ade-{ade_size}-{ade_size}",
            description=f"SegFormer-{v.upper()} fine-tuned on ADE20K at {ade_size}x{ade_size}")
        out[f"segformer-{v}-cityscapes-1024"] = ZooEntry(
            f"segformer-{v}-cityscapes-1024", v, 19, hub_id=f"nvidia/segformer-{v}-finetuned-cityscapes-1024-1024",
            description=f"SegFormer-{v.upper()} fine-tuned on Cityscapes at 1024x1024")
        out[f"segformer-{v}-pose"] = ZooEntry(
            f"segformer-{v}-pose", v, 17, task="pose",
            description=f"SegFormer-{v.upper()} top-down pose (keypoint heatmaps, COCO's 17 by default), random init")
        out[f"mit-{v}"] = ZooEntry(f"mit-{v}", v, 1000, task="classification", hub_id=f"nvidia/mit-{v}",
                                   description=f"MiT-{v.upper()} ImageNet-1k classifier (encoder for fine-tuning)")
    out.update(_setr_entries())
    return out


def _setr_entries() -> dict[str, ZooEntry]:
    out = {}
    for d in DECODERS:
        label = f"SETR-{'MLA' if d == 'mla' else d.capitalize()} (ViT-L/16)"
        out[f"setr-{d}"] = ZooEntry(f"setr-{d}", d, 150, arch="setr", dataset="ade20k",
                                    description=f"{label}, ADE20K 512x512 config, random init")
        for dataset, tag in (("ade20k", "ade-512"), ("cityscapes", "cityscapes-768")):
            size, classes = DATASETS[dataset]
            url = _SETR_URL + _SETR_WEIGHTS[d, dataset]
            out[f"setr-{d}-{tag}"] = ZooEntry(
                f"setr-{d}-{tag}", d, classes, arch="setr", dataset=dataset,
                description=f"{label}, {dataset} {size}x{size} config; mmseg weights: {url}", url=url)
    return out


ZOO: dict[str, ZooEntry] = _entries()


def list_models() -> list[str]:
    """All model names accepted by `create_model` (and, for presets with a hub id, `load_model`)."""
    return sorted(ZOO)


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown model name {name!r}; accepted: {', '.join(list_models())}")
    return ZOO[name]


def model_config(name: str, **overrides) -> SegFormerConfig | SETRConfig:
    """The config of a zoo name; `overrides` may name SegFormerConfig or MiTConfig fields
    (SETR: SETRConfig or ViTConfig fields)."""
    entry = get_entry(name)
    if entry.arch == "setr":
        return setr_config(entry.variant, entry.dataset, **{"name": name, **overrides})
    overrides = pose_overrides(entry.task, overrides)
    enc, head = split_overrides(overrides, SegFormerConfig, MiTConfig, f"create_model({name!r}): unknown argument(s)")
    style = head.get("decoder_style", "hf")
    if style == "mmseg":  # an mmseg-style model runs with mmseg's eps
        enc = {**MIT_EPS["mmseg"], **enc}
    head.setdefault("decoder_dim", default_decoder_dim(mit_config(entry.variant).depths, style))
    head.setdefault("num_classes", entry.num_classes)
    head.setdefault("task", entry.task)
    head.setdefault("name", name)
    return SegFormerConfig(encoder=mit_config(entry.variant, **enc), **head)


def pose_overrides(task: str | None, overrides: dict, defaults: bool = True) -> dict:
    """A pose model's defaults (the reference's mmseg-style head, 256 channels, no dropout, mmseg's LayerNorm eps)
    under `overrides` (unless `defaults` is False); `num_keypoints` is the pose name of `num_classes`."""
    if "num_keypoints" in overrides:
        if task != "pose":
            raise ValueError("num_keypoints is for pose models (segformer-bX-pose or task='pose'); use num_classes")
        overrides = {**overrides, "num_classes": overrides["num_keypoints"]}
        del overrides["num_keypoints"]
    if task != "pose" or not defaults:
        return overrides
    return {"decoder_style": "mmseg", "decoder_dim": POSE_DECODER_DIM, "decoder_dropout": 0.0, "task": "pose",
            **overrides}


def create_model(name: str, *, token_merging: TokenMergingSpec = None, **overrides) -> SegFormer | SETR:
    """A randomly initialised model of a zoo name, e.g. `create_model("segformer-b2", num_classes=19)` or
    `create_model("segformer-b0-pose", num_keypoints=17)`.

    token_merging: a SegFormer++ strategy ("hq", "fast", "2x2", "downsample", a YAML file, a list of
    4 per-stage settings), see `SegFormer.set_token_merging`.
    """
    config = model_config(name, **overrides)
    if isinstance(config, SETRConfig):
        if token_merging is not None:
            raise ValueError(f"create_model({name!r}): token_merging is SegFormer++ (MiT attention); SETR has none")
        return SETR(config)
    model = SegFormer(config)
    if token_merging is not None:
        model.set_token_merging(token_merging)
    return model
