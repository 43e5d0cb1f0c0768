"""MMSegmentation 1.2.2 SETR as an oracle, for inputs of several sizes from ONE randomly initialised model
(ViT-L is slow to build, save and run on CPU, so it is built once). Reuses `mmseg_oracle.py` (config loading,
SyncBN -> BN, weight randomisation) and, like it, runs only under the MMSegmentation venv:

    .venv-mmseg/bin/python tests/oracles/mmseg_setr_oracle.py \\
        --config setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py --checkpoint pup.pth --output out \\
        --input-shape 1 3 512 512 --input-shape 1 3 384 512 [--num-classes 7] [--cfg-options JSON] [--seed 0]
    .venv-mmseg/bin/python tests/oracles/mmseg_setr_oracle.py --jobs JOBS.json   # many, one interpreter start

Writes the checkpoint (mmseg layout, `meta` + `state_dict`) and, per input shape i, `<output>_<i>.npz` with
input, logits (decode head, native resolution) and aux_logits_<j> (each auxiliary head); plus num_params
(whole model) in every file. Inputs are standard normal from seed 1000 + i (already normalised pixels).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import mmseg_oracle  # noqa: F401  (sibling script: loads the mmcv-lite shim before mmseg)
import numpy as np
import torch
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from torch import nn


def run(job: dict) -> None:
    from mmseg.registry import MODELS

    cfg = mmseg_oracle.load_config(job["config"], job.get("num_classes"), job.get("cfg_options"))
    init_default_scope(cfg.get("default_scope", "mmseg"))
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    seed = int(job.get("seed", 0))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    mmseg_oracle.randomise(model, seed)
    torch.save({"meta": {"config": cfg.pretty_text}, "state_dict": model.state_dict()}, job["checkpoint"])
    model.eval()
    num_params = np.array(sum(p.numel() for p in model.parameters()))
    aux = model.auxiliary_head if isinstance(model.auxiliary_head, nn.ModuleList) else [model.auxiliary_head]
    for i, shape in enumerate(job["input_shapes"]):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1000 + i))
        out = {"input": x.numpy(), "num_params": num_params}
        with torch.no_grad():
            feats = model.extract_feat(x)  # backbone (+ neck)
            out["logits"] = model.decode_head(feats).numpy()
            for j, head in enumerate(aux):
                out[f"aux_logits_{j}"] = head(feats).numpy()
        np.savez(Path(f"{job['output']}_{i}.npz"), **out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", help="JSON file: a list of jobs, each a dict of the options below "
                                       "(dashes as underscores, input_shapes a list of shapes)")
    parser.add_argument("--config")
    parser.add_argument("--checkpoint")
    parser.add_argument("--output", help="prefix of the .npz files")
    parser.add_argument("--input-shape", dest="input_shapes", type=int, nargs=4, action="append")
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--cfg-options", type=json.loads)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.jobs:
        jobs = json.loads(Path(args.jobs).read_text())
    elif args.config and args.checkpoint and args.output and args.input_shapes:
        jobs = [vars(args)]
    else:
        parser.error("give --jobs FILE, or --config, --checkpoint, --output and at least one --input-shape")
    for job in jobs:
        run(job)


if __name__ == "__main__":
    main()
