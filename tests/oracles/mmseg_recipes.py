"""MMSegmentation 1.2.2 as an oracle for the training recipes: read the SegFormer and SETR configs shipped in the
mmseg wheel and write, per config, the numbers configs/*.yaml must carry (optimiser, schedule, batch, crop,
resize scale, test mode). Run with the MMSegmentation venv's interpreter; the output is stored as a fixture that
tests/test_training_config.py compares our recipes against:

    .venv-mmseg/bin/python tests/oracles/mmseg_recipes.py tests/fixtures/mmseg_recipes.json \
        tests/fixtures/mmseg_paper_recipes.json

The second file holds the papers' recipes that mmseg ships no config for (configs/papers/*.yaml, checked by
tests/test_more_datasets.py): an mmseg config of the same model and schedule family with the pipelines of mmseg's
dataset config and the paper's (or its official repository's) changes applied, as listed in PAPERS.
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


# paper recipe -> (mmseg config of the model and schedule, mmseg dataset config, changes from the paper's setup)
PAPERS = {
    # SETR-MLA on Pascal Context 60 (SETR paper Table 5: 54.87 single scale, 55.83 multi-scale + flip): the official
    # SETR repository's configs/SETR/SETR_MLA_480x480_80k_pascal_context_bs_16.py on its 80k schedule: SGD lr 0.001,
    # weight decay 0, heads x10, 2 images per GPU on 8 GPUs, 480x480 ViT grid, 60 classes, slide 480 / 320.
    "papers/setr_mla_pascal_context_480.yaml": (
        "setr/setr_vit-l_mla_8xb1-80k_cityscapes-768x768.py", "_base_/datasets/pascal_context.py",
        {"optim_wrapper.optimizer.lr": 0.001, "train_dataloader.batch_size": 2,
         "model.backbone.img_size": (480, 480), "model.decode_head.num_classes": 60,
         "model.test_cfg": {"mode": "slide", "crop_size": (480, 480), "stride": (320, 320)}}),
    # SegFormer-B0 on COCO-Stuff 164k (SegFormer paper section 4.1: 80k iterations on COCO-Stuff, otherwise as ADE20K)
    "papers/segformer_b0_coco_stuff_512.yaml": (
        "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py", "_base_/datasets/coco-stuff164k.py",
        {"train_cfg.max_iters": 80000, "train_cfg.val_interval": 8000, "default_hooks.checkpoint.interval": 8000,
         "param_scheduler.1.end": 80000, "model.decode_head.num_classes": 171}),
}
CONFIGS = Path(mmseg.__file__).parent / ".mim" / "configs"


def compose(config: str, dataset: str, changes: dict) -> Config:
    """`config` with the train/test pipelines of `dataset` and `changes` (dotted keys) applied."""
    cfg, data = Config.fromfile(CONFIGS / config), Config.fromfile(CONFIGS / dataset)
    cfg.train_pipeline, cfg.test_pipeline = data.train_pipeline, data.test_pipeline
    cfg.merge_from_dict(changes, allow_list_keys=True)
    return cfg


def numbers(config: str | Config) -> dict:
    cfg = config if isinstance(config, Config) else Config.fromfile(CONFIGS / config)
    opt = cfg.optim_wrapper.optimizer
    pipe = {p["type"]: p for p in cfg.train_pipeline}
    test = {p["type"]: p for p in cfg.test_pipeline}
    sched = {s["type"]: s for s in cfg.param_scheduler}
    keys = cfg.optim_wrapper.get("paramwise_cfg", {}).get("custom_keys", {})
    return {
        "config": config if isinstance(config, str) else "composed",
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
        "num_classes": cfg.model.decode_head["num_classes"], "img_size": cfg.model.backbone.get("img_size"),
    }


def main(output: str, papers: str | None = None) -> None:
    Path(output).write_text(json.dumps({r: numbers(c) for r, c in RECIPES.items()}, indent=1) + "\n")
    print(f"wrote {len(RECIPES)} recipes to {output}")
    if papers:
        composed = {r: {**numbers(compose(*spec)), "config": " + ".join(spec[:2])} for r, spec in PAPERS.items()}
        Path(papers).write_text(json.dumps(composed, indent=1) + "\n")
        print(f"wrote {len(PAPERS)} paper recipes to {papers}")


if __name__ == "__main__":
    main(*sys.argv[1:])
