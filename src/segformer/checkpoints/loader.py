"""`load_model`, `save_pretrained` and `convert`: any public SegFormer checkpoint in, ours or theirs out.

Formats are detected from key names (never file names); each format module turns its keys into ours.
Without a config file, the architecture is read off the tensor shapes (see `infer_config`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..data.palettes import get_palette
from ..models.base import register_saver
from ..models.mit import MiTConfig, MixTransformer
from ..models.pose import COCO_NUM_KEYPOINTS
from ..models.segmentor import SegFormer, SegFormerConfig
from ..models.setr import SETR
from ..models.vit import VisionTransformer
from ..models.zoo import ZOO, default_decoder_dim, pose_overrides
from ..utils.io import atomic_dir, write_json
from . import hf, mmpose, mmseg, nvlabs, setr_loader
from .io import CHECKPOINT_SUFFIXES, class_names, read_checkpoint, write_safetensors, write_torch

log = logging.getLogger(__name__)

FORMATS = {"hf": hf, "nvlabs": nvlabs, "mmpose": mmpose, "mmseg": mmseg}  # mmpose before mmseg: a superset
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREPROCESSOR = "preprocessor_config.json"  # transformers' image processor, written beside an HF-layout model
# Our own keys: tensors are named after our modules; eps comes from the saved config.
OURS_MARK = "stages.0.patch_embed.proj.weight"


def detect_format(keys: list[str]) -> str | None:
    """'ours', 'hf', 'nvlabs', 'mmpose', 'mmseg' ('timm' for ViTs), or None when no SegFormer / SETR layout matches."""
    if (vit_format := setr_loader.detect(keys)) is not None:
        return vit_format
    if any(k.endswith(OURS_MARK) for k in keys):
        return "ours"
    for name, fmt in FORMATS.items():
        if fmt.matches(keys):
            return name
    return None


def to_native(state_dict: dict[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], str]:
    keys = list(state_dict)
    fmt = detect_format(keys)
    if fmt is None:
        raise ValueError(f"{source}: not a SegFormer checkpoint in any known layout (ours, hf, nvlabs, mmseg); "
                         f"first keys: {keys[:5]}")
    if fmt == "ours":
        return {(k if k.startswith(("encoder.", "decode_head.")) else f"encoder.{k}"): v
                for k, v in state_dict.items()}, fmt
    native, unknown = FORMATS[fmt].to_native(state_dict)
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} key(s) are not part of the {fmt} SegFormer layout: "
                         f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return native, fmt


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


def read_source(source: str | Path) -> tuple[dict[str, torch.Tensor], SegFormerConfig | None, bool]:
    """(our-layout state dict, config, has_head) of any source; config is None when only shapes tell."""
    weights, cfg_json = _resolve(source)
    sd, meta = read_checkpoint(weights)
    if bad := non_finite(sd):
        warnings.warn(f"{weights}: {bad} weight values are NaN or infinite; the model's outputs will be too "
                      f"(a checkpoint of a diverged run?)", stacklevel=3)
    where = weights.with_name("config.json") if cfg_json is not None else weights
    try:
        if setr_loader.detect(list(sd)) is not None or setr_loader.saved_config(cfg_json, meta) is not None:
            return setr_loader.read(sd, meta, cfg_json, str(weights))
        native, fmt = to_native(sd, str(weights))
        config = _config_of(native, fmt, meta, cfg_json, weights)
    except (TypeError, KeyError, AttributeError) as exc:  # a hand-edited config of the wrong shape
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{where}: not a valid model config ({detail})") from None
    except ValueError as exc:  # name the file where the message does not
        if str(where) in str(exc) or str(weights) in str(exc):
            raise
        raise ValueError(f"{where}: {exc}") from None
    return native, config, any(k.startswith("decode_head.") for k in native)


def _config_of(native: dict, fmt: str, meta: dict, cfg_json: dict | None, weights: Path) -> SegFormerConfig:
    """The config of a SegFormer checkpoint: config.json's "segformer" entry or the weights' metadata (which must
    agree, and agree with config.json's transformers fields), else the transformers fields, else the shapes."""
    stored = SegFormerConfig.from_dict(json.loads(meta["segformer_config"])) if meta.get("segformer_config") else None
    ours = SegFormerConfig.from_dict(cfg_json["segformer"]) if cfg_json is not None and "segformer" in cfg_json \
        else None
    if ours is not None and stored is not None:
        _check_same(ours, stored, weights)
    config = ours or stored
    hf_fields = cfg_json is not None and cfg_json.get("model_type") == "segformer"
    if config is not None:
        return _with_hf_edits(cfg_json, config) if hf_fields else config
    if hf_fields:
        hf.check_config(cfg_json)
        return hf.config_from_hf(cfg_json)
    if fmt == "ours":
        raise ValueError(f"{weights}: our layout without its config.json (or safetensors metadata); "
                         f"keep the file next to the config.json that save_pretrained wrote")
    config = infer_config(native, FORMATS[fmt].EPS)
    if fmt == "mmpose":  # the reference's heatmap head: no dropout
        config = dataclasses.replace(config, task="pose", decoder_dropout=0.0)
    names = mmpose.keypoint_names(meta) if fmt == "mmpose" else class_names(meta)
    if names and len(names) == config.num_classes:
        config.class_names = names
    return config


def _with_hf_edits(cfg_json: dict, config: SegFormerConfig) -> SegFormerConfig:
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


def _check_same(config: SegFormerConfig, stored: SegFormerConfig, weights: Path) -> None:
    """config.json must describe the model that the weights file itself records (class names aside)."""
    mine, theirs = config.to_dict(), stored.to_dict()
    differ = sorted(k for k in mine if k != "class_names" and mine[k] != theirs.get(k))
    if differ:
        raise ValueError(f"config.json does not match the config recorded in {weights.name} ({', '.join(differ)} "
                         f"differ): the folder mixes two saves, e.g. an interrupted save; save the model again")


def load_model(source: str | Path, **overrides) -> nn.Module:
    """A model with weights from `source`: a hub id or zoo preset, an HF-format directory, or one checkpoint
    file in HF, NVlabs, MMSegmentation, SegFormer++ MMPose or our layout. Overrides: `num_classes` (re-initialises
    the classifier), `task` ("segmentation" / "classification" / "pose" / "encoder"), `num_keypoints` (pose),
    `token_merging`, and config fields such as `decoder_style`, `num_heads` or `drop_path_rate`. An encoder-only
    checkpoint gives a `MixTransformer` unless a task asks for a head, which is then initialised fresh (and
    reported). SETR: our layout, mmseg SETR or a timm ViT; `model="setr-pup"` (etc.) wraps a ViT in that recipe
    (see `setr_loader.prepare`)."""
    sd, config, has_head = read_source(source)
    if setr_loader.wants_setr(config, overrides):  # ViT / SETR: see setr_loader.prepare for its overrides
        model, sd, fresh = setr_loader.prepare(sd, config, has_head, str(source), overrides)
        _load_into(model, sd, str(source), fresh)
        return model
    token_merging = overrides.pop("token_merging", None)
    task = overrides.pop("task", None)
    # pose: num_keypoints, and for a new pose head its defaults (a saved pose head keeps its own settings)
    overrides = pose_overrides(task or config.task, overrides,
                               defaults=not has_head or (task or config.task) != config.task)
    task = overrides.pop("task", task)
    num_classes = overrides.pop("num_classes", None)
    enc_fields = {f.name for f in dataclasses.fields(MiTConfig)}
    head_fields = {f.name for f in dataclasses.fields(SegFormerConfig)} - {"encoder", "task", "num_classes"}
    unknown = set(overrides) - enc_fields - head_fields
    if unknown:
        raise ValueError(f"load_model: unknown override(s) {sorted(unknown)}; accepted: num_classes, task, "
                         f"token_merging, {', '.join(sorted(enc_fields | head_fields))}")
    encoder_cfg = dataclasses.replace(config.encoder, **{k: v for k, v in overrides.items() if k in enc_fields})
    if task == "encoder" or (task is None and not has_head):
        model = MixTransformer(encoder_cfg)
        _load_into(model, {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")},
                   str(source), fresh=())
        return model
    head = {k: v for k, v in overrides.items() if k in head_fields}
    fresh = ()
    if not has_head or (task is not None and task != config.task):
        fresh = ("decode_head.",)
        sd = {k: v for k, v in sd.items() if not k.startswith("decode_head.")}
        head.setdefault("class_names", None)
    elif num_classes is not None and num_classes != config.num_classes:
        last = "decode_head.fc." if config.task == "classification" else "decode_head.classifier."
        warnings.warn(f"{source}: num_classes {config.num_classes} -> {num_classes}: the classifier "
                      f"({last.rstrip('.')}) is initialised fresh", stacklevel=2)
        fresh = (last,)
        sd = {k: v for k, v in sd.items() if not k.startswith(last)}
        head.setdefault("class_names", None)
    if fresh == ("decode_head.",):  # a new head: the zoo's defaults unless overridden
        if num_classes is None and (task or config.task) != config.task:
            num_classes = COCO_NUM_KEYPOINTS if task == "pose" else SegFormerConfig.num_classes
        head.setdefault("decoder_dim", default_decoder_dim(encoder_cfg.depths,
                                                           head.get("decoder_style", config.decoder_style)))
    config = dataclasses.replace(config, encoder=encoder_cfg, task=task or config.task,
                                 num_classes=num_classes or config.num_classes, **head)
    model = SegFormer(config)
    _load_into(model, sd, str(source), fresh)
    if fresh == ("decode_head.",):
        warnings.warn(f"{source}: encoder-only checkpoint: the {config.task} head (decode_head.*, "
                      f"{sum(p.numel() for p in model.decode_head.parameters())} parameters) is initialised fresh",
                      stacklevel=2)
    if token_merging is not None:
        model.set_token_merging(token_merging)
    return model


def non_finite(state_dict: dict[str, torch.Tensor]) -> int:
    """How many values of the floating-point tensors are NaN or infinite."""
    return sum(int((~torch.isfinite(t)).sum()) for t in state_dict.values() if t.is_floating_point())


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str, fresh: tuple[str, ...]) -> None:
    own = model.state_dict()
    optional = ("num_batches_tracked",)  # not every writer stores BN step counters
    missing = [k for k in own if k not in sd and not k.startswith(fresh) and not k.endswith(optional)]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name} ({len(items)}): {items[:6]}{' ...' if len(items) > 6 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes))
                 if items]
        raise ValueError(f"{source}: checkpoint does not fit the model; " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in sd.items()}, strict=False)


