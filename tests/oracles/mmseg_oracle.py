"""MMSegmentation 1.2.2 as an oracle: build a model from a config shipped in the mmseg wheel, give it random
weights, save them in mmseg's checkpoint layout and run an input through it ("build"); or load a checkpoint
someone else wrote into such a model, strictly, the way mmseg's own `init_model` does, and run it ("load").

Run it with the MMSegmentation venv's interpreter, never import it from the test suite:

    .venv-mmseg/bin/python tests/oracles/mmseg_oracle.py build \\
        --config segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py --num-classes 150 \\
        --input-shape 2 3 97 131 --checkpoint b0.pth --output b0.npz [--classes ade20k] [--seed 0]
    .venv-mmseg/bin/python tests/oracles/mmseg_oracle.py load \\
        --config segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py --num-classes 7 \\
        --checkpoint ours.pth --input x.npy --output ours.npz
    .venv-mmseg/bin/python tests/oracles/mmseg_oracle.py jobs JOBS.json   # many jobs, one interpreter start

Options (in a JOBS.json file each job is a dict with the same names, dashes as underscores, plus "mode"):
  --config        path relative to mmseg/.mim/configs (e.g. setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py)
  --num-classes   sets decode_head.num_classes and every auxiliary head's
  --cfg-options   dotted config overrides as JSON, applied last, e.g. '{"model.backbone.img_size": [64, 64]}'
  --input         .npy float32 (B, 3, H, W) pixel values, already normalised (fed to the backbone as is), or
  --input-shape   B 3 H W: standard-normal input from --input-seed (default 0), saved as "input" in the output
  --seed          weight seed (build; default 0)
  --checkpoint    build: written here; load: read from here (mmseg's init_model, then a strict load_state_dict)
  --classes       build: class names for the meta: a dataset name mmseg knows ("ade20k", "cityscapes") or a
                  comma-separated list (in a JOBS.json file: a list)
  --meta-style    build: "1.x" (meta.dataset_meta.{classes, palette}, default) or "0.x" (meta.CLASSES/PALETTE,
                  as the mmseg 0.x / NVlabs checkpoints on download.openmmlab.com)
  --output        .npz written with every array below

Output arrays: input; logits = decode_head(extract_feat(x)) at the head's native resolution; seg_logits =
model.inference(x, metas) (honours test_cfg: whole or slide, resized to the input); features_<i> = backbone
outputs (after the neck, if any, as neck_<i>); aux_logits_<i> for auxiliary heads; num_params and
num_params_<part> (backbone, neck, decode_head, auxiliary_head); classes (build: the names written into the
meta; load: what mmseg's init_model put in dataset_meta); state_keys (the model's state_dict keys).

Build randomises every weight, including BN running statistics and LayerNorm affines, so that no layer is
the identity and every key of the mapping matters. SyncBN is replaced by BN; pretrained / init_cfg are off.

The mmcv-lite shim is the sibling script mmcv_ops_shim.py (tests/oracles/).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import mmcv_ops_shim  # noqa: E402,F401  (sibling script; must precede any mmseg import)
import numpy as np

warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")  # mmcv-lite: not used here
import mmseg  # noqa: E402
import torch  # noqa: E402
from mmengine import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from torch import nn  # noqa: E402

CONFIG_ROOT = Path(mmseg.__file__).parent / ".mim" / "configs"


def load_config(config: str, num_classes: int | None, cfg_options: dict | None) -> Config:
    path = CONFIG_ROOT / config
    if not path.is_file():
        raise SystemExit(f"mmseg_oracle: no config {config!r} under {CONFIG_ROOT}")
    cfg = Config.fromfile(str(path))
    _sync_bn_to_bn(cfg.model)
    cfg.model.pretrained = None
    cfg.model.backbone.init_cfg = None
    if num_classes is not None:
        cfg.model.decode_head.num_classes = num_classes
        aux = cfg.model.get("auxiliary_head")
        for head in aux if isinstance(aux, list) else [aux] if aux else []:
            head.num_classes = num_classes
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _sync_bn_to_bn(node: object) -> None:
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for value in node.values():
            _sync_bn_to_bn(value)
    elif isinstance(node, list | tuple):
        for value in node:
            _sync_bn_to_bn(value)


def randomise(model: nn.Module, seed: int) -> None:
    """Random weights everywhere: init_weights, then random biases, norm affines and BN statistics."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=t.dtype)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.02 * rand(p))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * rand(m.running_mean))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(0.1 * rand(m.bias))
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, nn.LayerNorm | nn.GroupNorm) and m.weight is not None:
                m.weight.copy_(1.0 + 0.1 * rand(m.weight))
                m.bias.copy_(0.1 * rand(m.bias))


