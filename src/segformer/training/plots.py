"""PNG plots of a run from its `log.jsonl` and `metrics.json` (matplotlib, Agg backend: no display needed):
loss and learning rate per iteration, aAcc / mIoU / mAcc per evaluation, and the final per-class IoU."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..utils.io import atomic_write

log = logging.getLogger(__name__)


def read_log_records(path: Path) -> list[dict]:
    """The records of a `log.jsonl`; a line cut short by a killed process is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "iter" in record:
            records.append(record)
    return records


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(training records, evaluation records) of a `log.jsonl`: the ones with a loss, and the others."""
    records = read_log_records(path)
    return [r for r in records if "loss" in r], [r for r in records if "loss" not in r]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_plots(run_dir: str | Path) -> list[Path]:
    """Write plots/{loss,miou,per_class_iou}.png (pose: loss, pck) for the run in `run_dir`; returns the files written
    (none, with a warning, when matplotlib is not installed)."""
    plt = _pyplot()
    if plt is None:
        log.warning("matplotlib is not installed: no plots written (pip install matplotlib)")
        return []
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    train, evals = read_log(run_dir / "log.jsonl")
    written = []
    if train:
        fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        iters = [r["iter"] for r in train]
        ax_loss.plot(iters, [r["loss"] for r in train], color="tab:blue")
        ax_loss.set_ylabel("training loss")
        ax_loss.grid(alpha=0.3)
        ax_lr.plot(iters, [r["lr"] for r in train], color="tab:orange")
        ax_lr.set_ylabel("learning rate")
        ax_lr.set_xlabel("iteration")
        ax_lr.grid(alpha=0.3)
        written.append(_save(fig, out / "loss.png", plt))
    if evals:
        written.append(_eval_plot(evals, out, plt))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    if "IoU" in metrics:
        names, values = list(metrics["IoU"]), list(metrics["IoU"].values())
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
        ax.bar(range(len(names)), [v or 0.0 for v in values], color="tab:green")
        if len(names) <= 40:  # readable labels: the value, or n/a for a class absent from the validation set
            for i, v in enumerate(values):
                ax.text(i, (v or 0.0) + 1, "n/a" if v is None else f"{v:.1f}", ha="center", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 8 else 0, fontsize=8)
        ax.set_ylabel("IoU (%)")
        ax.set_ylim(0, 105)
        miou = metrics.get("mIoU")
        ax.set_title(f"per-class IoU at iteration {metrics.get('iteration')}"
                     + (f" (mIoU {miou:.2f})" if miou is not None else ""))
        ax.grid(axis="y", alpha=0.3)
        written.append(_save(fig, out / "per_class_iou.png", plt))
    return written


def _eval_plot(evals: list[dict], out: Path, plt) -> Path:
    """miou.png (mIoU, mAcc, aAcc) or, for pose runs, pck.png (PCK@0.1, PCK@0.05) over the evaluations."""
    pose = "PCK@0.1" in evals[0]
    fig, ax = plt.subplots(figsize=(8, 4))
    iters = [r["iter"] for r in evals]
    for key in ("PCK@0.1", "PCK@0.05") if pose else ("mIoU", "mAcc", "aAcc"):
        ax.plot(iters, [r.get(key) if r.get(key) is not None else float("nan") for r in evals], marker="o", label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("percent")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out / ("pck.png" if pose else "miou.png"), plt)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
