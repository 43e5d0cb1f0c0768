"""What every checkpoint layout provides (`Format`), and `KeyFormat`, the form each layout module declares it in.

A layout is named ("hf", "nvlabs", "mmseg", "mmpose", "timm", "ours") for one architecture ("segformer", "setr"):
it recognises its key names, renames a state dict into ours and back, and knows the LayerNorm eps of the
reference implementation that wrote it (a checkpoint runs with its reference's eps)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from .io import class_names

StateDict = dict[str, torch.Tensor]


class Format(Protocol):
    """A checkpoint layout of one architecture."""

    name: str
    architecture: str
    eps: Mapping[str, float]  # encoder-config LayerNorm eps fields of the reference ({} when the config holds them)
    task: str | None  # the task every checkpoint of the layout has (None: read off the tensors)
    unused: tuple[str, ...]  # key prefixes the layout carries that no model here uses (never loaded)
    unused_note: str | None  # the warning shown when such tensors are set aside (None: silently)

    def matches(self, keys: list[str]) -> bool:
        """Whether these key names are this layout's."""

    def to_native(self, state_dict: StateDict) -> tuple[StateDict, list[str]]:
        """(our-layout state dict, keys the layout does not know)."""

    def from_native(self, state_dict: StateDict, config: object | None) -> StateDict:
        """Our state dict in this layout; `config` None for a bare encoder. A clear ValueError for a model the
        layout cannot express."""

    def names(self, meta: dict) -> list[str] | None:
        """Class (pose: keypoint) names from the checkpoint's metadata, when it records them."""


@dataclass(frozen=True)
class KeyFormat:
    """A `Format` made of a layout module's functions."""

    name: str
    architecture: str
    matches: Callable[[list[str]], bool]
    to_native: Callable[[StateDict], tuple[StateDict, list[str]]]
    from_native: Callable[[StateDict, object | None], StateDict]
    eps: Mapping[str, float] = field(default_factory=dict)
    task: str | None = None
    unused: tuple[str, ...] = ()
    unused_note: str | None = None
    names: Callable[[dict], list[str] | None] = class_names


class Plan(NamedTuple):
    """What `load_model` builds from a checkpoint: the model, the state dict to fit into it and the key prefixes
    that start fresh (`fresh`) or are not used (`drop`)."""

    model: nn.Module
    state_dict: StateDict
    fresh: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Architecture:
    """How checkpoints of one architecture become models: its config from tensor shapes and the model a load with
    overrides builds. The labels name it in messages."""

    name: str
    label: str  # "SETR": the model
    layout: str  # "ViT/SETR": what its layouts hold ("... not part of the timm ViT/SETR layout")
    encoder_label: str  # "ViT": its encoder
    head_prefixes: tuple[str, ...]  # keys of a full model that the encoder alone lacks
    encoder: type[nn.Module]  # what an encoder-only load gives
    infer_config: Callable[[StateDict, Format], Any]
    plan: Callable[[StateDict, Any, bool, str, dict], Plan]
