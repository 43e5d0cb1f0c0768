"""`segformer train`: train a model from a recipe, flags and overrides."""

from __future__ import annotations

import argparse
import sys

from .common import parse_hw


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model: the papers' recipes (configs/*.yaml), AMP, exact --resume, DDP via torchrun",
        description="Train from a recipe YAML (see configs/), plain flags and --set key=value overrides (later wins). "
                    "The run directory (--out) gets config.yaml, log.jsonl, checkpoints/, final/ (loadable by "
                    "segformer.load_model), metrics.json and plots/. Multi-GPU or multi-process CPU: "
                    "`torchrun --nproc-per-node N $(which segformer) train ...`; --batch-size is the global batch. "
                    "Keys left unset follow the run: warm-up 5%% of --iters, evaluation and checkpoints every fifth, "
                    "workers from the CPUs; --list-keys prints every key with its default and meaning.")
    p.add_argument("config", nargs="?", help="recipe: a YAML file (flat TrainConfig fields) or an installed recipe's "
                                             "name, e.g. segformer_b0_ade20k_512 (the repository's configs/); optional")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (value parsed as YAML), e.g. --set amp=bf16 --set "
                        "model_args.drop_path_rate=0; repeatable")
    p.add_argument("--model", help="zoo name, e.g. segformer-b0, setr-pup (see `segformer models`)")
    p.add_argument("--data", help="dataset root: ADE20K, Cityscapes or folder layout (detected)")
    p.add_argument("--num-classes", type=int, help="class count (default: the dataset's, e.g. from classes.txt)")
    p.add_argument("--crop", type=int, nargs="+", metavar="N", help="training crop: H W, or one int")
    p.add_argument("--batch-size", type=int, help="global batch size (all processes and accumulation steps)")
    p.add_argument("--iters", type=int, help="training iterations")
    p.add_argument("--lr", type=float, help="base learning rate (heads train at head_lr_mult x this)")
    p.add_argument("--out", help="run directory")
    p.add_argument("--pretrained", metavar="SOURCE", help="encoder or full checkpoint: hub id, directory or file")
    p.add_argument("--token-merging", metavar="STRATEGY",
                   help="train (and evaluate) with SegFormer++ token merging: hq, fast, 2x2, downsample, or a strategy "
                        "YAML file; recorded in final/ (the token_merging key)")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also log the scalars to OUT/tensorboard (needs: pip install \"segformer[tensorboard]\")")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                   help="continue exactly from the newest checkpoint in --out (or from CHECKPOINT)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds a run (its run files are deleted; other files stay)")
    p.add_argument("--list-keys", action="store_true",
                   help="list every config key (--set KEY=VALUE, recipe YAML) with its default and meaning, and exit")
    p.set_defaults(func=_run_train)


def _list_keys() -> str:
    """Every TrainConfig key, its default (null: resolved at run time) and what it means."""
    import dataclasses

    from ..training.config import KEY_HELP, TrainConfig

    rows = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        default = list(default) if isinstance(default, tuple) else default
        rows.append((f.name, "null" if default is None else str(default), KEY_HELP[f.name]))
    key_w, def_w = (max(len(r[i]) for r in rows) for i in (0, 1))
    lines = [f"{'key':{key_w}s}  {'default':{def_w}s}  meaning"]
    lines += [f"{k:{key_w}s}  {d:{def_w}s}  {m}" for k, d, m in rows]
    return "\n".join(lines)


def _run_train(args: argparse.Namespace) -> int:
    import logging
    import os

    from tqdm import tqdm

    from ..training import load_config, train
    from ..utils.distributed import launch_env

    class TqdmHandler(logging.Handler):  # log lines above the progress bar instead of through it
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    if args.list_keys:
        print(_list_keys())
        return 0
    main_rank = launch_env()[0] == 0
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("segformer train: %(message)s"))
    logger = logging.getLogger("segformer")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if main_rank else logging.WARNING)
    crop = parse_hw(args.crop, "--crop")
    flags = {"model": args.model, "data": args.data, "num_classes": args.num_classes,
             "crop_size": list(crop) if crop else None, "batch_size": args.batch_size, "iters": args.iters,
             "lr": args.lr, "out": args.out, "pretrained": args.pretrained,
             "token_merging": args.token_merging, "tensorboard": args.tensorboard}
    config = load_config(args.config, flags, args.sets)
    metrics = train(config, resume=args.resume, overwrite=args.overwrite)
    if main_rank:
        length = f"{config.epochs} epochs" if config.epochs else f"{config.iters} iterations"
        scores = "  ".join(f"{k} {metrics[k]:.2f}" for k in ("aAcc", "mIoU", "mAcc", "PCK@0.1", "PCK@0.05")
                           if metrics.get(k) is not None)
        print(f"segformer train: {length}; validation {scores}; run directory {config.out} (final model in "
              f"{os.path.join(config.out, 'final')})")
    return 0
