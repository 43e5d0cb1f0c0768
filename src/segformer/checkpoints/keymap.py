"""Two-way key renaming between a foreign checkpoint layout and ours, from one table of templates.

A template pair such as ("block{S}.{b}.norm1", "encoder.stages.{s}.blocks.{b}.norm1") reads: the
foreign key prefix on the left is our prefix on the right, with `{s}` the 0-based stage, `{S}` the
stage in the foreign numbering (0- or 1-based per format) and `{b}` the block index. Whatever follows
the prefix (".weight", ".running_mean", ...) is carried over unchanged. One table serves both
directions, so the two conversions cannot drift apart. Hand-written because the layouts are ours.
"""

from __future__ import annotations

import re

import torch

_FIELD = {"{S}": r"(?P<S>\d+)", "{s}": r"(?P<s>\d+)", "{b}": r"(?P<b>\d+)"}


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for field, group in _FIELD.items():
        pattern = pattern.replace(re.escape(field), group)
    return re.compile(f"^{pattern}(?P<rest>(\\..*)?)$")


class KeyMap:
    """Rename keys between a foreign layout (`pairs[i][0]`) and ours (`pairs[i][1]`)."""

    def __init__(self, pairs: list[tuple[str, str]], stage_base: int = 0):
        self.pairs = [(f, n, _compile(f), _compile(n)) for f, n in pairs]
        self.stage_base = stage_base

    def _apply(self, key: str, to_native: bool) -> str | None:
        for foreign, native, foreign_re, native_re in self.pairs:
            match = (foreign_re if to_native else native_re).match(key)
            if match is None:
                continue
            groups = match.groupdict()
            if to_native:
                stage = int(groups["S"]) - self.stage_base if groups.get("S") is not None else None
            else:
                stage = int(groups["s"]) if groups.get("s") is not None else None
            out = native if to_native else foreign
            if stage is not None:
                out = out.replace("{s}", str(stage)).replace("{S}", str(stage + self.stage_base))
            if groups.get("b") is not None:
                out = out.replace("{b}", groups["b"])
            return out + groups["rest"]
        return None

    def to_native(self, state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Our keys for every key the table knows; returns (renamed, unknown foreign keys)."""
        out, unknown = {}, []
        for key, value in state_dict.items():
            new = self._apply(key, to_native=True)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
        return out, unknown

    def from_native(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state_dict.items():
            new = self._apply(key, to_native=False)
            if new is None:
                raise KeyError(f"no foreign name for our key {key!r}")
            out[new] = value
        return out


def reverse_fuse_order(weight: torch.Tensor, parts: int = 4) -> torch.Tensor:
    """Reorder the input-channel blocks of the decoder's fuse conv ([c4..c1] <-> [c1..c4])."""
    out_ch, in_ch = weight.shape[:2]
    return weight.reshape(out_ch, parts, in_ch // parts, *weight.shape[2:]).flip(1).reshape(weight.shape).contiguous()


def merge_pairs(state_dict: dict[str, torch.Tensor], first: str, second: str, merged: str) -> dict[str, torch.Tensor]:
    """Concatenate `X.<first>.<p>` and `X.<second>.<p>` along dim 0 into `X.<merged>.<p>` (e.g. k, v -> kv)."""
    out = {}
    for key, value in state_dict.items():
        head, sep, tail = key.rpartition(f".{second}.")
        if sep:
            continue
        head, sep, tail = key.rpartition(f".{first}.")
        if not sep:
            out[key] = value
            continue
        partner = f"{head}.{second}.{tail}"
        if partner not in state_dict:
            raise KeyError(f"checkpoint has {key!r} but not {partner!r}")
        out[f"{head}.{merged}.{tail}"] = torch.cat([value, state_dict[partner]], dim=0)
    return out


def split_pairs(state_dict: dict[str, torch.Tensor], merged: str, first: str, second: str) -> dict[str, torch.Tensor]:
    """Inverse of `merge_pairs`: split `X.<merged>.<p>` in two halves along dim 0."""
    out = {}
    for key, value in state_dict.items():
        head, sep, tail = key.rpartition(f".{merged}.")
        if not sep:
            out[key] = value
            continue
        a, b = value.chunk(2, dim=0)
        out[f"{head}.{first}.{tail}"] = a.contiguous()
        out[f"{head}.{second}.{tail}"] = b.contiguous()
    return out
