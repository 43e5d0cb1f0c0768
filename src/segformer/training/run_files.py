"""`RunFiles`: what a training run writes to its directory, kept apart from the loop that trains.

`config.yaml` (the resolved config), `log.jsonl` (one JSON object per logged iteration or evaluation, mirrored to
TensorBoard when asked), `best/` (the best model so far by `save_best`), and at the end `final/`,
`metrics.json` and `plots/`. Checkpoints are `checkpoint.py`'s. Under torchrun only rank 0 holds a `RunFiles`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from ..models import SegmentationModel
from ..utils.io import atomic_dir, atomic_write_text, write_json
from .config import TrainConfig, save_config
from .plots import read_log_records, save_plots
from .tensorboard import TensorBoardLog

log = logging.getLogger(__name__)

RUN_FILES = ("config.yaml", "log.jsonl", "checkpoints", "final", "metrics.json", "plots", "best",
             "tensorboard")


def check_run_dir(config: TrainConfig, resume, overwrite: bool) -> Path:
    """The run directory; refuses one that holds a run unless resuming it or starting it over."""
    if config.out is None:
        raise ValueError("out: no run directory given; set `out:` in the config or pass --out DIR")
    if resume is not None and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite starts it over: pass one of them")
    run_dir = Path(config.out)
    taken = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume is None and taken and not overwrite:
        raise FileExistsError(f"run directory {run_dir} already holds a run ({', '.join(taken)}); pass --resume "
                              f"to continue it, --overwrite to start it over, or choose another --out")
    return run_dir


def write_model(model: nn.Module, directory: Path) -> None:
    """SegFormer / SETR in the `save_pretrained` layout; any other model: its weights alone."""
    if isinstance(model, SegmentationModel):
        model.save_pretrained(directory, overwrite=True)
    else:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        atomic_dir(directory, lambda tmp: save_file(weights, str(tmp / "model.safetensors")), overwrite=True)


class RunFiles:
    """The run directory of `config` (rank 0)."""

    def __init__(self, directory: Path, config: TrainConfig):
        self.directory, self.config = directory, config
        self.log_lines = 0  # records in log.jsonl: stored in checkpoints, so a resume drops what came after
        self.tensorboard: TensorBoardLog | None = None

    def prepare(self, start: int, log_lines: int | None, overwrite: bool) -> None:
        """Start over (`overwrite`: only what a run writes goes, anything else in the folder stays) or continue
        at iteration `start`, keeping the `log_lines` records logged before its checkpoint."""
        if overwrite:
            for name in RUN_FILES:
                target = self.directory / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.directory / "config.yaml")
        log_path = self.directory / "log.jsonl"
        records = read_log_records(log_path) if start and log_path.exists() else []
        # older checkpoints do not store log_lines: keep the records up to their iteration
        kept = records[:log_lines] if log_lines is not None else [r for r in records if r["iter"] <= start]
        atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in kept))
        self.log_lines = len(kept)
        if self.config.tensorboard:
            purge = start + 1 if start else None  # a resumed run: drop what came after the checkpoint
            self.tensorboard = TensorBoardLog(self.directory / "tensorboard", purge_step=purge)

    def log(self, record: dict) -> None:
        with open(self.directory / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.log_lines += 1
        if self.tensorboard is not None:
            self.tensorboard.write(record)

    def keep_best(self, iteration: int, summary: dict, model: nn.Module) -> None:
        """`save_best`: write the model to best/ when this evaluation beats the best so far (best/metrics.json
        holds that score, so a resumed run keeps comparing against it)."""
        metric = self.config.save_best
        if metric is None or math.isnan(summary[metric]):
            return
        record = self.directory / "best" / "metrics.json"
        if record.is_file() and json.loads(record.read_text())[metric] >= summary[metric]:
            return
        write_model(model, self.directory / "best")
        atomic_write_text(record, json.dumps({"iteration": iteration, **summary}, indent=2) + "\n")
        log.info("iteration %d: best %s so far (%.2f), model in %s", iteration, metric, summary[metric],
                 self.directory / "best")

    def write_results(self, metrics: dict, model: nn.Module, pose: bool) -> None:
        """metrics.json, final/ and the plots."""
        payload = {"iteration": self.config.iters, **metrics} if pose else self._segmentation_results(metrics)
        write_json(self.directory / "metrics.json", payload, overwrite=True)
        write_model(model, self.directory / "final")
        save_plots(self.directory)

    def _segmentation_results(self, metrics: dict) -> dict:
        names = metrics["classes"]
        return {"iteration": self.config.iters, "aAcc": metrics["aAcc"], "mIoU": metrics["mIoU"],
                "mAcc": metrics["mAcc"], "IoU": dict(zip(names, metrics["IoU"], strict=True)),
                "Acc": dict(zip(names, metrics["Acc"], strict=True)), "num_images": metrics["num_images"]}

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
