"""`read_source`: any checkpoint source (file, model directory, zoo preset, hub id) as our-layout tensors and the
model config they belong to. Layouts are detected from key names (never file names); without a saved config,
the architecture is read off the tensor shapes."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import torch

from ..models.base import ModelConfig, config_from_dict
from ..models.zoo import ZOO
from . import hf
from .format import Format
from .io import CHECKPOINT_SUFFIXES, read_checkpoint
from .registry import ARCHITECTURES, detect, format_names

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def detect_format(keys: list[str]) -> str | None:
    """'ours', 'hf', 'nvlabs', 'mmpose', 'mmseg' ('timm' for ViTs), or None when no SegFormer / SETR layout matches."""
    fmt = detect(keys)
    return fmt.name if fmt is not None else None


def _resolve(source: str | Path) -> tuple[Path, dict | None]:
    """(weights file, config.json dict or None) for a file, a directory, a zoo preset or a hub id."""
    path = Path(source)
    if path.is_file():
        return path, None
    if path.is_dir():
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path}: directory has none of {', '.join(WEIGHT_FILES)}")
        cfg = path / "config.json"
        return weights, read_config_json(cfg) if cfg.is_file() else None
    name = str(source)
    if name in ZOO:
        if ZOO[name].hub_id is None:
            raise ValueError(f"{name!r} has no published weights; use segformer.create_model({name!r}) for a random "
                             f"init, or a preset with a hub id (see `segformer models`)")
        name = ZOO[name].hub_id
    if name.count("/") == 1 and not name.startswith((".", "/")) and not name.endswith(CHECKPOINT_SUFFIXES):
        return _from_hub(name)
    raise FileNotFoundError(f"{source}: no such file or directory, and not a model name (see `segformer models`) "
                            f"or a hub id like 'nvidia/segformer-b0-finetuned-ade-512-512'")


def _from_hub(repo_id: str) -> tuple[Path, dict | None]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        cfg = Path(hf_hub_download(repo_id, "config.json"))
        for name in WEIGHT_FILES:
            try:
                return Path(hf_hub_download(repo_id, name)), read_config_json(cfg)
            except EntryNotFoundError:
                continue
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id}: not in the local Hugging Face cache and the hub cannot be reached (offline?). On a machine "
            f"with internet run `hf download {repo_id}` (or set HF_HOME to a cache that has it), "
            f"or pass a local directory / checkpoint file") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{repo_id}: no such repository on the Hugging Face hub") from None
    raise FileNotFoundError(f"{repo_id}: the repository has none of {', '.join(WEIGHT_FILES)}")


def read_config_json(path: Path) -> dict:
    """A model folder's config.json as a dict; a ValueError naming the file if it is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model config.json is a JSON object of settings, got a {type(data).__name__}")
    return data


def non_finite(state_dict: dict[str, torch.Tensor]) -> int:
    """How many values of the floating-point tensors are NaN or infinite."""
    return sum(int((~torch.isfinite(t)).sum()) for t in state_dict.values() if t.is_floating_point())


def read_source(source: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, bool]:
    """(our-layout state dict, config, has_head) of any source; without a saved config, the config is read off the
    tensor shapes."""
    weights, cfg_json = _resolve(source)
    sd, meta = read_checkpoint(weights)
    if bad := non_finite(sd):
        warnings.warn(f"{weights}: {bad} weight values are NaN or infinite; the model's outputs will be too "
                      f"(a checkpoint of a diverged run?)", stacklevel=3)
    where = weights.with_name("config.json") if cfg_json is not None else weights
    try:
        saved = _saved_configs(cfg_json, meta)
        fmt = _layout(sd, saved[0] if saved else None, str(weights))
        _check_same(saved, weights)
        native = to_native(sd, fmt, str(weights))
        config = _config_of(native, fmt, saved[0] if saved else None, meta, cfg_json, weights)
    except (TypeError, KeyError, AttributeError) as exc:  # a hand-edited config of the wrong shape
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{where}: not a valid model config ({detail})") from None
    except ValueError as exc:  # name the file where the message does not
        if str(where) in str(exc) or str(weights) in str(exc):
            raise
        raise ValueError(f"{where}: {exc}") from None
    return native, config, any(k.startswith(ARCHITECTURES[config.architecture].head_prefixes) for k in native)


