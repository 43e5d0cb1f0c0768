"""The training loop: AMP, gradient accumulation, clipping, periodic evaluation, exact resume, DDP.

Run directory (`config.out`): `checkpoints/iter_NNNNNNN.pt` (checkpoint.py) and what `run_files.RunFiles` writes
(config.yaml, log.jsonl, best/, and at the end final/, metrics.json, plots/). Only rank 0 writes. Under torchrun
every process trains on its share of each global batch (`config.batch_size` = processes x accumulation steps x
per-process batch).

Failure safety: every image and label map is opened before training; the last iteration is always
checkpointed before the final evaluation (if that fails, `--resume` repeats only the evaluation); no checkpoint
holding NaN or inf is ever written; a folder with a failed run is continued by `--resume` or started over by
`--overwrite`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..evaluation import evaluate
from ..models import SegmentationModel, model_from_config
from ..protocol import default_stride, make_test_pipeline
from ..runtimes.precision import autocast_dtype
from ..utils.io import json_safe
from . import distributed as ddp
from .checkpoint import (
    checkpoint_path,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import BEST_METRICS, TrainConfig, resolve_run_length
from .data import check_files, default_scale, open_datasets, train_loader
from .losses import SegmentationLoss, TrainingForward
from .optim import build_optimizer, build_schedule
from .pose import best_metrics, is_pose, open_pose_datasets, pose_transform
from .pose import evaluate as evaluate_pose
from .pretrained import build_model, with_token_merging
from .run_files import RunFiles, check_run_dir
from .tensorboard import summary_writer_class

log = logging.getLogger(__name__)

# Fields that do not change what is computed: they may differ between a run and its resumption.
RESUME_FREE = {"out", "num_workers", "progress", "log_interval", "eval_interval", "eval_epochs",
               "checkpoint_interval", "keep_checkpoints", "device", "data", "save_best"}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad step and wrote no checkpoint."""


