"""Runtimes: OpenVINO IR and onnxruntime against our PyTorch logits on a tiny model (dynamic H, W, batch),
metadata round trips, the auto choice with the timing mocked, the bf16 guard with the CPU mocked both ways,
and int8 export."""

import warnings

import numpy as np
import pytest
import torch

from segformer.cli import main
from segformer.data import open_dataset, write_synthetic
from segformer.evaluation import evaluate, first_input
from segformer.export import export_onnx
from segformer.preprocess import ImageProcessor
from segformer.runtimes import RuntimeModel, autocast_dtype, load_runner, native_bf16, select_runtime
from segformer.runtimes import precision as precision_mod
from segformer.runtimes import select as select_mod
from segformer.runtimes.base import metadata
from test_export import tiny_model

ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
from segformer.runtimes import openvino as openvino_mod  # noqa: E402
from segformer.runtimes.openvino import export_openvino, openvino_model  # noqa: E402
from segformer.utils.io import atomic_files  # noqa: E402

SHAPES = [(1, 3, 64, 96), (2, 3, 97, 131)]


@pytest.fixture(autouse=True)
def probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGFORMER_CACHE_DIR", str(tmp_path / "cache"))
    precision_mod._warned.clear()


def named_model():
    model = tiny_model()
    model.config.class_names = ["sky", "road", "car", "tree", "person"]
    return model


