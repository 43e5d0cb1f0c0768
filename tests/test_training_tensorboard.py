"""`--tensorboard`: the scalars a short run logs to log.jsonl are readable back from its TensorBoard events
(tensorboard's own EventAccumulator); without the package the flag stops the run before any work, saying how to
install it."""

import sys

import pytest

from segformer import cli
from segformer.data.synthetic import write_synthetic
from test_training import TINY, records, tiny_config

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (make test installs it)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("synth") / "data", num_train=4, num_val=2, min_size=24,
                           max_size=40)


def test_scalars_read_back_equal_the_log(synth, tmp_path):
    import json

    run = tmp_path / "run"
    args = ["train", "--data", str(synth), "--out", str(run), "--iters", "4", "--batch-size", "2", "--crop", "32",
            "--tensorboard", "--set", "num_workers=0", "--set", "progress=false", "--set", "eval_interval=2",
            "--set", "log_interval=1", "--set", f"model_args={json.dumps(TINY)}"]
    assert cli.main(args) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/sec_per_iter", "val/mIoU", "val/aAcc", "val/mAcc"} <= tags
    log = records(run)
    for group, key in (("train", "loss"), ("train", "lr"), ("val", "mIoU")):
        expected = [(r["iter"], r[key]) for r in log if key in r]
        got = [(e.step, e.value) for e in events.Scalars(f"{group}/{key}")]
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert all(abs(v - w) <= 1e-6 * max(1.0, abs(w)) for (_, v), (_, w) in zip(got, expected, strict=True))


def test_missing_package_is_a_clear_error(synth, tmp_path, monkeypatch):
    from segformer.training import train

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    run = tmp_path / "run"
    with pytest.raises(ImportError, match=r'--tensorboard\) needs the tensorboard package, which is not installed: '
                                          r'pip install "segformer\[tensorboard\]"'):
        train(tiny_config(synth, run, tensorboard=True))
    assert not (run / "log.jsonl").exists()
