"""bf16 vs float32 end to end on the CPU (issue 19): `segformer predict` on 20 photos of mixed sizes with
`--resize none`, and a training step (forward + backward + AdamW) at batch 2.

    .venv/bin/python benchmarks/bf16_end_to_end.py --model segformer-b0 --rounds 2

Each variant runs in its own process, alternating round by round (medians of the rounds):
- "native": this CPU as it is;
- "no native bf16": oneDNN limited to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`), i.e. what a CPU without AVX-512
  (an EPYC before Zen 4) gets: no bf16 instructions for any matmul or convolution.
In each, bf16 runs once as the user gets it (our guard: float32 where bf16 would be slower) and once forced
(`SEGFORMER_FORCE_BF16=1`, the old behaviour). Predict times are the command's own image loop.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

import segformer

SIZES = [(240, 320), (300, 400), (375, 500), (480, 640), (360, 360), (512, 384), (427, 640), (333, 250),
         (600, 450), (256, 512)] * 2
ENVS = {"native": {}, "no native bf16 (oneDNN AVX2)": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
TRAIN = """
import sys, time, torch, segformer
from segformer.bench import benchmark
from segformer.runtimes import autocast_dtype
model = segformer.create_model(sys.argv[1], num_classes=150)
dtype = autocast_dtype(sys.argv[2], "cpu")
size = int(sys.argv[3])
r = benchmark(model, size, size, batch=2, dtype=dtype, runs=3, warmup=1, train=True)
print(f"TRAIN {r['latency_median_s']:.4f} {dtype}")
"""


def photos(folder: Path, scale: float) -> Path:
    """20 photos of mixed sizes: the packaged cat picture resized (aspect varies), sides times `scale`."""
    cat = Image.open(Path(segformer.__file__).parent / "assets" / "chelsea.jpg").convert("RGB")
    for i, (h, w) in enumerate(SIZES):
        cat.resize((round(w * scale), round(h * scale)), Image.BILINEAR).save(folder / f"photo_{i:02d}.jpg")
    return folder


def run(cmd: list[str], env: dict) -> str:
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return out.stdout + out.stderr


def predict_s(model: str, images: Path, out: Path, dtype: str, env: dict) -> float:
    text = run([sys.executable, "-m", "segformer.cli", "predict", str(images), "--model", model, "--out", str(out),
                "--resize", "none", "--dtype", dtype, "--runtime", "torch", "--overwrite", "--no-overlay"], env)
    return float(re.search(r"failed, ([0-9.]+) s", text).group(1))


def train_s(model: str, dtype: str, size: int, env: dict) -> float:
    text = run([sys.executable, "-c", TRAIN, model, dtype, str(size)], env)
    return float(re.search(r"TRAIN ([0-9.]+)", text).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segformer-b0", help="zoo name or trained model folder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--photo-scale", type=float, default=1.0, help="multiply the photos' sides (a loaded machine)")
    parser.add_argument("--cpus", nargs="+", default=list(ENVS), choices=list(ENVS), help="which CPU settings")
    parser.add_argument("--train-size", type=int, default=256, help="training crop (batch 2)")
    args = parser.parse_args()
    variants = {"float32": ("float32", {}), "bf16 (guarded)": ("bfloat16", {}),
                "bf16 (forced)": ("bfloat16", {"SEGFORMER_FORCE_BF16": "1"})}
    times: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        images = photos(Path(tmp), args.photo_scale)
        model = args.model
        if model in segformer.list_models():  # random weights, saved so that `predict` loads them offline
            model = str(segformer.create_model(model, num_classes=150).save_pretrained(Path(tmp) / "model"))
        for _ in range(args.rounds):
            for env_name, env in ((k, ENVS[k]) for k in args.cpus):
                for name, (dtype, extra) in variants.items():
                    full = {**env, **extra, "SEGFORMER_CACHE_DIR": ""}
                    key = (env_name, name)
                    times.setdefault(key, {"predict": [], "train": []})
                    times[key]["predict"].append(predict_s(model, images, Path(tmp) / "out", dtype, full))
                    times[key]["train"].append(train_s("segformer-b0", dtype, args.train_size, full))
                    print(env_name, name, {k: v[-1] for k, v in times[key].items()}, flush=True)
    print(f"\n| CPU | run | predict 20 photos x{args.photo_scale:g} (s) | vs float32 | B0 train step "
          f"2x{args.train_size}x{args.train_size} (s) | vs float32 |")
    print("|---|---|---|---|---|---|")
    for (env_name, name), t in times.items():
        base = times[(env_name, "float32")]
        p, b = statistics.median(t["predict"]), statistics.median(base["predict"])
        s, bs = statistics.median(t["train"]), statistics.median(base["train"])
        print(f"| {env_name} | {name} | {p:.2f} | {b / p:.2f}x | {s:.3f} | {bs / s:.2f}x |")
    print("(speed-ups over float32: above 1 is faster)")


if __name__ == "__main__":
    main()
