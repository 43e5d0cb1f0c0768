"""The contract every segmentation model here follows (SegFormer and its classifier form, SETR).

A `SegmentationModel` is an `encoder` and a `decoder` (the decode head; SETR adds a neck and auxiliary heads)
built from one dataclass config that serialises to JSON. `forward(pixel_values)` always returns the logits;
models with auxiliary heads (SETR) give those through `forward_aux`, which training uses. As in transformers,
`model(x, labels=y)` and `model(x, output_hidden_states=True)` return a `SegmentationOutput` with the loss (the
one training optimises) and the encoder's per-stage features. Callers rely on this contract instead of probing
for attributes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .loss import LossTerm, combined_loss, segmentation_loss
from .mit import MixTransformer
from .pose import keypoint_mse_loss
from .vit import VisionTransformer

_ARCHITECTURES: dict[str, type[SegmentationModel]] = {}
_SAVER: list[Callable[..., Path]] = []  # set by segformer.checkpoints, which models must not import


class ModelConfig:
    """Mixin for the dataclass config of a `SegmentationModel`: a JSON round trip tagged with the architecture,
    and class names that always match `num_classes`."""

    architecture: ClassVar[str]
    num_classes: int
    class_names: list[str] | None
    ignore_index: int
    name: str | None  # the zoo name it was built from, informational
    test_pipeline: dict | None  # how training scored it (scale, mode, window), see segformer.protocol
    task: str = "segmentation"  # a dataclass field where an architecture has several tasks (SegFormer)

    def _check_common(self, encoder_class: type, choices: dict[str, tuple[str, ...]]) -> None:
        """An encoder given as a dict (JSON) becomes `encoder_class`; each field named in `choices` must hold one of
        its values."""
        if isinstance(self.encoder, dict):
            self.encoder = encoder_class(**self.encoder)
        for field, accepted in choices.items():
            if getattr(self, field) not in accepted:
                raise ValueError(f"{type(self).__name__}.{field} must be one of {accepted}, "
                                 f"got {getattr(self, field)!r}")

    def _check_classes(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            self.class_names = None  # stale names (num_classes overridden) are worse than none

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = {k: v for k, v in data.items() if k != "architecture"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**data)


@dataclass
class SegmentationOutput:
    """What `model(pixel_values, labels=..., output_hidden_states=...)` returns, named as transformers'
    `SemanticSegmenterOutput`: `loss` (None without labels), `logits` (what `model(pixel_values)` returns) and
    `hidden_states` (the encoder's per-stage (B, C, h, w) maps, as HF's encoder hidden states; None unless asked)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class SegmentationModel(nn.Module):
    """Encoder + decoder from a `ModelConfig`. Subclasses set `config_class`, build `encoder` and
    `decode_head` (the `decoder`), and implement `forward_features`, `forward_head` and `_new_heads`."""

    config_class: ClassVar[type[ModelConfig]]
    config: ModelConfig
    encoder: nn.Module
    decode_head: nn.Module
    token_merging: object | None = None  # the SegFormer++ token merging in use (SegFormer sets it)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" in cls.__dict__:  # an architecture, not a subclass of one
            _ARCHITECTURES[cls.config_class.architecture] = cls

    @property
    def decoder(self) -> nn.Module:
        """The decode head: features in, logits out."""
        return self.decode_head

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> list[str] | None:
        return self.config.class_names

    @property
    def in_channels(self) -> int:
        return self.config.encoder.in_channels

    @property
    def task(self) -> str:
        """"segmentation" (logits (B, K, h, w)), "classification" (logits (B, K)) or "pose" (keypoint heatmaps)."""
        return "segmentation"

    @property
    def aux_weight(self) -> float:
        """Weight of each auxiliary head's loss (0 without auxiliary heads)."""
        return 0.0

    def forward_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's per-stage feature maps (the hidden states)."""
        raise NotImplementedError

    def forward_head(self, features: list[torch.Tensor], size: Sequence[int], aux: bool = False
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, auxiliary heads' logits if `aux`) of the encoder's `features` for an input of `size` (h, w)."""
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None
                = None, output_hidden_states: bool = False) -> torch.Tensor | SegmentationOutput:
        """The logits; with `labels` or `output_hidden_states`, a `SegmentationOutput` holding them with the
        loss of `labels` (`loss`: auxiliary heads included, as training) and/or the encoder's features.
        Labels: (B, H, W) class ids (segmentation), (B,) (classification), or (heatmaps (B, K, h, w), weights
        (B, K)) for pose."""
        features = self.forward_features(pixel_values)
        logits, aux = self.forward_head(features, pixel_values.shape[-2:], aux=labels is not None)
        if labels is None and not output_hidden_states:
            return logits
        return SegmentationOutput(logits=logits, loss=None if labels is None else self.loss(logits, labels, aux),
                                  hidden_states=tuple(features) if output_hidden_states else None)

    def forward_aux(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, auxiliary heads' logits) for training; models without auxiliary heads (or with `aux_weight`
        0) give an empty list, their logits from `forward` (so a subclass that wraps `forward` trains that)."""
        if not self.aux_weight:
            return self(pixel_values), []
        return self.forward_head(self.forward_features(pixel_values), pixel_values.shape[-2:], aux=True)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
             aux_logits: Sequence[torch.Tensor] = (), *, class_weight: torch.Tensor | None = None,
             ignore_index: int | None = None, losses: Sequence[LossTerm] = ()) -> torch.Tensor:
        """Cross-entropy of the logits (segmentation: upsampled to the labels), or the weighted `losses`
        (`models.loss.parse_losses`), plus `aux_weight` x the cross-entropy of each auxiliary head's logits;
        `ignore_index` defaults to the config's. Pose: `labels` is the target (heatmaps (B, K, h, w),
        per-keypoint weights (B, K)), the loss MMPose's keypoint MSE."""
        if losses and self.task != "segmentation":
            raise ValueError(f"losses: a loss list applies to segmentation models, not to a {self.task} model")
        if self.task == "pose":
            heatmaps, weights = labels
            return keypoint_mse_loss(logits, heatmaps, weights)
        ignore = self.config.ignore_index if ignore_index is None else ignore_index
        if self.task == "classification":
            return F.cross_entropy(logits.float(), labels, class_weight, ignore_index=ignore)
        total = combined_loss(logits, labels, losses, ignore, class_weight) if losses else \
            segmentation_loss(logits, labels, ignore, class_weight)
        for aux in aux_logits:
            total = total + self.aux_weight * segmentation_loss(aux, labels, ignore, class_weight)
        return total

    def no_weight_decay(self) -> set[str]:
        """Parameter names trained without weight decay: the encoder's (norms, position/class embeddings)."""
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def reset_head(self, num_classes: int) -> None:
        """Replace the heads with freshly initialised ones for `num_classes` classes (encoder and neck kept)."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes, class_names=None)
        like = next(self.encoder.parameters())
        for name, module in self._new_heads().items():
            setattr(self, name, module.to(like))

    def _new_heads(self) -> dict[str, nn.Module]:
        """Freshly initialised heads for `self.config`, by attribute name."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write `config.json` + `model.safetensors` (transformers' layout when it can express the model, so
        HF-style SegFormers also load in transformers; ours otherwise)."""
        if not _SAVER:
            raise RuntimeError("save_pretrained needs segformer.checkpoints (import segformer)")
        return _SAVER[0](self, directory, overwrite=overwrite)


def split_overrides(overrides: dict, config_class: type, encoder_class: type, what: str,
                    extra: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(encoder fields, head fields) of `overrides` that name fields of `encoder_class` / `config_class` (not
    its `encoder`); any other name raises "<what> [names]; accepted: <extra>, <fields>"."""
    enc_fields = {f.name for f in dataclasses.fields(encoder_class)}
    head_fields = {f.name for f in dataclasses.fields(config_class)} - {"encoder"}
    unknown = set(overrides) - enc_fields - head_fields
    if unknown:
        accepted = ", ".join([*extra, *sorted(enc_fields | head_fields)])
        raise ValueError(f"{what} {sorted(unknown)}; accepted: {accepted}")
    return ({k: v for k, v in overrides.items() if k in enc_fields},
            {k: v for k, v in overrides.items() if k in head_fields})


