"""SegFormer++ token merging strategies: per-stage settings, the paper's presets, and parsing of every form a
strategy is given in (preset name, YAML file, list of per-stage dicts in our or the reference's spelling).

A strategy is four `StageMerging`s (one per stage) plus `downsample` (halve the image before the encoder, as
the reference's baseline). Presets reproduce the paper's settings: `PRESETS`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("bsm", "pool")
# The reference's configs call 2D pooling "n2d"; accept its names so its tome_cfg dicts paste in as they are.
_MODE_ALIASES = {"bsm": "bsm", "pool": "pool", "n2d": "pool"}
_KEY_ALIASES = {"r": "ratio", "s": "stride"}


@dataclass(frozen=True)
class StageMerging:
    """How one stage merges its queries (`q_*`) and keys/values (`kv_*`); a mode of None = off.

    ratio: "bsm" only, the fraction of the sequence's N tokens merged away (r = int(N * ratio)).
    stride: (sy, sx), for "bsm" the destination grid's cell, for "pool" the pooling window.
    """

    q_mode: str | None = None
    q_ratio: float = 0.0
    q_stride: tuple[int, int] = (2, 2)
    kv_mode: str | None = None
    kv_ratio: float = 0.0
    kv_stride: tuple[int, int] = (2, 2)

    def __post_init__(self) -> None:
        for seq in ("q", "kv"):
            mode = getattr(self, f"{seq}_mode")
            if mode is not None:
                if mode not in _MODE_ALIASES:
                    raise ValueError(f"{seq}_mode must be one of {MODES} or None, got {mode!r}")
                object.__setattr__(self, f"{seq}_mode", _MODE_ALIASES[mode])
            stride = getattr(self, f"{seq}_stride")
            stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
            if len(stride) != 2 or not all(isinstance(s, int) and s >= 1 for s in stride):
                raise ValueError(f"{seq}_stride must be an int >= 1 or a pair (sy, sx) of them, got {stride!r}")
            object.__setattr__(self, f"{seq}_stride", stride)
            ratio = float(getattr(self, f"{seq}_ratio"))
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"{seq}_ratio must be in [0, 1], got {ratio}")
            object.__setattr__(self, f"{seq}_ratio", ratio)

    @property
    def active(self) -> bool:
        return self.q_mode is not None or self.kv_mode is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageMerging:
        """Our field names, or the reference's tome_cfg keys (q_r, q_sx, q_sy, q_s, kv_...)."""
        known = {f.name for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for key, value in data.items():
            seq, _, rest = key.partition("_")
            if key in known:
                out[key] = value
            elif seq in ("q", "kv") and rest in _KEY_ALIASES:
                out[f"{seq}_{_KEY_ALIASES[rest]}"] = value
            elif seq in ("q", "kv") and rest in ("sx", "sy"):
                sy, sx = data.get(f"{seq}_sy", 1), data.get(f"{seq}_sx", 1)
                out[f"{seq}_stride"] = (int(sy), int(sx))
            else:
                raise ValueError(f"unknown key {key!r}; accepted: {sorted(known)} "
                                 "(or the reference's q_r, q_sx, q_sy, q_s and kv_ equivalents)")
        return cls(**out)


_OFF = StageMerging()


@dataclass(frozen=True)
class TokenMergingConfig:
    """A whole strategy: one `StageMerging` per encoder stage, and optional input downsampling."""

    stages: tuple[StageMerging, ...] = (_OFF, _OFF, _OFF, _OFF)
    downsample: bool = False
    name: str | None = None  # the preset it came from, if any

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if len(self.stages) != 4 or not all(isinstance(s, StageMerging) for s in self.stages):
            raise ValueError(f"TokenMergingConfig.stages needs 4 StageMerging (one per stage), got {self.stages!r}")

    def to_config_value(self) -> str | dict:
        """JSON-able form for `SegFormerConfig.token_merging`: the preset name, or the full settings."""
        if self.name is not None:
            return self.name
        return {"stages": [dataclasses.asdict(s) for s in self.stages], "downsample": self.downsample}


def _bsm(ratio: float, stride: int, seq: str) -> StageMerging:
    return StageMerging(**{f"{seq}_mode": "bsm", f"{seq}_ratio": ratio, f"{seq}_stride": (stride, stride)})


_POOL_2X2 = StageMerging(q_mode="pool", q_stride=(2, 2))

PRESETS: dict[str, TokenMergingConfig] = {
    # SegFormer++ paper / reference configs (Cityscapes, MiT-B5, no retraining).
    "hq": TokenMergingConfig((_bsm(0.6, 2, "kv"),) * 2 + (_bsm(0.8, 4, "q"),) * 2, name="hq"),
    "fast": TokenMergingConfig((_bsm(0.9, 4, "kv"),) * 2 + (_bsm(0.9, 4, "q"),) * 2, name="fast"),
    "2x2": TokenMergingConfig((_POOL_2X2,) * 4, name="2x2"),
    "downsample": TokenMergingConfig(downsample=True, name="downsample"),
}
# The reference's preset names.
_PRESET_ALIASES = {"bsm_hq": "hq", "bsm_fast": "fast", "n2d_2x2": "2x2"}

TokenMergingSpec = str | os.PathLike | TokenMergingConfig | Sequence | dict | None


def resolve_token_merging(spec: TokenMergingSpec) -> TokenMergingConfig | None:
    """A strategy from a preset name, a YAML file, a list of 4 stage dicts/`StageMerging`s, or None."""
    return _resolve(spec, source="token_merging", allow_path=True)


def _resolve(spec: Any, source: str, allow_path: bool) -> TokenMergingConfig | None:
    accepted = (f"accepted: a preset ({', '.join(PRESETS)}), a YAML file, a list of 4 per-stage dicts "
                "or StageMerging, a TokenMergingConfig, or None")
    if spec is None or isinstance(spec, TokenMergingConfig):
        return spec
    if isinstance(spec, str) and spec.lower() in PRESETS.keys() | _PRESET_ALIASES.keys():
        return PRESETS[_PRESET_ALIASES.get(spec.lower(), spec.lower())]
    if allow_path and isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"{source}: {str(spec)!r} is neither a preset nor an existing file; {accepted}")
        import yaml  # only needed for strategy files

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from err
        return _resolve(data, source=str(path), allow_path=False)
    if isinstance(spec, dict):
        unknown = set(spec) - {"stages", "downsample"}
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {sorted(unknown)}; accepted: 'stages' (4 per-stage "
                             "settings) and 'downsample' (bool)")
        stages = _resolve_stages(spec.get("stages", [{}] * 4), source)
        return TokenMergingConfig(stages, downsample=bool(spec.get("downsample", False)))
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return TokenMergingConfig(_resolve_stages(spec, source))
    raise ValueError(f"{source}: cannot use {spec!r} as a token merging strategy; {accepted}")


def _resolve_stages(stages: Any, source: str) -> tuple[StageMerging, ...]:
    if not isinstance(stages, Sequence) or isinstance(stages, str) or len(stages) != 4:
        raise ValueError(f"{source}: 'stages' must list 4 per-stage settings (one per encoder stage), got {stages!r}")
    out = []
    for i, stage in enumerate(stages):
        try:
            out.append(stage if isinstance(stage, StageMerging) else StageMerging.from_dict(stage or {}))
        except (TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{source}: stage {i + 1}: {err}") from err
    return tuple(out)


__all__ = ["StageMerging", "TokenMergingConfig", "PRESETS", "MODES", "TokenMergingSpec", "resolve_token_merging"]
