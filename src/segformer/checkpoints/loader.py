"""`load_model`, `save_pretrained` and `convert`: any public SegFormer / SETR checkpoint in, ours or theirs out.

`read_source` turns a source into our-layout tensors and a config, the checkpoint's architecture plans the model
(overrides applied) and `fit_state_dict` fills it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..data.palettes import get_palette
from ..models.base import ModelConfig, register_saver
from ..utils.io import atomic_dir, write_json
from . import hf
from .fit import fit_state_dict
from .io import write_safetensors, write_torch
from .registry import ARCHITECTURES, FORMATS, architecture_of, format_names, get_format
from .source import non_finite, read_source

PREPROCESSOR = "preprocessor_config.json"  # transformers' image processor, written beside an HF-layout model
DIRECTORY_LAYOUTS = ("ours", "hf")  # written as a model folder (config.json + model.safetensors); others: one file
# `load_model(..., model=NAME)` wraps the checkpoint's encoder in the zoo recipe NAME, which only SETR has.
RECIPE_ARCHITECTURE = "setr"


def load_model(source: str | Path, **overrides) -> nn.Module:
    """A model with weights from `source`: a hub id or zoo preset, an HF-format directory, or one checkpoint
    file in HF, NVlabs, MMSegmentation, SegFormer++ MMPose or our layout. Overrides: `num_classes` (re-initialises
    the classifier), `task` ("segmentation" / "classification" / "pose" / "encoder"), `num_keypoints` (pose),
    `token_merging`, and config fields such as `decoder_style`, `num_heads` or `drop_path_rate`. An encoder-only
    checkpoint gives a `MixTransformer` unless a task asks for a head, which is then initialised fresh (and
    reported). SETR: our layout, mmseg SETR or a timm ViT; `model="setr-pup"` (etc.) wraps a ViT in that recipe,
    and an encoder-only ViT gives a `VisionTransformer`."""
    sd, config, has_head = read_source(source)
    arch = ARCHITECTURES[RECIPE_ARCHITECTURE if "model" in overrides else config.architecture]
    plan = arch.plan(sd, config, has_head, str(source), overrides)
    fit_state_dict(plan.model, plan.state_dict, fresh=plan.fresh, drop=plan.drop, source=str(source))
    return plan.model


def _target(model: nn.Module) -> tuple[dict[str, torch.Tensor], ModelConfig | None]:
    """(state dict in our model layout, config); an encoder alone has no config and its keys gain `encoder.`."""
    if isinstance(model, architecture_of(model).encoder):
        return {f"encoder.{k}": v for k, v in model.state_dict().items()}, None
    return model.state_dict(), model.config


def _check_free(paths: list[Path], overwrite: bool) -> None:
    taken = [str(p) for p in paths if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{', '.join(taken)} exist(s); pass overwrite=True (CLI: --overwrite) to replace")


def save_pretrained(model: nn.Module, directory: str | Path, *, overwrite: bool = False,
                    layout: str = "auto") -> Path:
    """`config.json` + `model.safetensors` (+ `preprocessor_config.json` in the HF layout, for transformers'
    `AutoImageProcessor` and `pipeline`). layout "auto": HF names when transformers can express the model
    (HF-style decoder or classifier), else ours; "ours" forces our names."""
    directory = Path(directory)
    cfg_path, weights_path = directory / "config.json", directory / "model.safetensors"
    sd, config = _target(model)
    if config is None:
        raise ValueError("save_pretrained needs a SegFormer (an encoder alone: use segformer.checkpoints.convert)")
    use_hf = layout == "auto" and ("hf", config.architecture) in FORMATS and config.encoder.pos_embed == "mixffn" and (
        config.task == "classification" or config.decoder_style == "hf")
    with_processor = use_hf and config.task == "segmentation"
    _check_free([cfg_path, weights_path] + ([directory / PREPROCESSOR] if with_processor else []),
                overwrite)
    if use_hf and config.token_merging:
        warnings.warn(f"{directory}: this model runs with token merging ({config.token_merging!r}); transformers "
                      f"knows no token merging and will compute the exact model (segformer.load_model keeps it)",
                      stacklevel=2)
    if use_hf and any(getattr(config.encoder, k) != v for k, v in hf.EPS.items()):
        warnings.warn(f"{directory}: this model's LayerNorm eps differ from HF's 1e-5; transformers will compute "
                      f"with 1e-5 (logits differ slightly), segformer.load_model keeps the original eps", stacklevel=2)
    cfg_json = hf.config_to_hf(config) if use_hf else {"segformer": config.to_dict()}
    weights = hf.from_native(sd, config) if use_hf else sd
    meta = {"format": "pt", "segformer_config": json.dumps(config.to_dict())}
    names = {cfg_path.name, weights_path.name} | ({PREPROCESSOR} if with_processor else set())

    def fill(folder: Path) -> None:
        write_safetensors(folder / weights_path.name, weights, meta, overwrite=True)
        write_json(folder / cfg_path.name, cfg_json, overwrite=True)
        if with_processor:
            write_json(folder / PREPROCESSOR, hf.preprocessor_to_hf(config), overwrite=True)

    if not directory.exists() or {p.name for p in directory.iterdir()} <= names:
        return atomic_dir(directory, fill, overwrite=True)  # the files are swapped in together
    fill(directory)  # other files live there too: file by file (loading refuses a mismatched pair)
    return directory


register_saver(save_pretrained)


def convert(source: str | Path, destination: str | Path, to: str = "hf", *, overwrite: bool = False) -> Path:
    """Rewrite `source` in another layout: "hf" / "ours" (directories) or a one-file layout of its architecture
    ("nvlabs", "mmseg", "mmpose"; SETR: "mmseg", "timm"): .pth with a `state_dict` + `meta`, or .safetensors."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*NaN or infinite")  # refused just below
        model = load_model(source)
    destination = Path(destination)
    sd, config = _target(model)
    if bad := non_finite(sd):
        raise ValueError(f"{source}: {bad} weight values are NaN or infinite; refusing to convert a broken "
                         f"checkpoint (a diverged run?)")
    arch = architecture_of(model).name
    if to in DIRECTORY_LAYOUTS and (to, arch) in FORMATS:
        if config is None:
            files = [n for n in format_names(arch) if n not in DIRECTORY_LAYOUTS]
            raise ValueError(f"{source}: an encoder-only checkpoint converts to a file layout "
                             f"(--to {' or --to '.join(files)}), not to a model directory")
        get_format(to, arch).from_native(sd, config)  # the clear error for a model the layout cannot express
        return save_pretrained(model, destination, overwrite=overwrite, layout="auto" if to == "hf" else "ours")
    out = get_format(to, arch).from_native(sd, config)
    # Our config rides along (foreign tools ignore it), so reading the file back rebuilds exactly this model
    # (e.g. HF's LayerNorm eps, not the target format's).
    ours = {"segformer_config": json.dumps(config.to_dict())} if config is not None else {}
    if destination.suffix == ".safetensors":
        return write_safetensors(destination, out, {"format": "pt", **ours}, overwrite)
    if destination.suffix not in (".pth", ".pt", ".bin"):
        raise ValueError(f"{destination}: --to {to} writes one file; name it .pth or .safetensors")
    return write_torch(destination, {"state_dict": out, "meta": {**_class_meta(to, config), **ours}}, overwrite)


def _class_meta(to: str, config: ModelConfig | None) -> dict:
    """Class names + palette where each reference's loader looks: mmseg 1.x `init_model` reads
    meta.dataset_meta, mmseg 0.x / NVlabs `init_segmentor` meta.CLASSES and meta.PALETTE (both need the palette)."""
    if config is None or not config.class_names:
        return {}
    names, palette = list(config.class_names), get_palette(len(config.class_names)).tolist()
    if to == "mmpose":  # MMPose's dataset_meta names keypoints by id
        return {"dataset_meta": {"keypoint_id2name": dict(enumerate(names))}}
    if to == "mmseg":
        return {"dataset_meta": {"classes": names, "palette": palette}}
    return {"CLASSES": names, "PALETTE": palette}
