"""Optional TensorBoard logging (`tensorboard: true`, `segformer train --tensorboard`): every record the run
writes to `log.jsonl` (which stays) also goes to `<run>/tensorboard/` as scalars: `train/loss`, `train/lr`,
`train/sec_per_iter`, `train/grad_norm`, `val/mIoU`, ... at their iteration. Needs the `tensorboard` package
(`pip install "segformer[tensorboard]"`); `tensorboard --logdir RUN` shows them.
"""

from __future__ import annotations

import numbers
from pathlib import Path

MISSING = ("tensorboard: true (--tensorboard) needs the tensorboard package, which is not installed: "
           "pip install \"segformer[tensorboard]\" (or pip install tensorboard), or drop the flag (log.jsonl is "
           "written either way)")


def summary_writer_class():
    """torch's `SummaryWriter`; an ImportError saying how to install it when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(MISSING) from None
    return SummaryWriter


class TensorBoardLog:
    """Scalars of log records into `directory`. `purge_step`: on resume, events logged after the checkpoint
    (by the run that stopped) are dropped from the view, as log.jsonl drops them."""

    def __init__(self, directory: Path, purge_step: int | None = None):
        self.writer = summary_writer_class()(str(directory), purge_step=purge_step)

    def write(self, record: dict) -> None:
        group = "train" if "loss" in record else "val"
        for key, value in record.items():
            if key != "iter" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.writer.add_scalar(f"{group}/{key}", value, record["iter"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