def register_saver(save: Callable[..., Path]) -> None:
    """Called once by `segformer.checkpoints`: the writer behind `SegmentationModel.save_pretrained`."""
    _SAVER[:] = [save]


def config_from_dict(data: dict) -> ModelConfig:
    """The config of `SegmentationModel.config.to_dict()` output (no "architecture": a SegFormer)."""
    arch = data.get("architecture", "segformer")
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; accepted: {', '.join(sorted(_ARCHITECTURES))}")
    return _ARCHITECTURES[arch].config_class.from_dict(data)


def model_from_config(config: ModelConfig | dict) -> SegmentationModel:
    """A freshly initialised model of a config (or its `to_dict()`)."""
    config = config_from_dict(config) if isinstance(config, dict) else config
    return _ARCHITECTURES[config.architecture](config)


def model_config(model: nn.Module) -> ModelConfig | None:
    """The `ModelConfig` of a model here, or of a runner of an exported model (which keeps it); None for an encoder
    alone or a model without one."""
    config = getattr(model, "config", None)
    return config if isinstance(config, ModelConfig) else None


def input_channels(model: nn.Module) -> int:
    """Channels of the images `model` takes: from its config (models and encoders here), else 3 (RGB)."""
    if isinstance(model, SegmentationModel):
        return model.in_channels
    if isinstance(model, (MixTransformer, VisionTransformer)):
        return model.config.in_channels
    config = getattr(model, "config", None)  # an exported model run by another runtime keeps the config
    return config.encoder.in_channels if isinstance(config, ModelConfig) else 3