def assert_matches(model, runner, bound=1e-4):
    for shape in SHAPES:
        x = torch.randn(*shape)
        with torch.inference_mode():
            expected, got = model(x), runner(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= bound


def test_openvino_ir_matches_pytorch_and_keeps_metadata(tmp_path):
    model = named_model()
    processor = ImageProcessor.mmseg((2048, 512), size_divisor=32)
    path = export_openvino(model, tmp_path / "m.xml", processor=processor)
    assert path.with_suffix(".bin").stat().st_size > 4 * sum(p.numel() for p in model.parameters()) * 0.9  # f32
    runner = load_runner(path)
    assert isinstance(runner, RuntimeModel) and runner.runtime == "openvino"
    assert runner.config.class_names == model.config.class_names and runner.config.num_classes == 5
    assert runner.processor == processor
    assert_matches(model, runner)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_openvino(model, path)
    with pytest.raises(ValueError, match=".xml"):
        export_openvino(model, tmp_path / "m.onnx")


def test_openvino_compiles_static_shapes_for_declared_and_repeated_sizes(monkeypatch):
    """Static-shape compiles (OpenVINO merges transposes into reorders only there) give the same logits; a size
    seen once runs on the dynamic compile, a repeated or declared size gets its own, at most MAX_STATIC_SHAPES."""
    monkeypatch.setattr(openvino_mod, "MAX_STATIC_SHAPES", 2)
    model = tiny_model()
    runner = openvino_model(model, static_shapes=[(1, 3, 64, 96)])
    shapes = runner._infer
    assert list(shapes.static) == [(1, 3, 64, 96)] and shapes.dynamic is None
    assert_matches(model, runner)  # (1, 3, 64, 96) static; (2, 3, 97, 131) first seen: dynamic
    assert list(shapes.static) == [(1, 3, 64, 96)] and shapes.dynamic is not None
    assert_matches(model, runner)  # (2, 3, 97, 131) again: compiled static, the oldest kept while under the cap
    assert list(shapes.static) == [(1, 3, 64, 96), (2, 3, 97, 131)]
    for _ in range(2):
        runner(torch.randn(1, 3, 32, 32))
    assert list(shapes.static) == [(2, 3, 97, 131), (1, 3, 32, 32)]  # least recently used dropped
    monkeypatch.setattr(openvino_mod, "MAX_STATIC_COMPILES", 3)
    for _ in range(2):
        runner(torch.randn(1, 3, 32, 64))
    assert list(shapes.static) == [(2, 3, 97, 131), (1, 3, 32, 32)]  # compile budget spent: dynamic from now on
    with pytest.raises(ValueError, match="precision"):
        openvino_model(model, precision="float16")


def test_ir_files_are_written_together_or_not_at_all(tmp_path):
    """NAME.bin then NAME.xml through one temporary folder; a failed write leaves neither, nor a temporary."""
    paths = [tmp_path / "m.bin", tmp_path / "m.xml"]

    def fail(tmp):
        (tmp / "m.bin").write_bytes(b"weights")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_files(paths, fail)
    assert list(tmp_path.iterdir()) == []
    atomic_files(paths, lambda tmp: [(tmp / p.name).write_text(p.suffix) for p in paths])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"] and paths[1].read_text() == ".xml"
    with pytest.raises(FileExistsError, match="overwrite"):
        atomic_files(paths, fail)
    with pytest.raises(ValueError, match="one folder"):
        atomic_files([tmp_path / "a.bin", tmp_path / "sub" / "a.xml"], fail)


def test_onnxruntime_and_openvino_on_our_onnx(tmp_path):
    model = named_model()
    path = export_onnx(model, tmp_path / "m.onnx", size=(64, 64), dynamic=True, metadata=metadata(model))
    for runtime in ("onnxruntime", "openvino"):
        runner = load_runner(path, runtime)
        assert runner.runtime == runtime and runner.config.class_names == model.config.class_names
        assert_matches(model, runner)
    with pytest.raises(ValueError, match="cannot run"):
        load_runner(tmp_path / "m.xml", "onnxruntime")


def test_auto_picks_the_faster_and_caches(monkeypatch):
    model = tiny_model()
    calls, built = [], []

    def fake_build(model, runtime, dtype="float32", size=None):  # the conversion is tested above; this: the decision
        built.append(runtime)
        return RuntimeModel(lambda x: model(torch.from_numpy(x)).numpy(), runtime)

    monkeypatch.setattr(select_mod, "build_runner", fake_build)

    def openvino_faster(candidates):
        calls.append(sorted(candidates))
        return {"torch": 0.2, "openvino": 0.1}

    runner, choice = select_runtime(model, (64, 64), measure=openvino_faster)
    assert choice.runtime == "openvino" and not choice.cached and isinstance(runner, RuntimeModel)
    assert calls == [["openvino", "torch"]] and "openvino" in choice.describe()

    def never(candidates):
        raise AssertionError("the cached verdict must be used")

    runner, choice = select_runtime(model, (64, 64), measure=never)
    assert choice.runtime == "openvino" and choice.cached and choice.seconds == {"torch": 0.2, "openvino": 0.1}
    runner, choice = select_runtime(model, (96, 64), measure=lambda c: {"torch": 0.1, "openvino": 0.3})
    assert choice.runtime == "torch" and runner is model  # another size: probed again
    assert built == ["openvino"] * 3  # probe, cached verdict, probe
    _, choice = select_runtime(model, (128, 64), measure=lambda c: {"torch": 0.3, "openvino": 0.1})
    assert choice.runtime == "openvino"
    monkeypatch.setattr(select_mod, "build_runner", lambda m, r, d="float32", size=None:
                        RuntimeModel(lambda x: x[:, :1], r))
    runner, choice = select_runtime(model, (32, 64), measure=lambda c: {"torch": 0.3, "openvino": 0.1})
    assert runner is model and choice.runtime == "torch" and "differs" in choice.reason  # inexact: never picked


def test_auto_stays_with_torch_when_it_must(monkeypatch):
    model = tiny_model()

    def never(candidates):
        raise AssertionError("no probe expected")

    for kwargs, reason in [({"dtype": "bfloat16"}, "float32"), ({"device": "cuda"}, "GPU")]:
        runner, choice = select_runtime(model, (64, 64), measure=never, **kwargs)
        assert runner is model and choice.runtime == "torch" and reason in choice.reason
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # not installed
    runner, choice = select_runtime(model, (64, 64), measure=never)
    assert runner is model and "not installed" in choice.reason


def test_bf16_capability_mocked_both_ways(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert native_bf16({"avx2", "avx512f", "avx512_bf16"})[0]
    assert native_bf16({"amx_bf16", "amx_tile"})[0]
    native, evidence = native_bf16({"avx2", "avx512f"})
    assert not native and "avx512_bf16" in evidence
    assert not native_bf16({"avx512_bf16"}, onednn_isa="AVX2")[0]
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert autocast_dtype("bfloat16", "cpu", flags={"avx2"}) == "float32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert autocast_dtype("bfloat16", "cpu", flags={"avx2"}) == "float32"
        assert autocast_dtype("bfloat16", "cuda", flags={"avx2"}) == "bfloat16"  # GPUs pass through
        assert autocast_dtype("bfloat16", "cpu", flags={"avx512_bf16"}) == "bfloat16"
        model = tiny_model()
        fast = autocast_dtype("bfloat16", "cpu", model, (64, 64), flags={"avx512_bf16"},
                              measure=lambda c: {"float32": 0.2, "bfloat16": 0.1})
        assert fast == "bfloat16"
    with pytest.warns(RuntimeWarning, match="slower than float32"):
        slow = autocast_dtype("bfloat16", "cpu", model, (96, 64), flags={"avx512_bf16"},
                              measure=lambda c: {"float32": 0.1, "bfloat16": 0.3})
    assert slow == "float32"
    monkeypatch.setenv("SEGFORMER_FORCE_BF16", "1")
    assert autocast_dtype("bfloat16", "cpu", flags={"avx2"}) == "bfloat16"


def test_cli_runtimes_agree(tmp_path, capsys):
    model = tiny_model()
    model.reset_head(6)  # the synthetic set's classes
    model.save_pretrained(tmp_path / "model")
    root = write_synthetic(tmp_path / "synth", num_train=0, num_val=3, seed=1, min_size=48, max_size=72)
    images = str(root / "images" / "val")
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "openvino", "--out",
                 str(tmp_path / "m.xml"), "--size", "64x96"]) == 0
    diffs = [float(line.split()[-1]) for line in capsys.readouterr().out.splitlines() if "difference" in line]
    assert len(diffs) == 2 and max(diffs) <= 1e-4
    labels = {}
    for name, source, runtime in [("torch", "model", "torch"), ("ov", "model", "openvino"), ("xml", "m.xml", "auto")]:
        assert main(["predict", images, "--model", str(tmp_path / source), "--out", str(tmp_path / name),
                     "--resize", "none", "--runtime", runtime, "--no-overlay"]) == 0
        assert f"runtime {runtime if runtime != 'auto' else 'openvino'}" in capsys.readouterr().err
        labels[name] = [np.array(__import__("PIL.Image").Image.open(p)) for p in sorted((tmp_path / name).glob("*"))]
    assert len(list((tmp_path / "cache" / "openvino").glob("*.xml"))) == 1  # the converted model, kept
    for name in ("ov", "xml"):
        assert all((a == b).all() for a, b in zip(labels["torch"], labels[name], strict=True))
    dataset = open_dataset(root, "val", num_classes=6)
    ours = evaluate(model, dataset, progress=False)
    theirs = evaluate(load_runner(tmp_path / "m.xml"), dataset, progress=False)
    assert ours["aAcc"] == theirs["aAcc"] and ours["IoU"] == theirs["IoU"]