def class_meta(classes: str | list[str] | None, num_classes: int, style: str) -> dict:
    from mmseg.utils import get_classes, get_palette

    if classes is None:
        return {}
    if isinstance(classes, str) and "," not in classes:
        names, palette = tuple(get_classes(classes)), [list(c) for c in get_palette(classes)]
    else:
        names = tuple(classes.split(",") if isinstance(classes, str) else classes)
        palette = [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(len(names))]
    if len(names) != num_classes:
        raise SystemExit(f"mmseg_oracle: {len(names)} class names for a {num_classes}-class head")
    if style == "0.x":
        return {"CLASSES": names, "PALETTE": palette, "mmseg_version": "0.11.0"}
    return {"dataset_meta": {"classes": names, "palette": palette}, "mmseg_version": mmseg.__version__}


def make_input(job: dict) -> torch.Tensor:
    if job.get("input"):
        return torch.from_numpy(np.load(job["input"]).astype(np.float32))
    g = torch.Generator().manual_seed(int(job.get("input_seed", 0)))
    return torch.randn(*job["input_shape"], generator=g)


def run_job(job: dict) -> None:
    from mmseg.apis import init_model
    from mmseg.registry import MODELS

    mode = job["mode"]
    cfg = load_config(job["config"], job.get("num_classes"), job.get("cfg_options"))
    init_default_scope(cfg.get("default_scope", "mmseg"))
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every parameter otherwise
    out: dict[str, np.ndarray] = {}
    if mode == "build":
        torch.manual_seed(int(job.get("seed", 0)))
        model = MODELS.build(cfg.model)
        model.init_weights()
        randomise(model, int(job.get("seed", 0)))
        meta = class_meta(job.get("classes"), model.decode_head.num_classes, job.get("meta_style", "1.x"))
        names = meta.get("CLASSES") or meta.get("dataset_meta", {}).get("classes")
        if names:
            out["classes"] = np.array(list(names), dtype=str)
        meta["config"] = cfg.pretty_text
        torch.save({"meta": meta, "state_dict": model.state_dict()}, job["checkpoint"])
    elif mode == "load":
        model = init_model(cfg, job["checkpoint"], device="cpu")  # what mmseg users call
        ckpt = torch.load(job["checkpoint"], map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt.get("state_dict", ckpt), strict=True)  # raises on any missing/extra key
        out["classes"] = np.array(list(model.dataset_meta["classes"]), dtype=str)
    else:
        raise SystemExit(f"mmseg_oracle: unknown mode {mode!r}; accepted: build, load")
    model.eval()
    x = make_input(job)
    b, _, h, w = x.shape
    metas = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)) for _ in range(b)]
    with torch.no_grad():
        feats = model.backbone(x)
        for i, f in enumerate(feats):
            out[f"features_{i}"] = f.numpy()
        if model.with_neck:
            feats = model.neck(feats)
            for i, f in enumerate(feats):
                out[f"neck_{i}"] = f.numpy()
        out["logits"] = model.decode_head(feats).numpy()
        aux = getattr(model, "auxiliary_head", None)
        for i, head in enumerate(aux if isinstance(aux, nn.ModuleList) else [aux] if aux is not None else []):
            out[f"aux_logits_{i}"] = head(feats).numpy()
        out["seg_logits"] = model.inference(x, metas).numpy()
    out["input"] = x.numpy()
    out["num_params"] = np.array(sum(p.numel() for p in model.parameters()))
    for part in ("backbone", "neck", "decode_head", "auxiliary_head"):
        if getattr(model, part, None) is not None:
            out[f"num_params_{part}"] = np.array(sum(p.numel() for p in getattr(model, part).parameters()))
    out["state_keys"] = np.array(list(model.state_dict()), dtype=str)
    np.savez(job["output"], **out)


def parse_args(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    jobs = sub.add_parser("jobs", help="run every job of a JSON file (a list of dicts, or one dict)")
    jobs.add_argument("file")
    for mode in ("build", "load"):
        p = sub.add_parser(mode)
        p.add_argument("--config", required=True)
        p.add_argument("--num-classes", type=int)
        p.add_argument("--cfg-options", type=json.loads)
        p.add_argument("--input")
        p.add_argument("--input-shape", type=int, nargs=4)
        p.add_argument("--input-seed", type=int, default=0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--classes")
        p.add_argument("--meta-style", choices=["1.x", "0.x"], default="1.x")
        p.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if args.mode == "jobs":
        data = json.loads(Path(args.file).read_text())
        return data if isinstance(data, list) else [data]
    return [vars(args)]


def main(argv: list[str] | None = None) -> None:
    for job in parse_args(sys.argv[1:] if argv is None else argv):
        if not job.get("input") and not job.get("input_shape"):
            raise SystemExit("mmseg_oracle: give --input (a .npy file) or --input-shape B 3 H W")
        run_job(job)


if __name__ == "__main__":
    main()
