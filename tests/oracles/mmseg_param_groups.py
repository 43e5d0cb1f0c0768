"""MMSegmentation 1.2.2 as an oracle for the optimiser's parameter-wise rules: build a model and its optimiser
from a config shipped in the mmseg wheel (mmengine's `build_optim_wrapper` with the config's `paramwise_cfg`) and
write, per parameter, its name, shape, learning rate and weight decay as mmseg's builder set them.

Run it with the MMSegmentation venv's interpreter (it is never imported by the test suite); the output is stored
as a fixture that tests/test_training_optim.py compares our `param_groups` against:

    .venv-mmseg/bin/python tests/oracles/mmseg_param_groups.py \\
        segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py tests/fixtures/mmseg_segformer_b0_param_groups.json
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import mmcv_ops_shim  # noqa: E402,F401  (sibling script; must precede any mmseg import)

warnings.filterwarnings("ignore")
import mmseg  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402


def main(config: str, output: str) -> None:
    MMLogger.get_instance("mmengine").setLevel(logging.WARNING)
    init_default_scope("mmseg")
    cfg = Config.fromfile(Path(mmseg.__file__).parent / ".mim" / "configs" / config)
    cfg.model.pop("data_preprocessor", None)
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.norm_cfg = dict(type="BN", requires_grad=True)  # SyncBN needs a process group
    model = MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    rows = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            rows.append({"name": names[id(p)], "shape": list(p.shape), "lr": group["lr"],
                         "weight_decay": group["weight_decay"]})
    rows.sort(key=lambda r: list(names.values()).index(r["name"]))
    base = cfg.optim_wrapper.optimizer
    payload = {"config": config, "optimizer": base["type"], "base_lr": base["lr"],
               "base_weight_decay": base["weight_decay"], "paramwise_cfg": cfg.optim_wrapper.get("paramwise_cfg"),
               "params": rows}
    Path(output).write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {len(rows)} parameters to {output}")


if __name__ == "__main__":
    main(*sys.argv[1:])