def test_int8_export_quantizes_encoder_linears(tmp_path, capsys):
    model = tiny_model()
    model.reset_head(6)
    model.save_pretrained(tmp_path / "model")
    root = write_synthetic(tmp_path / "synth", num_train=0, num_val=4, seed=2, min_size=64, max_size=96)
    out = tmp_path / "int8.xml"
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "openvino", "--out", str(out),
                 "--int8", "--calib", str(root), "--calib-size", "4", "--size", "64"]) == 0
    assert "calibrating on 4 of 4 images" in capsys.readouterr().out
    ir = ov.Core().read_model(str(out))
    quantized = {op.get_friendly_name() for op in ir.get_ops() if op.get_type_name() == "FakeQuantize"}
    assert quantized and all("decode_head" not in name for name in quantized)
    assert ir.get_rt_info(["segformer", "quantization"]).astype(str) == "int8"
    runner = load_runner(out)
    x = first_input(open_dataset(root, "val"), index=1)[None]  # in the calibration distribution
    with torch.inference_mode():
        expected, got = model(x), runner(x)
    # a random 8-channel model's logits are small noise, so only a loose agreement is asked for here; the
    # accuracy cost on a trained model is measured in benchmarks/int8_accuracy.py (RESULTS.md)
    corr = float(np.corrcoef(got.flatten().numpy(), expected.flatten().numpy())[0, 1])
    assert got.shape == expected.shape and corr >= 0.5, corr
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "openvino", "--out",
                 str(tmp_path / "x.xml"), "--int8"]) == 2
    assert "--calib" in capsys.readouterr().err
