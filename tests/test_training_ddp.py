"""DDP for real: `torchrun --nproc-per-node 2` on CPU (gloo) against one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from segformer.training import train
from test_training import TINY, records, tiny_config, write_plain_set


def test_torchrun_two_processes_match_one(tmp_path):
    """Same samples (global batch 4 = 2 processes x 2), dropout and drop-path off, no ignored pixels: after 5
    SGD steps the weights (and BatchNorm statistics, synchronised across the processes) agree within 1e-5.

    SGD, not AdamW: the biases of the decoder's per-stage Linear layers feed a BatchNorm, so their true gradient
    is exactly zero and what remains is float rounding; Adam divides it by its own magnitude and moves those
    biases by +-lr per step in a direction set by rounding noise (in one process as much as in two)."""
    data = write_plain_set(tmp_path / "plain", num_train=8, num_val=2)
    common = dict(model_args={**TINY, "drop_path_rate": 0.0, "decoder_dropout": 0.0}, batch_size=4, iters=5,
                  optimizer="sgd", lr=0.05, weight_decay=1e-4, ratio_range=(1.0, 1.0), warmup_iters=0,
                  eval_interval=0, checkpoint_interval=100)
    train(tiny_config(data, tmp_path / "one", **common))
    config = tiny_config(data, tmp_path / "two", **common)
    path = tmp_path / "two.yaml"
    path.write_text(json.dumps(config.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "segformer.cli", "train", str(path)], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = load_file(tmp_path / "one" / "final" / "model.safetensors")
    two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    assert one.keys() == two.keys()
    diff = {k: (one[k].double() - two[k].double()).abs().max().item() for k in one}
    assert max(diff.values()) < 1e-5, sorted(diff.items(), key=lambda kv: -kv[1])[:3]
    assert two["decode_head.batch_norm.running_mean"].abs().max() > 1e-3  # BatchNorm statistics were updated
    # Only rank 0 wrote: one record per logged iteration; the evaluation covered both ranks' images.
    assert [r["iter"] for r in records(tmp_path / "two") if "loss" in r] == [1, 2, 3, 4, 5]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["num_images"] == 2
    assert metrics["mIoU"] == pytest.approx(json.loads((tmp_path / "one" / "metrics.json").read_text())["mIoU"],
                                            abs=0.5)
    assert torch.isfinite(torch.tensor(metrics["aAcc"]))
