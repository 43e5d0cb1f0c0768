"""`fit_state_dict`: the one way a state dict in our layout goes into a model (loader, convert, training's
`pretrained`), with a report of what was loaded, left fresh or dropped."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Not every writer stores BatchNorm step counters; a model keeps its own when the checkpoint lacks them.
OPTIONAL = ("num_batches_tracked",)


@dataclass
class LoadReport:
    """Model tensors filled from the checkpoint (`loaded`) or left as initialised (`fresh`), and checkpoint tensors
    not loaded (`dropped`)."""

    loaded: list[str]
    fresh: list[str]
    dropped: list[str]


def fit_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, fresh: tuple[str, ...] = (),
                   drop: tuple[str, ...] = (), source: str = "checkpoint") -> LoadReport:
    """Load `state_dict` into `model`. Model tensors under the `fresh` key prefixes stay as initialised and the
    checkpoint's tensors under `fresh` or `drop` are not loaded; every other tensor must be there on both sides
    with the same shape, else a ValueError naming `source` lists what is missing, unexpected or mis-shaped."""
    skip = tuple(fresh) + tuple(drop)
    dropped = [k for k in state_dict if k.startswith(skip)]
    sd = {k: v for k, v in state_dict.items() if not k.startswith(skip)}
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(tuple(fresh)) and not k.endswith(OPTIONAL)]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name} ({len(items)}): {items[:6]}{' ...' if len(items) > 6 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes))
                 if items]
        raise ValueError(f"{source}: checkpoint does not fit the model; " + "; ".join(parts))
    model.load_state_dict(sd, strict=False)
    return LoadReport(loaded=list(sd), fresh=[k for k in own if k not in sd], dropped=dropped)
