"""`TrainConfig`: every training setting in one flat dataclass; a recipe YAML maps 1:1 onto its fields.

`load_config(path, flags, sets)` layers the dataclass defaults, a YAML file, command-line flags and
`--set key=value` overrides (values parsed as YAML, so `--set crop_size=[512,512]` and `--set clip_grad=null`
work; `model_args.drop_path_rate=0` sets one entry of a mapping field). Unknown keys and ill-typed values are
errors that name the key and where it came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..models.loss import parse_losses
from ..models.token_merging import resolve_token_merging
from ..utils.io import atomic_write_text
from .recipes import find_recipe

OPTIMIZERS = ("adamw", "sgd")
AMP_MODES = ("none", "bf16", "fp16")
NO_DECAY_RULES = ("model", "mmseg", "none")
EVAL_MODES = ("whole", "slide")
BEST_METRICS = ("mIoU", "aAcc", "mAcc", "PCK@0.1", "PCK@0.05", "AP")  # the last three: pose

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One training run. Defaults are the SegFormer ADE20K 512x512 recipe (mmseg), minus the dataset."""

    # Model
    model: str = "segformer-b0"  # a zoo name (`segformer models`)
    model_args: dict = field(default_factory=dict)  # create_model overrides, e.g. {decoder_style: mmseg}
    pretrained: str | None = None  # hub id, directory or file: an encoder (e.g. nvidia/mit-b0) or a full model
    # SegFormer++ token merging trained with (and evaluated with): a preset (hq, fast, 2x2, downsample), a strategy
    # YAML file or its mapping {stages: [...], downsample: bool}; stored resolved (a preset name or the mapping)
    token_merging: str | dict | None = None
    # Data
    data: str | None = None  # dataset root: ADE20K, Cityscapes or folder layout (detected)
    train_split: str = "train"
    val_split: str = "val"
    num_classes: int | None = None  # None: the dataset's (classes.txt for a folder)
    crop_size: tuple[int, int] = (512, 512)  # (h, w); smaller images are padded (image 0, label 255)
    scale: tuple[int, int] | None = None  # (long, short) RandomResize / test Resize bound; None: the dataset's
    # RandomResize factors applied to scale; None: (2^-s, 2^s) for the run's augmentation strength s (below)
    ratio_range: tuple[float, float] | None = None
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool | None = None  # None: on when s >= 0.5 (runs of 10k iterations or more)
    # Pose (segformer-bX-pose models): crop_size is the network input (h, w); the MSRA heatmap's sigma; the
    # evaluation's flip test (heatmaps of the mirrored crop averaged in, shift_heatmap=True)
    sigma: float = 2.0
    flip_test: bool = True
    num_workers: int | None = None  # None: the CPUs this process may use, at most 8
    # Optimisation (iteration based)
    iters: int = 160000
    epochs: int | None = None  # if set, iters = epochs x (training samples // batch_size) (the pose recipes)
    batch_size: int = 16  # global: summed over processes and accumulation steps
    grad_accum: int = 1
    optimizer: str = "adamw"  # "adamw" | "sgd"
    lr: float = 6e-5
    weight_decay: float = 0.01
    momentum: float = 0.9  # SGD
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    head_lr_mult: float = 10.0  # decode and auxiliary heads
    no_decay: str = "model"  # "model": the model's no_weight_decay(); "mmseg": mmseg's name rules; "none"
    warmup_iters: int | None = None  # linear warm-up from lr x warmup_ratio; None: 5% of iters, at most 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0  # poly decay to min_lr at `iters`
    min_lr: float = 0.0
    clip_grad: float | None = None  # max global gradient norm
    class_weights: list[float] | None = None  # cross-entropy weight per class
    losses: list[dict] | None = None  # e.g. [{type: cross_entropy, weight: 1}, {type: dice, weight: 3}]; None: CE
    amp: str = "none"  # "none" | "bf16" (CPU or GPU) | "fp16" (GPU, with a gradient scaler)
    # Evaluation, logging, checkpoints
    eval_interval: int | None = None  # 0: only at the end; None: iters / 5, at most 16000
    eval_epochs: int | None = None  # if set and eval_interval is not: eval_interval = N x (samples // batch_size)
    eval_mode: str = "whole"  # "whole" | "slide"
    eval_crop: tuple[int, int] | None = None  # slide window; None: crop_size
    eval_stride: tuple[int, int] | None = None  # None: 2/3 of the window
    log_interval: int = 50
    tensorboard: bool = False  # also log scalars to <out>/tensorboard (the `tensorboard` extra)
    checkpoint_interval: int | None = None  # None: as eval_interval (iters at least)
    keep_checkpoints: int = 3  # the newest N; 0 keeps all
    save_best: str | None = None  # "mIoU" | "aAcc" | "mAcc" (pose: "PCK@0.1" | "PCK@0.05" | "AP"): kept in best/
    seed: int = 0
    device: str | None = None  # None: cuda if available, else cpu
    out: str | None = None  # run directory
    progress: bool = True

    def __post_init__(self) -> None:
        if "token_merging" in (self.model_args or {}):
            raise ValueError("model_args.token_merging: set token merging with the token_merging key "
                             "(--token-merging), which training, evaluation and resume all follow")
        self.token_merging = _resolve_merging(self.token_merging)
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("amp", self.amp, AMP_MODES)
        _choice("no_decay", self.no_decay, NO_DECAY_RULES)
        _choice("eval_mode", self.eval_mode, EVAL_MODES)
        if self.save_best is not None:
            _choice("save_best", self.save_best, BEST_METRICS)
        for name in ("iters", "batch_size", "grad_accum", "log_interval", "checkpoint_interval", "eval_epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "eval_interval", "keep_checkpoints", "warmup_iters"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("crop_size", "scale", "eval_crop", "eval_stride"):
            value = getattr(self, name)
            if value is not None and min(value) < 1:
                raise ValueError(f"{name} must hold positive sizes, got {list(value)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_ratio < 0 or self.power < 0:
            raise ValueError(f"need lr > 0 and min_lr, warmup_ratio, power >= 0; got lr={self.lr}, "
                             f"min_lr={self.min_lr}, warmup_ratio={self.warmup_ratio}, power={self.power}")
        if self.losses is not None:
            parse_losses(self.losses)
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"clip_grad must be > 0 or null, got {self.clip_grad}")

    def to_dict(self) -> dict:
        """Plain YAML-able values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# What each key means: `segformer train --list-keys` and the README list these.
KEY_HELP = {
    "model": "zoo name, e.g. segformer-b0, setr-pup (`segformer models`)",
    "model_args": "create_model overrides, e.g. {decoder_style: mmseg, drop_path_rate: 0.1}",
    "pretrained": "encoder (e.g. nvidia/mit-b0) or full model: hub id, directory or file; null: random weights",
    "token_merging": "SegFormer++ token merging to train (and evaluate) with: hq, fast, 2x2, downsample, a strategy "
                     "YAML file or its mapping; recorded in final/; null: off",
    "data": "dataset root: ADE20K, Cityscapes or folder layout (images/<split>/, masks/<split>/, classes.txt)",
    "train_split": "split trained on",
    "val_split": "split evaluated on",
    "num_classes": "class count; null: the dataset's (classes.txt for a folder)",
    "crop_size": "training crop [h, w]; smaller images are padded (image 0, label 255)",
    "scale": "[long, short] bound of the training RandomResize and the test Resize; null: the dataset's "
             "(ADE20K [2048, 512], Cityscapes [2048, 1024], a folder [4 x crop, crop])",
    "ratio_range": "RandomResize factors applied to scale; null: follows the run length, [2^-s, 2^s] with s = "
                   "min(1, iters / 20000): mmseg's [0.5, 2.0] from 20k iterations, [0.98, 1.02] for 600",
    "cat_max_ratio": "a crop is redrawn (up to 10 times) while one class covers more than this share",
    "flip_prob": "horizontal flip probability",
    "photometric": "mmseg's PhotoMetricDistortion (brightness, contrast, saturation, hue); null: on for runs of "
                   "10k iterations or more",
    "sigma": "pose models: the MSRA heatmap's Gaussian sigma (heatmap pixels)",
    "flip_test": "pose models: average in the heatmaps of the mirrored crop when evaluating",
    "num_workers": "data loading processes; null: the CPUs this process may use, at most 8",
    "iters": "optimiser steps",
    "epochs": "if set, iters = epochs x (training samples // batch_size) (the pose recipes)",
    "batch_size": "global batch: summed over processes and accumulation steps",
    "grad_accum": "micro-batches accumulated per optimiser step",
    "optimizer": "adamw or sgd",
    "lr": "base learning rate (heads: x head_lr_mult)",
    "weight_decay": "decoupled (AdamW) or L2 (SGD) weight decay",
    "momentum": "SGD momentum",
    "betas": "AdamW betas",
    "head_lr_mult": "learning-rate multiplier of the decode and auxiliary heads",
    "no_decay": "which parameters skip weight decay: model (its no_weight_decay()), mmseg (name rules), none",
    "warmup_iters": "linear warm-up steps; null: 5% of iters, at most 1500 (a warning when above 10%)",
    "warmup_ratio": "warm-up starts at lr x this",
    "power": "poly decay exponent (1: linear to min_lr at iters)",
    "min_lr": "learning rate reached at the last step",
    "clip_grad": "max global gradient norm; null: no clipping",
    "class_weights": "cross-entropy weight per class; null: equal",
    "losses": "the decode head's loss as mmseg's loss_decode list, e.g. [{type: cross_entropy, weight: 1.0}, "
              "{type: dice, weight: 3.0}]; types cross_entropy, dice (use_sigmoid, naive_dice, eps), focal (gamma, "
              "alpha), options as mmseg 1.2.2's; null: cross-entropy alone",
    "amp": "none, bf16 (CPU or GPU) or fp16 (GPU, with a gradient scaler)",
    "eval_interval": "evaluate every N steps (0: only at the end); null: iters / 5, at most 16000",
    "eval_epochs": "evaluate every N epochs (the pose recipes): eval_interval = N x (training samples // batch_size) "
                   "unless eval_interval is set",
    "eval_mode": "whole (one pass per image) or slide (eval_crop windows at eval_stride)",
    "eval_crop": "slide window [h, w]; null: crop_size",
    "eval_stride": "slide stride [h, w]; null: 2/3 of the window",
    "log_interval": "write the mean loss, lr and speed to log.jsonl every N steps",
    "tensorboard": "also write the logged scalars to <out>/tensorboard for TensorBoard (pip install "
                   "\"segformer[tensorboard]\"); log.jsonl stays",
    "checkpoint_interval": "write checkpoints/iter_N.pt every N steps; null: as eval_interval (iters when that is 0)",
    "keep_checkpoints": "keep the newest N checkpoints; 0 keeps all",
    "save_best": "mIoU, aAcc or mAcc (pose: PCK@0.1, PCK@0.05 or AP): after every evaluation, keep the "
                 "best-scoring model so far in best/ "
                 "(with best/metrics.json); null: off",
    "seed": "seed of weights, data order and augmentation",
    "device": "cpu, cuda, cuda:1, ...; null: cuda if available, else cpu",
    "out": "run directory",
    "progress": "show progress bars",
}

MAX_WARMUP, MAX_INTERVAL = 1500, 16000  # the ADE20K 160k schedule's values, reached from 30k / 80k iterations
# mmseg's shortest schedule (20k iterations, e.g. Pascal VOC) already trains with its full augmentation: resize
# 0.5-2.0x and PhotoMetricDistortion. Shorter runs get less: after 600 steps of B0 from random weights on two
# folder sets, the full pipeline scored 6.8-8.8 mIoU below this rule's (benchmarks/RESULTS.md, issue 14).
FULL_AUGMENTATION_ITERS = 20000


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def augmentation_strength(iters: int) -> float:
    """s in (0, 1]: how much of mmseg's training augmentation a run of `iters` steps gets by default."""
    return min(1.0, iters / FULL_AUGMENTATION_ITERS)


def resolve_run_length(config: TrainConfig) -> TrainConfig:
    """`config` with the keys left null set from the run length and the machine: warm-up 5% of the run (at most
    1500), evaluation every fifth of it (at most 16000), checkpoints as evaluations, workers = usable CPUs (at
    most 8), random resize factors (2^-s, 2^s) and photometric distortion when s >= 0.5, for the augmentation
    strength s = min(1, iters / 20000). A 600-step run thus warms up for 30 steps, evaluates at 120, 240, ... and
    trains on nearly unscaled crops instead of never leaving the 160k schedule's 1500-step warm-up while fitting
    its 4x scale range."""
    warmup = config.warmup_iters if config.warmup_iters is not None else min(MAX_WARMUP, -(-config.iters // 20))
    interval = config.eval_interval if config.eval_interval is not None else min(MAX_INTERVAL,
                                                                                 max(1, config.iters // 5))
    checkpoint = config.checkpoint_interval or (interval or config.iters)
    workers = config.num_workers if config.num_workers is not None else min(8, usable_cpus())
    if warmup > config.iters / 10:
        logger.warning("warmup_iters=%d is more than a tenth of the %d-step run: the learning rate stays below lr "
                       "for much of it (leave warmup_iters unset for 5%% of the run)", warmup, config.iters)
    strength = augmentation_strength(config.iters)
    ratio_range = config.ratio_range or (round(2 ** -strength, 4), round(2 ** strength, 4))
    photometric = config.photometric if config.photometric is not None else strength >= 0.5
    return dataclasses.replace(config, warmup_iters=warmup, eval_interval=interval, checkpoint_interval=checkpoint,
                               num_workers=workers, ratio_range=ratio_range, photometric=photometric)


def _resolve_merging(value):
    """A token merging strategy in its stored form (a preset name or the full mapping; a YAML file is read now,
    so the run records what it trained with); a ValueError names the key otherwise."""
    if value is None:
        return None
    try:
        return resolve_token_merging(value).to_config_value()
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _choice(name: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(accepted)}; got {value!r}")


def _describe(tp) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is tuple:
        return f"a list of {len(args)} {args[0].__name__}s (or one {args[0].__name__} for both)"
    if typing.get_origin(tp) is list:
        return f"a list of {args[0].__name__}s"
    return {dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _number(name: str, value, tp: type) -> int | float:
    """`value` as an int or float (a numeric string counts); TypeError for a non-number or a fractional int."""
    if isinstance(value, bool) or value is None:
        raise TypeError
    number = float(value) if isinstance(value, str) else value
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if tp is int:
        if float(number) != int(number):
            raise TypeError
        return int(number)
    return float(number)


def _coerce(name: str, value, tp):
    """`value` as type `tp`, accepting what YAML gives (e.g. '6e-5' as a string, an int for a float,
    one int for a pair); a ValueError names the field otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    try:
        if origin in (typing.Union, types.UnionType):
            if value is None:
                if type(None) in args:
                    return None
                raise TypeError
            *others, last = [a for a in args if a is not type(None)]
            for option in others:  # the first alternative that takes the value
                with contextlib.suppress(ValueError):
                    return _coerce(name, value, option)
            return _coerce(name, value, last)
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if tp in (int, float):
            return _number(name, value, tp)
        if tp is str:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
            raise TypeError
        if origin is tuple:
            items = [value] * len(args) if isinstance(value, (int, float, str)) else list(value)
            if len(items) != len(args):
                raise TypeError
            return tuple(_coerce(name, v, a) for v, a in zip(items, args, strict=True))
        if origin is list:
            return [_coerce(name, v, args[0]) for v in value]
        if tp is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, OverflowError):
        raise ValueError(f"{name} must be {_describe(tp)}, got {value!r}") from None
    except ValueError as exc:
        finite = "finite number" in str(exc)
        raise ValueError(str(exc) if finite else f"{name} must be {_describe(tp)}, got {value!r}") from None
    raise TypeError(f"TrainConfig.{name}: unsupported field type {tp}")


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _unknown(key: str, where: str) -> ValueError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"{where}: unknown key {key!r}{hint}; accepted: {', '.join(FIELDS)}")


def read_yaml(path: str | Path) -> dict:
    """The mapping of a recipe file, its keys checked against `TrainConfig`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config is a mapping of TrainConfig fields, got {type(data).__name__}")
    for key in data:
        if key not in FIELDS:
            raise _unknown(str(key), str(path))
    return data


def apply_sets(data: dict, sets: list[str]) -> dict:
    """`data` with `--set key=value` items applied; `key.sub=value` sets one entry of a mapping field."""
    data = dict(data)
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set iters=1000")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not valid YAML: {exc}") from None
        top, _, sub = key.partition(".")
        if top not in FIELDS:
            raise _unknown(top, f"--set {item}")
        if sub:
            if typing.get_type_hints(TrainConfig)[top] is not dict:
                raise ValueError(f"--set {item}: {top} is not a mapping, so {key!r} has no sub-key")
            data[top] = {**(data.get(top) or {}), sub: value}
        else:
            data[top] = value
    return data


def load_config(path: str | Path | None = None, flags: dict | None = None, sets: list[str] = ()) -> TrainConfig:
    """Defaults < YAML file at `path` (or an installed recipe's name) < `flags` (field -> value, None = not
    given) < `--set` items."""
    data = read_yaml(find_recipe(path)) if path is not None else {}
    for key, value in (flags or {}).items():
        if key not in FIELDS:
            raise _unknown(key, "flags")
        if value is not None:
            data[key] = value
    data = apply_sets(data, list(sets))
    try:
        return TrainConfig(**data)
    except ValueError as exc:
        raise ValueError(f"{path or 'config'}: {exc}") from None


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write `config` as YAML, atomically."""
    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))