def resolve_config(config: TrainConfig, train_set) -> TrainConfig:
    """`config` with what the data and the run length decide filled in: class count, resize scale, slide
    window, the iterations of `epochs` and of `eval_epochs` epochs, then warm-up, evaluation / checkpoint
    intervals, workers and augmentation strength (`resolve_run_length`)."""
    scale = config.scale or default_scale(train_set, config.crop_size)
    crop = config.eval_crop or config.crop_size
    stride = config.eval_stride or (default_stride(crop) if config.eval_mode == "slide" else None)
    epoch = max(1, len(train_set) // config.batch_size)
    iters = config.epochs * epoch if config.epochs else config.iters
    interval = config.eval_epochs * epoch if config.eval_epochs and config.eval_interval is None \
        else config.eval_interval
    return resolve_run_length(dataclasses.replace(
        config, num_classes=train_set.num_classes, scale=scale, iters=iters, eval_interval=interval,
        eval_epochs=None,
        eval_crop=crop if config.eval_mode == "slide" else config.eval_crop, eval_stride=stride))


def check_save_best(metric: str | None, reported: tuple[str, ...]) -> None:
    """`save_best` must name a metric this run's evaluation reports."""
    if metric is not None and metric not in reported:
        raise ValueError(f"save_best: {metric!r} is not reported by this run's evaluation; choose one of "
                         f"{', '.join(reported)}")


def _merging_name(value: str | dict) -> str:
    return value if isinstance(value, str) else "custom (config.yaml)"


def _to_device(labels, device: torch.device):
    """Label maps, or a pose target's (heatmaps, weights), on `device`."""
    if isinstance(labels, (tuple, list)):
        return tuple(t.to(device, non_blocking=True) for t in labels)
    return labels.to(device, non_blocking=True)


class Trainer:
    """One run of `config`. `model`, `train_set`, `val_set` replace what the config would build (any model
    returning logits works; SegFormer / SETR also get `final/` in the `save_pretrained` layout)."""

    def __init__(self, config: TrainConfig, *, resume: str | Path | None = None, model: nn.Module | None = None,
                 train_set=None, val_set=None, overwrite: bool = False):
        self.run_dir, self.overwrite = check_run_dir(config, resume, overwrite), overwrite
        self.dist = ddp.init_distributed(config.device)
        self.pose = is_pose(config)
        train_set, val_set = self._open_data(config, train_set, val_set)
        if config.tensorboard:
            summary_writer_class()  # missing package: stop before any work
        self.config = config = resolve_config(config, train_set)
        self.files = RunFiles(self.run_dir, config)
        self.train_set, self.val_set = train_set, val_set
        self.device, world = self.dist.device, self.dist.world_size
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp: fp16 needs a CUDA device (it trains with a gradient scaler); use amp: bf16 on CPU")
        # bf16 on a CPU without native bf16 is many times slower than float32: run float32 (one warning)
        self.amp = "none" if config.amp == "bf16" and autocast_dtype("bfloat16", self.device) != "bfloat16" \
            else config.amp
        if config.batch_size % (world * config.grad_accum):
            raise ValueError(f"batch_size {config.batch_size} does not split into {world} process(es) x "
                             f"{config.grad_accum} accumulation step(s)")
        self.micro_batch = config.batch_size // (world * config.grad_accum)

        self.checkpoint = None
        if resume is not None:
            path = find_checkpoint(resume, self.run_dir)
            self.checkpoint = load_checkpoint(path)
            self._check_resumed_config(path)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        self._place_model(model, train_set)
        self.optimizer = build_optimizer(self.core, config)
        self.schedule = build_schedule(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.loss_fn = SegmentationLoss(train_set.ignore_index, None if self.pose else config.class_weights,
                                        None if self.pose else config.losses)
        self.start, self.log_lines = 0, None  # log_lines: the log.jsonl records a resumed checkpoint kept
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
        else:
            torch.manual_seed(config.seed + self.dist.rank)  # training randomness (dropout, drop-path) per rank
        self.loader = train_loader(train_set, config, self.micro_batch, self.dist.rank, world,
                                   start=self.start * config.grad_accum, pin_memory=self.device.type == "cuda",
                                   transform=pose_transform(config, train_set) if self.pose else None)
        if self.dist.is_main:
            log.info("%s", self.describe())
        ddp.barrier()  # every process has checked the run directory before rank 0 writes to it

    def _open_data(self, config: TrainConfig, train_set, val_set) -> tuple:
        """The given data sets, else the config's; their files checked, and `save_best` against what the
        evaluation of such data reports."""
        if train_set is None or val_set is None:
            opened = open_pose_datasets(config) if self.pose else open_datasets(config)
            train_set, val_set = train_set or opened[0], val_set or opened[1]
        check_files(train_set)
        check_files(val_set)
        check_save_best(config.save_best, best_metrics(val_set) if self.pose else BEST_METRICS[:3])
        return train_set, val_set

    def describe(self) -> str:
        """The resolved settings that shape the run, in one line (logged at start)."""
        c = self.config
        window = f" {c.eval_crop[0]}x{c.eval_crop[1]} stride {c.eval_stride[0]}x{c.eval_stride[1]}" \
            if c.eval_mode == "slide" else ""
        return (f"{c.model} on {c.data or type(self.train_set).__name__} ({len(self.train_set)} train / "
                f"{len(self.val_set)} val images, {c.num_classes} classes); crop {c.crop_size[0]}x{c.crop_size[1]}, "
                f"scale {list(c.scale)} x {list(c.ratio_range)}, photometric {'on' if c.photometric else 'off'}; "
                f"{c.iters} iterations of batch {c.batch_size}, "
                f"{c.optimizer} lr {c.lr:g} (heads x{c.head_lr_mult:g}), warm-up {c.warmup_iters}, poly {c.power:g}; "
                f"evaluation every {c.eval_interval or c.iters} ({c.eval_mode}{window}), checkpoints every "
                f"{c.checkpoint_interval}; {c.num_workers} workers, device {self.device}, amp {c.amp}"
                + (f", token merging {_merging_name(c.token_merging)}" if c.token_merging else "") + "; "
                "`segformer train --list-keys` lists every setting")

    def _place_model(self, model: nn.Module | None, train_set) -> None:
        """`self.core` (the model, on the device, named for the data's classes) and `self.model` (what training
        calls: its forward with auxiliary outputs, under DistributedDataParallel with several processes)."""
        built = model is None
        if built:
            saved = (self.checkpoint or {}).get("model_config")
            model = model_from_config(saved) if saved else build_model(self.config)
        if built or self.config.token_merging is not None:  # the config's merging, on resume too (as every key)
            model = with_token_merging(model, self.config.token_merging)
        if isinstance(model, SegmentationModel):
            if model.config.num_classes != train_set.num_classes:
                raise ValueError(f"the model predicts {model.config.num_classes} classes but the training data has "
                                 f"{train_set.num_classes}")
            pipeline = None if self.pose else make_test_pipeline(self.config.scale, self.config.eval_mode,
                                                                 self.config.eval_crop, self.config.eval_stride)
            model.config = dataclasses.replace(model.config, class_names=list(train_set.class_names),
                                               test_pipeline=pipeline)
        self.core = model.to(self.device)
        if self.dist.world_size > 1:
            self.core = ddp.convert_sync_batchnorm(self.core, self.device)
            self.model = nn.parallel.DistributedDataParallel(
                TrainingForward(self.core), device_ids=[self.device] if self.device.type == "cuda" else None)
        else:
            self.model = TrainingForward(self.core)

    # ---------------------------------------------------------------- resume
    def _check_resumed_config(self, path: Path) -> None:
        saved = self.checkpoint["config"]
        now = self.config.to_dict()
        changed = sorted(k for k in now if k not in RESUME_FREE and saved.get(k) != now[k])
        if changed:
            log.warning("resuming %s with a different config (%s): the new values apply from iteration %d on, so "
                        "the run will not repeat the original exactly", path,
                        ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed),
                        self.checkpoint["iteration"])

    def _restore(self, state: dict) -> None:
        self.core.load_state_dict(state["model"])
        # load_state_dict restores the saved groups' lr, weight decay, betas...: keep this config's instead
        hyper = [{k: v for k, v in g.items() if k not in ("params", "param_names")}
                 for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, values in zip(self.optimizer.param_groups, hyper, strict=True):
            group.update(values)
        self.log_lines = state.get("log_lines")
        self.scaler.load_state_dict(state["scaler"])
        self.start = int(state["iteration"])
        states = state.get("rng") or []
        if len(states) == self.dist.world_size and state.get("micro_batch") == self.micro_batch:
            set_rng_state(states[self.dist.rank])
        else:
            log.warning("resuming with %d process(es) x batch %d instead of %d x %s: the data order and random "
                        "draws after iteration %d differ from the original run", self.dist.world_size,
                        self.micro_batch, len(states), state.get("micro_batch"), self.start)
            torch.manual_seed(self.config.seed + self.dist.rank + self.start)

    # ---------------------------------------------------------------- files
    def _log(self, record: dict) -> None:
        if self.dist.is_main:
            self.files.log(record)

    def _save(self, iteration: int) -> None:
        self._check_finite(iteration)  # every rank: the weights are the same, so all stop together
        rng = ddp.gather_objects(rng_state())  # a collective: every rank takes part
        if not self.dist.is_main:
            return
        state = {"iteration": iteration, "model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "micro_batch": self.micro_batch, "rng": rng,
                 "config": self.config.to_dict(), "log_lines": self.files.log_lines}
        if isinstance(self.core, SegmentationModel):
            state["model_config"] = self.core.config.to_dict()
        path = save_checkpoint(self.run_dir, iteration, state, keep=self.config.keep_checkpoints)
        log.info("iteration %d: checkpoint %s", iteration, path)

    def _check_finite(self, iteration: int) -> None:
        """Refuse to save weights or optimiser state holding NaN or inf: such a checkpoint is poisoned."""
        tensors = [*self.core.state_dict().values(),
                   *(v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor))]
        floats = [t for t in tensors if t.is_floating_point()]
        bad = sum(int((~torch.isfinite(t)).sum()) for t in floats)
        if bad:
            total = sum(t.numel() for t in floats)
            raise NonFiniteLossError(
                f"after iteration {iteration} of {self.config.iters}, {bad} of {total} values of the weights and "
                f"optimiser state are NaN or infinite; training stopped and wrote no checkpoint for it, "
                f"{self._last_good()}")

    def _last_good(self) -> str:
        found = list_checkpoints(self.run_dir)
        last = (f"the last checkpoint, {found[-1][1]} (iteration {found[-1][0]}), is intact: fix the cause and "
                f"--resume from it" if found else "no checkpoint was written before")
        return f"{last}. Lower lr, set clip_grad, use amp: none, or check the data"

    # ---------------------------------------------------------------- evaluation
    def evaluate(self) -> dict:
        """Score the model on the validation split; the training RNG is left untouched."""
        c = self.config
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self.pose:
                return evaluate_pose(self.core, self.val_set, c, progress=c.progress and self.dist.is_main)
            return evaluate(self.core, self.val_set, scale=c.scale, mode=c.eval_mode, crop_size=c.eval_crop,
                            stride=c.eval_stride, num_workers=c.num_workers, progress=c.progress and self.dist.is_main)

    # ---------------------------------------------------------------- training
    def _step(self, iteration: int, batches) -> tuple[float, float | None]:
        """One optimiser step over `grad_accum` micro-batches; returns (mean loss over ranks, grad norm)."""
        c, accum = self.config, self.config.grad_accum
        autocast = (torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp]) if self.amp != "none"
                    else contextlib.nullcontext())
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(accum):
            images, labels = next(batches)
            images = images.to(self.device, non_blocking=True)
            labels = _to_device(labels, self.device)
            last = micro == accum - 1
            ddp_model = isinstance(self.model, nn.parallel.DistributedDataParallel)
            sync = self.model.no_sync() if ddp_model and not last else contextlib.nullcontext()
            with sync:
                with autocast:
                    loss = self.loss_fn(self.model, images, labels)
                value = float(ddp.all_reduce_sum(loss.detach().float().reshape(1))) / self.dist.world_size
                if not math.isfinite(value):
                    raise NonFiniteLossError(self._nan_message(iteration, value))
                self.scaler.scale(loss / accum).backward()
            total += value / accum
        grad_norm = None
        if c.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(nn.utils.clip_grad_norm_(self.core.parameters(), c.clip_grad))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total, grad_norm

    def _nan_message(self, iteration: int, value: float) -> str:
        return (f"loss is {value} at iteration {iteration} of {self.config.iters}; training stopped before that "
                f"step (no checkpoint written for it), {self._last_good()}")

    def fit(self) -> dict:
        """Train from the start (or the resumed iteration) to `config.iters`; returns the final metrics."""
        c, main = self.config, self.dist.is_main
        if main:
            self.files.prepare(self.start, self.log_lines, self.overwrite)
        ddp.barrier()
        batches = iter(self.loader)
        bar = tqdm(total=c.iters, initial=self.start, disable=not (main and c.progress), unit="it",
                   dynamic_ncols=True, desc="train")
        losses, norms, busy = [], [], 0.0
        self.model.train()
        try:
            for it in range(self.start + 1, c.iters + 1):  # `it` counts completed steps, from 1
                lr = self.schedule.set(it - 1)
                tick = time.perf_counter()
                loss, grad_norm = self._step(it, batches)
                busy += time.perf_counter() - tick  # data + step, without evaluations and checkpoints
                losses.append(loss)
                if grad_norm is not None:
                    norms.append(grad_norm)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
                if it % c.log_interval == 0 or it == c.iters:
                    record = {"iter": it, "loss": sum(losses) / len(losses), "lr": lr,
                              "sec_per_iter": busy / len(losses)}
                    if norms:
                        record["grad_norm"] = sum(norms) / len(norms)
                    self._log(record)
                    losses, norms, busy = [], [], 0.0
                if c.eval_interval and it % c.eval_interval == 0 and it < c.iters:
                    self._log_eval(it, self.evaluate())
                    self.model.train()
                if it % c.checkpoint_interval == 0 or it == c.iters:  # the last step always: evaluation may fail
                    self._save(it)
        finally:
            bar.close()
        return self._finish()

    def _finish(self) -> dict:
        """The final evaluation, then metrics.json, final/ and the plots. The last iteration's checkpoint is on
        disk already, so when this fails, --resume repeats only this part."""
        try:
            metrics = self.evaluate()
        except Exception:
            if self.dist.is_main:
                log.error("the final evaluation failed; the trained model is safe in %s: fix the cause and run the "
                          "same command with --resume to evaluate it and write final/",
                          checkpoint_path(self.run_dir, self.config.iters))
            raise
        self._log_eval(self.config.iters, metrics)
        if self.dist.is_main:
            self.files.write_results(metrics, self.core, self.pose)
            self.files.close()
        ddp.barrier()
        return metrics

    def _log_eval(self, iteration: int, metrics: dict) -> None:
        if self.pose:
            summary = {k: v for k, v in metrics.items() if k.startswith(("PCK", "AP"))}
            self._log({"iter": iteration, **summary})
            log.info("iteration %d: %s", iteration, "  ".join(f"{k} {v:.2f}" for k, v in summary.items()))
            if self.dist.is_main:
                self.files.keep_best(iteration, summary, self.core)
            return
        summary = {k: metrics[k] for k in ("aAcc", "mIoU", "mAcc")}
        self._log({"iter": iteration, **json_safe(summary)})
        if self.dist.is_main:
            log.info("iteration %d: aAcc %.2f  mIoU %.2f  mAcc %.2f", iteration, *summary.values())
            self.files.keep_best(iteration, summary, self.core)


def train(config: TrainConfig, *, resume: str | Path | None = None, model: nn.Module | None = None,
          train_set=None, val_set=None, overwrite: bool = False) -> dict:
    """Run `config` (see `Trainer`); returns the final validation metrics (`evaluation.IoUMetric.compute`).
    `overwrite` starts over in a run directory that holds a (failed) run. Leaves the process group on the way
    out if this call joined it."""
    joined = not ddp.is_initialized()
    try:
        return Trainer(config, resume=resume, model=model, train_set=train_set, val_set=val_set,
                       overwrite=overwrite).fit()
    finally:
        if joined:
            ddp.destroy()
