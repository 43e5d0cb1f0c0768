"""Fault injection: a 3-iteration training run (a mid-run evaluation, checkpoints at 2 and 3) is SIGKILLed at 7
points: half-way through writing each checkpoint, in the final evaluation (after its first and its last image),
while writing metrics.json and final/, and at one event drawn at random each run (a step, the mid-run
evaluation, ...). Every time, `--resume` (or `--overwrite` when no checkpoint was written yet) completes it to a
result bit-identical to an uninterrupted run, and no temporary file is left behind. (The plots are skipped:
matplotlib is slow and they are not compared.)

One driver process imports torch once and forks the uninterrupted reference run and a child per kill point (the
children share its thread settings, so their arithmetic is the parent's); the parent then resumes each run."""

import json
import random
import subprocess
import sys

import torch
from safetensors import safe_open

DRIVER = r"""
import json, os, random, signal, sys
from pathlib import Path
import torch
import segformer.checkpoints.loader as loader
import segformer.evaluation as evaluation
import segformer.training.checkpoint as checkpoint
import segformer.training.run_files as run_files
import segformer.training.trainer as trainer
from segformer.data.synthetic import write_synthetic
from segformer.training import TrainConfig, train

torch.set_num_threads(1)  # tiny models: one thread is fastest, above all on a shared machine
work = Path(sys.argv[1])
data = write_synthetic(work / "data", num_train=4, num_val=2, min_size=32, max_size=40)
TINY = {"depths": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 32], "num_heads": [1, 1, 1, 1], "decoder_dim": 16}

def config(out):
    return TrainConfig(model="segformer-b0", model_args=TINY, data=str(data), crop_size=(32, 32), batch_size=2,
                       iters=3, lr=1e-3, warmup_iters=1, eval_interval=2, checkpoint_interval=2, log_interval=1,
                       num_workers=0, progress=False, out=str(out))

events, kill_at = [], [None]

def event(name, partial=None):
    # Record an event; SIGKILL (no clean-up of any kind) if it is the chosen one, after cutting `partial` short.
    events.append(name)
    if len(events) == kill_at[0]:
        if partial is not None and os.path.exists(partial):
            with open(partial, "r+b") as f:
                f.truncate(os.path.getsize(partial) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

def hook(module, name, wrap):
    original = getattr(module, name)
    setattr(module, name, wrap(original))

hook(trainer.Trainer, "_step", lambda f: lambda self, it, b: (event(f"step {it}"), f(self, it, b))[1])
hook(evaluation.IoUMetric, "update", lambda f: lambda self, p, l: (f(self, p, l), event("evaluation image"))[0])
def writer(f):
    def atomic_write(path, write, *a, **k):
        def cut(tmp):
            write(tmp)
            event(f"writing {Path(path).name}", partial=tmp)
        return f(path, cut, *a, **k)
    return atomic_write
hook(checkpoint, "atomic_write", writer)
hook(run_files, "write_json", lambda f: lambda path, *a, **k: f(path, *a, **k) if Path(path).name != "metrics.json"
     else (event("writing metrics.json"), f(path, *a, **k))[1])
hook(loader, "write_json", lambda f: lambda path, *a, **k: (event("writing final/"), f(path, *a, **k))[1])
run_files.save_plots = lambda run_dir: None  # matplotlib is slow, and the plots are not compared

def child(run, at):
    pid = os.fork()
    if pid == 0:
        kill_at[0] = at
        try:
            train(config(run))
            os._exit(0)
        except BaseException:
            os._exit(3)
    return os.waitpid(pid, 0)[1]

def list_events():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        train(config(work / "straight"))
        os.write(w, json.dumps(events).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        names = json.loads(f.read())
    assert os.waitpid(pid, 0)[1] == 0
    return names

names = list_events()  # where can it die? the uninterrupted reference run lists the events
first_ckpt = names.index("writing iter_0000002.pt") + 1
last_ckpt = names.index("writing iter_0000003.pt") + 1
final_eval = [i + 1 for i, n in enumerate(names) if n == "evaluation image" and i + 1 > last_ckpt]
required = {first_ckpt, last_ckpt, final_eval[0], final_eval[-1], names.index("writing metrics.json") + 1,
            names.index("writing final/") + 1}
rng = random.Random(int(sys.argv[2]))
others = [i for i in range(1, len(names) + 1) if i not in required]
points = sorted(required | {rng.choice(others)})
results = []
for at in points:
    run = work / f"kill_{at}"
    status = child(run, at)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    has_ckpt = bool(list((run / "checkpoints").glob("iter_*.pt"))) if (run / "checkpoints").exists() else False
    results.append({"at": at, "event": names[at - 1], "killed": killed, "resumed": has_ckpt, "run": str(run)})
for r in results:  # the parent forks no more: it may now use threads itself
    if r["resumed"]:
        train(config(r["run"]), resume="auto")
    else:
        train(config(r["run"]), overwrite=True)
print(json.dumps({"events": names, "results": results}))
"""


def _records(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "sec_per_iter"}
            for line in (run / "log.jsonl").read_text().splitlines()]


def _weights(path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:  # (metadata key order in the file varies between processes)
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_killed_anywhere_resume_completes_bit_identical(tmp_path):
    seed = random.randrange(1000)  # the random kill point differs every run; a failure names it
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), str(seed)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    kinds = {r["event"] for r in results}
    assert len(results) >= 5 and all(r["killed"] for r in results), results
    assert {"writing iter_0000002.pt", "writing iter_0000003.pt", "evaluation image", "writing metrics.json",
            "writing final/"} <= kinds, results
    assert sum(r["resumed"] for r in results) >= 5
    straight = tmp_path / "straight"
    tensors, meta = _weights(straight / "final" / "model.safetensors")
    for r in results:
        run = tmp_path / f"kill_{r['at']}"
        where = f"killed at event {r['at']} ({r['event']}; seed {seed})"
        got, got_meta = _weights(run / "final" / "model.safetensors")
        assert got_meta == meta and got.keys() == tensors.keys(), where
        assert all(torch.equal(got[k], tensors[k]) for k in tensors), where
        assert (run / "final" / "config.json").read_text() == (straight / "final" / "config.json").read_text(), where
        assert json.loads((run / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())
        assert _records(run) == _records(straight), where
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_0000002.pt", "iter_0000003.pt"]
        assert not [p for p in run.rglob("*.tmp")], where  # what the kill left was cleaned up on the way
