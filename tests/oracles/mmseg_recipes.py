"""MMSegmentation 1.2.2 as an oracle for the training recipes: read the SegFormer and SETR configs shipped in the
mmseg wheel and write, per config, the numbers configs/*.yaml must carry (optimiser, schedule, batch, crop,
resize scale, test mode). Run with the MMSegmentation venv's interpreter; the output is stored as a fixture that
tests/test_training_config.py compares our recipes against:

    .venv-mmseg/bin/python tests/oracles/mmseg_recipes.py tests/fixtures/mmseg_recipes.json
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
import mmseg  # noqa: E402
from mmengine.config import Config  # noqa: E402

# our recipe file -> mmseg config (the 8xb2 ADE20K variants: batch 16, as the papers)
RECIPES = {
    **{f"segformer_b{i}_ade20k_512.yaml": f"segformer/segformer_mit-b{i}_8xb2-160k_ade20k-512x512.py"
       for i in range(6)},
    **{f"segformer_b{i}_cityscapes_1024.yaml": f"segformer/segformer_mit-b{i}_8xb1-160k_cityscapes-1024x1024.py"
       for i in range(6)},
    **{f"setr_{d}_ade20k_512.yaml": f"setr/setr_vit-l_{d}_8xb2-160k_ade20k-512x512.py"
       for d in ("naive", "pup", "mla")},
    **{f"setr_{d}_cityscapes_768.yaml": f"setr/setr_vit-l_{d}_8xb1-80k_cityscapes-768x768.py"
       for d in ("naive", "pup", "mla")},
}


def numbers(config: str) -> dict:
    cfg = Config.fromfile(Path(mmseg.__file__).parent / ".mim" / "configs" / config)
    opt = cfg.optim_wrapper.optimizer
    pipe = {p["type"]: p for p in cfg.train_pipeline}
    test = {p["type"]: p for p in cfg.test_pipeline}
    sched = {s["type"]: s for s in cfg.param_scheduler}
    keys = cfg.optim_wrapper.get("paramwise_cfg", {}).get("custom_keys", {})
    return {
        "config": config,
        "optimizer": opt["type"].lower(), "lr": opt["lr"], "weight_decay": opt["weight_decay"],
        "momentum": opt.get("momentum"), "betas": list(opt["betas"]) if "betas" in opt else None,
        "head_lr_mult": keys.get("head", {}).get("lr_mult", 1.0),
        "norm_decay_mult": keys.get("norm", {}).get("decay_mult"),
        "warmup_iters": sched["LinearLR"]["end"] if "LinearLR" in sched else 0,
        "warmup_ratio": sched["LinearLR"]["start_factor"] if "LinearLR" in sched else None,
        "power": sched["PolyLR"]["power"], "min_lr": sched["PolyLR"]["eta_min"],
        "iters": cfg.train_cfg.max_iters, "eval_interval": cfg.train_cfg.val_interval,
        "checkpoint_interval": cfg.default_hooks.checkpoint.interval,
        "batch_size": cfg.train_dataloader.batch_size * 8,  # the "8x" of the config name: 8 GPUs
        "crop_size": list(pipe["RandomCrop"]["crop_size"]), "cat_max_ratio": pipe["RandomCrop"]["cat_max_ratio"],
        "scale": list(pipe["RandomResize"]["scale"]), "ratio_range": list(pipe["RandomResize"]["ratio_range"]),
        "flip_prob": pipe["RandomFlip"]["prob"], "test_scale": list(test["Resize"]["scale"]),
        "eval_mode": cfg.model.test_cfg["mode"], "eval_crop": list(cfg.model.test_cfg.get("crop_size") or []) or None,
        "eval_stride": list(cfg.model.test_cfg.get("stride") or []) or None,
        "drop_path_rate": cfg.model.backbone.get("drop_path_rate"),
        "decode_head": cfg.model.decode_head["type"], "decode_channels": cfg.model.decode_head.get("channels"),
    }


def main(output: str) -> None:
    Path(output).write_text(json.dumps({r: numbers(c) for r, c in RECIPES.items()}, indent=1) + "\n")
    print(f"wrote {len(RECIPES)} recipes to {output}")


if __name__ == "__main__":
    main(*sys.argv[1:])
