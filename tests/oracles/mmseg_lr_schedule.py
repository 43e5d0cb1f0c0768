"""MMSegmentation 1.2.2 / mmengine as an oracle for the learning-rate schedules: build the optimiser and the
`param_scheduler` list of a config shipped in the mmseg wheel around a two-parameter model (one body parameter,
one `decode_head` parameter, so the head's lr x10 shows), step the schedulers as mmengine's IterBasedTrainLoop
does (once after every iteration) and write the lr each group trains with at sampled iterations.

Run it with the MMSegmentation venv's interpreter (never imported by the test suite); the output is stored as a
fixture that tests/test_training_optim.py compares our `LRSchedule` against:

    .venv-mmseg/bin/python tests/oracles/mmseg_lr_schedule.py tests/fixtures/mmseg_lr_schedules.json
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
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import PARAM_SCHEDULERS, init_default_scope  # noqa: E402

CONFIGS = ("segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
           "setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py",
           "setr/setr_vit-l_mla_8xb1-80k_cityscapes-768x768.py")
SAMPLES = (0, 1, 2, 3, 100, 749, 1498, 1499, 1500, 1501, 1502, 10000, 40000, 79998, 79999, 80000, 123456,
           159998, 159999)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(2, 2)
        self.decode_head = torch.nn.Linear(2, 2)


def trace(config: str) -> dict:
    cfg = Config.fromfile(Path(mmseg.__file__).parent / ".mim" / "configs" / config)
    wrapper = build_optim_wrapper(Tiny(), cfg.optim_wrapper)
    schedulers = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=wrapper))
                  for s in cfg.param_scheduler]
    # With a paramwise_cfg mmengine makes one group per parameter, in `named_parameters` order:
    # body.weight, body.bias, decode_head.weight, decode_head.bias.
    body, head = wrapper.optimizer.param_groups[0], wrapper.optimizer.param_groups[2]
    rows, wanted, total = [], set(SAMPLES), cfg.train_cfg.max_iters
    for it in range(total):
        if it in wanted:  # the lr that iteration `it` trains with: body group first, then the head group
            rows.append([it, body["lr"], head["lr"]])
        for s in schedulers:  # ParamSchedulerHook.after_train_iter
            s.step()
    return {"config": config, "max_iters": total, "param_scheduler": [dict(s) for s in cfg.param_scheduler],
            "optimizer": dict(cfg.optim_wrapper.optimizer), "columns": ["iter", "body_lr", "head_lr"],
            "rows": rows}


def main(output: str) -> None:
    MMLogger.get_instance("mmengine").setLevel(logging.WARNING)
    init_default_scope("mmseg")
    Path(output).write_text(json.dumps([trace(c) for c in CONFIGS], indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main(*sys.argv[1:])