def _target(model: nn.Module) -> tuple[dict[str, torch.Tensor], SegFormerConfig | None]:
    if isinstance(model, (MixTransformer, VisionTransformer)):
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
    use_hf = layout == "auto" and isinstance(config, SegFormerConfig) and config.encoder.pos_embed == "mixffn" and (
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
    """Rewrite `source` in another layout: "hf" / "ours" (directories) or "nvlabs" / "mmseg" (one file,
    .pth with a `state_dict` + `meta`, or .safetensors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*NaN or infinite")  # refused just below
        model = load_model(source)
    destination = Path(destination)
    sd, config = _target(model)
    if bad := non_finite(sd):
        raise ValueError(f"{source}: {bad} weight values are NaN or infinite; refusing to convert a broken "
                         f"checkpoint (a diverged run?)")
    vit = isinstance(model, (SETR, VisionTransformer))
    if to == "ours" or (to == "hf" and not vit):
        if config is None:
            raise ValueError(f"{source}: an encoder-only checkpoint converts to a file layout "
                             f"(--to nvlabs or --to mmseg), not to a model directory")
        if to == "hf":
            hf.from_native(sd, config)  # raises the clear error for decoders HF cannot express
        return save_pretrained(model, destination, overwrite=overwrite, layout="auto" if to == "hf" else "ours")
    if vit:
        out = setr_loader.from_native(sd, config, to)  # mmseg or timm; a clear error for the others
    elif to not in FORMATS:
        raise ValueError(f"unknown target format {to!r}; accepted: hf, ours, nvlabs, mmseg, mmpose")
    else:
        out = FORMATS[to].from_native(sd, config)
    # Our config rides along (foreign tools ignore it), so reading the file back rebuilds exactly this model
    # (e.g. HF's LayerNorm eps, not the target format's).
    ours = {"segformer_config": json.dumps(config.to_dict())} if config is not None else {}
    if destination.suffix == ".safetensors":
        return write_safetensors(destination, out, {"format": "pt", **ours}, overwrite)
    if destination.suffix not in (".pth", ".pt", ".bin"):
        raise ValueError(f"{destination}: --to {to} writes one file; name it .pth or .safetensors")
    return write_torch(destination, {"state_dict": out, "meta": {**_class_meta(to, config), **ours}}, overwrite)


def _class_meta(to: str, config: SegFormerConfig | None) -> dict:
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
