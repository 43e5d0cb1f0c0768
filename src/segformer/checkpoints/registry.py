"""The one registry of checkpoint layouts, keyed by (name, architecture), and of the architectures they hold."""

from __future__ import annotations

from torch import nn

from . import arch_segformer, arch_setr, hf, mmpose, mmseg, nvlabs, ours, setr_mmseg, timm_vit
from .format import Architecture, Format

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (arch_segformer.ARCHITECTURE, arch_setr.ARCHITECTURE)}
# Detection order: ViT layouts first (an mmseg ViT is no MiT), our layouts before foreign ones, MMPose before
# MMSegmentation (the MMPose layout is mmseg's backbone plus a heatmap head).
_ORDER: tuple[Format, ...] = (ours.SETR, setr_mmseg.FORMAT, timm_vit.FORMAT, ours.SEGFORMER, hf.FORMAT,
                              nvlabs.FORMAT, mmpose.FORMAT, mmseg.FORMAT)
FORMATS: dict[tuple[str, str], Format] = {(f.name, f.architecture): f for f in _ORDER}


def detect(keys: list[str]) -> Format | None:
    """The first layout whose key names these are, or None."""
    return next((fmt for fmt in _ORDER if fmt.matches(keys)), None)


def format_names(architecture: str) -> list[str]:
    """The layouts of an architecture, in detection order."""
    return [fmt.name for fmt in _ORDER if fmt.architecture == architecture]


def get_format(name: str, architecture: str) -> Format:
    """The layout `name` of `architecture`; a ValueError listing the layouts it has otherwise."""
    if (name, architecture) not in FORMATS:
        names = format_names(architecture)
        arch = ARCHITECTURES[architecture]
        raise ValueError(f"{arch.label} / {arch.encoder_label} models convert --to {', '.join(names[:-1])} or "
                         f"{names[-1]}, got --to {name}")
    return FORMATS[name, architecture]


def architecture_of(model: nn.Module) -> Architecture:
    """The architecture of a model built here, or of its encoder alone."""
    for arch in ARCHITECTURES.values():
        if isinstance(model, arch.encoder):
            return arch
    return ARCHITECTURES[model.config.architecture]