def _layout(sd: dict[str, torch.Tensor], saved: ModelConfig | None, source: str) -> Format:
    """The layout of the tensors, which must hold the architecture of the saved config (when there is one)."""
    keys = list(sd)
    fmt = detect(keys)
    if saved is not None and (fmt is None or fmt.architecture != saved.architecture):
        arch = ARCHITECTURES[saved.architecture]
        raise ValueError(f"{source}: the config describes a {arch.label}, but the weights are not a "
                         f"{arch.encoder_label} / {arch.label} checkpoint (accepted: "
                         f"{', '.join(format_names(arch.name))}); first keys: {keys[:5]}")
    if fmt is None:
        raise ValueError(f"{source}: not a SegFormer checkpoint in any known layout (ours, hf, nvlabs, mmseg), nor a "
                         f"ViT / SETR one ({', '.join(format_names('setr'))}); first keys: {keys[:5]}")
    return fmt


def to_native(state_dict: dict[str, torch.Tensor], fmt: Format, source: str) -> dict[str, torch.Tensor]:
    """Our names for a state dict in layout `fmt`; tensors no model here uses are set aside (with the layout's
    note), keys the layout does not know raise a ValueError naming them."""
    unused = [k for k in state_dict if k.startswith(fmt.unused)] if fmt.unused else []
    if unused and fmt.unused_note:
        warnings.warn(f"{source}: {fmt.unused_note}: {unused}", stacklevel=4)
    native, unknown = fmt.to_native({k: v for k, v in state_dict.items() if k not in unused})
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} key(s) are not part of the {fmt.name} "
                         f"{ARCHITECTURES[fmt.architecture].layout} layout: "
                         f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return native


def _saved_configs(cfg_json: dict | None, meta: dict) -> list[ModelConfig]:
    """Our config as save_pretrained / convert record it: config.json's "segformer" entry, then the weights'
    metadata (those present)."""
    found = [cfg_json["segformer"]] if cfg_json is not None and "segformer" in cfg_json else []
    found += [json.loads(meta["segformer_config"])] if meta.get("segformer_config") else []
    return [config_from_dict(data) for data in found]


def _check_same(saved: list[ModelConfig], weights: Path) -> None:
    """config.json must describe the model that the weights file itself records (class names aside)."""
    if len(saved) == 2:
        mine, theirs = saved[0].to_dict(), saved[1].to_dict()
        differ = sorted(k for k in mine if k != "class_names" and mine[k] != theirs.get(k))
        if differ:
            raise ValueError(f"config.json does not match the config recorded in {weights.name} ({', '.join(differ)} "
                             f"differ): the folder mixes two saves, e.g. an interrupted save; save the model again")


def _config_of(native: dict, fmt: Format, saved: ModelConfig | None, meta: dict, cfg_json: dict | None,
               weights: Path) -> ModelConfig:
    """The saved config (with a transformers config.json's edits), else the transformers fields of config.json,
    else the shapes with the class names the metadata records."""
    hf_fields = cfg_json is not None and cfg_json.get("model_type") == "segformer"
    if saved is not None:
        return _with_hf_edits(cfg_json, saved) if hf_fields else saved
    if hf_fields:
        hf.check_config(cfg_json)
        return hf.config_from_hf(cfg_json)
    arch = ARCHITECTURES[fmt.architecture]
    if fmt.name == "ours":
        raise ValueError(f"{weights}: our {'' if arch.name == 'segformer' else arch.label + ' '}layout without its "
                         f"config.json (or safetensors metadata); keep the file next to the config.json that "
                         f"save_pretrained wrote")
    config = arch.infer_config(native, fmt)
    names = fmt.names(meta)
    if names and len(names) == config.num_classes:
        config.class_names = names
    return config


def _with_hf_edits(cfg_json: dict, config: ModelConfig) -> ModelConfig:
    """A config.json we wrote holds the transformers fields beside our own config (its "segformer" entry and the
    weights' metadata): refuse edits that make them disagree (the model would silently differ from what the file
    says); renamed classes (id2label) are taken."""
    found = hf.conflicts(cfg_json, config)
    if found:
        raise ValueError(f"its transformers fields disagree with its \"segformer\" entry (or the config recorded "
                         f"in the weights file), which this package reads: "
                         f"{'; '.join(found)}. Make them agree, or delete the \"segformer\" entry to use the "
                         f"transformers fields")
    names = hf.config_from_hf(cfg_json, task=config.task).class_names
    if names and names != config.class_names:
        warnings.warn("config.json: id2label differs from the class names of its \"segformer\" entry; using "
                      "id2label", stacklevel=4)
        config = dataclasses.replace(config, class_names=names)
    return config
