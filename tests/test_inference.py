"""Inference engine: sliding-window arithmetic and parity with MMSegmentation, whole-image parity with transformers,
multi-scale + flip bookkeeping, bounded memory, dtypes and devices, sharding, and `segformer predict`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import segformer
from helpers import run_oracle
from segformer import inference
from segformer.cli import main
from segformer.cli.files import shard
from segformer.inference import multiscale, predict, run_model, slide, whole, window_starts
from segformer.inference.labels import argmax_at
from segformer.preprocess import ImageProcessor


def tiny(num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return segformer.create_model("segformer-b0", depths=(1, 1, 1, 1), embed_dims=(8, 16, 40, 64), decoder_dim=16,
                                  num_classes=num_classes).eval()


class Cheap(torch.nn.Module):
    """Logits at 1/4 of the input, like SegFormer, for almost no compute."""

    def __init__(self, num_classes: int, symmetric: bool = False):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, 3, padding=1)
        if symmetric:  # a left-right symmetric kernel makes the model flip-equivariant
            self.conv.weight.data = (self.conv.weight.data + self.conv.weight.data.flip(-1)) / 2

    def forward(self, x):
        return F.avg_pool2d(self.conv(x), 4)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def normalised(image: np.ndarray) -> torch.Tensor:
    return ImageProcessor(size=None)(image)["pixel_values"]


# ---- sliding window ---------------------------------------------------------------------------------------------

def mmseg_slide(model, x, crop, stride):
    """mmseg 1.2.2's `slide_inference` loop, re-derived: windows clamped to the edge, sums over a count map."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    batch, _, h_img, w_img = x.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds, count = None, torch.zeros(batch, 1, h_img, w_img)
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            with torch.no_grad():
                logits = F.interpolate(model(x[:, :, y1:y2, x1:x2]), size=(y2 - y1, x2 - x1), mode="bilinear",
                                       align_corners=False)
            preds = torch.zeros(batch, logits.shape[1], h_img, w_img) if preds is None else preds
            preds += F.pad(logits, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


@pytest.mark.parametrize("size,crop,stride", [(640, 512, 341), (1024, 1024, 768), (100, 128, 64), (97, 32, 21),
                                              (512, 512, 341), (513, 512, 512), (1, 1, 1)])
def test_window_starts_follow_mmseg(size, crop, stride):
    starts = window_starts(size, crop, stride)
    expected = []
    for i in range(max(size - crop + stride - 1, 0) // stride + 1):
        end = min(i * stride + crop, size)
        expected.append(max(end - crop, 0))
    assert starts == expected
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s:s + crop] = True
    assert covered.all() and min(starts[-1] + crop, size) == size


@pytest.mark.parametrize("shape,crop,stride,batch_size", [
    ((2, 3, 100, 140), (64, 64), (43, 43), 1),  # 3 x 3 windows, clamped last ones
    ((1, 3, 97, 64), (64, 48), (20, 16), 1),  # overlap more than half the crop, several rows carried
    ((1, 3, 50, 40), (64, 64), (43, 43), 1),  # image smaller than the crop: one window, no padding
    ((2, 3, 100, 140), (64, 48), (30, 48), 4),  # batched windows, stride == crop along w
])
def test_slide_equals_mmseg_loop(shape, crop, stride, batch_size):
    model, x = tiny(), torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    got, expected = slide(model, x, crop, stride, batch_size=batch_size), mmseg_slide(model, x, crop, stride)
    assert got.shape == expected.shape == (shape[0], 5, *shape[2:])
    # float rounding only: the last two rows add up in another order, and batched convolutions round differently
    assert (got - expected).abs().max().item() <= 1e-5


def test_slide_rejects_windows_that_leave_gaps():
    with pytest.raises(ValueError, match=r"stride \(40, 40\) larger than crop_size \(32, 32\)"):
        slide(Cheap(3), torch.zeros(1, 3, 64, 64), (32, 32), (40, 40))


@pytest.mark.mmseg
@pytest.mark.slow
def test_slide_matches_mmseg_slide_inference(tmp_path, mmseg_python):
    """Acceptance: SegFormer-B0 weights saved by mmseg, 640x896, crop 512, stride 341: max |diff| <= 1e-4."""
    slide_cfg = {"model.test_cfg": {"mode": "slide", "crop_size": [512, 512], "stride": [341, 341]}}
    run_oracle("mmseg_oracle.py", ["build", "--config", "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
                                   "--num-classes", "150", "--cfg-options", json.dumps(slide_cfg), "--input-shape",
                                   "1", "3", "640", "896", "--checkpoint", str(tmp_path / "b0.pth"), "--output",
                                   str(tmp_path / "b0.npz")])
    ref = np.load(tmp_path / "b0.npz")
    model = segformer.load_model(tmp_path / "b0.pth").eval()
    assert model.config.decoder_style == "mmseg" and model.config.num_classes == 150
    got = slide(model, torch.from_numpy(ref["input"]), (512, 512), (341, 341))
    assert got.shape == ref["seg_logits"].shape == (1, 150, 640, 896)
    assert (got - torch.from_numpy(ref["seg_logits"])).abs().max().item() <= 1e-4


# ---- whole image, multi-scale, flip ---------------------------------------------------------------------------

def test_whole_mode_labels_equal_transformers_post_processing(tmp_path, monkeypatch):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessorPil

    torch.manual_seed(0)
    ref = SegformerForSemanticSegmentation(SegformerConfig(
        hidden_sizes=[8, 16, 40, 64], depths=[1, 1, 1, 1], decoder_hidden_size=16, num_labels=6)).eval()
    ref.save_pretrained(tmp_path)
    ours = segformer.load_model(tmp_path)
    processor = SegformerImageProcessorPil()
    for image in (rgb(75, 113), rgb(333, 250, seed=1)):
        with torch.no_grad():
            outputs = ref(**processor(images=image, return_tensors="pt"))
        expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.shape[:2]])[0]
        assert np.array_equal(predict(ours, image), expected.numpy())
        monkeypatch.setattr(inference.labels, "_CHUNK_BYTES", 1)  # one class at a time: still the same labels
        assert np.array_equal(predict(ours, image), expected.numpy())
        monkeypatch.undo()


def test_flip_averaging_on_a_flip_equivariant_model_changes_nothing():
    model = Cheap(4, symmetric=True)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    scales = (0.5, 1.0, 1.5)  # every scaled width stays a multiple of the model's stride 4
    flipped, plain = multiscale(model, x, scales, flip=True), multiscale(model, x, scales, flip=False)
    assert (flipped - plain).abs().max().item() <= 1e-6
    assert (plain - plain.flip(-1)).abs().max().item() > 1e-2  # the output is not itself symmetric


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_multiscale_equals_direct_computation(mode):
    model = Cheap(5)
    x = torch.randn(1, 3, 60, 84, generator=torch.Generator().manual_seed(0))
    scales = (0.75, 1.25)
    expected = torch.zeros(1, 5, 60, 84)
    for s in scales:
        xs = F.interpolate(x, size=(int(60 * s + 0.5), int(84 * s + 0.5)), mode="bilinear", align_corners=False)
        for flip in (False, True):
            inp = xs.flip(-1) if flip else xs
            logits = mmseg_slide(model, inp, (48, 48), (32, 32)) if mode == "slide" else F.interpolate(
                model(inp), size=inp.shape[-2:], mode="bilinear", align_corners=False)
            logits = F.interpolate(logits, size=(60, 84), mode="bilinear", align_corners=False)
            expected += (logits.flip(-1) if flip else logits).softmax(1) / 4
    got = multiscale(model, x, scales, flip=True, mode=mode, crop_size=(48, 48), stride=(32, 32))
    assert (got - expected).abs().max().item() <= 1e-5


def test_predict_slide_streams_the_labels_of_slide():
    model, image = tiny(), rgb(90, 130)
    labels = predict(model, image, mode="slide", processor=ImageProcessor(size=None), crop_size=(48, 48),
                     stride=(32, 32), batch_size=3)
    expected = slide(model, normalised(image), (48, 48), (32, 32), batch_size=3).argmax(1)[0]
    assert labels.dtype == np.uint8 and labels.shape == (90, 130)
    assert np.array_equal(labels, expected.numpy())


def test_predict_resizes_back_to_the_original_size_like_mmseg():
    model, image = tiny(), rgb(70, 101)
    processor = ImageProcessor.mmseg((80, 48), size_divisor=32)  # keep-ratio to 48x69, then to 64x96
    x = processor(image)["pixel_values"]
    assert tuple(x.shape[-2:]) == (64, 96)
    logits = F.interpolate(slide(model, x, (48, 48), (32, 32)), size=(70, 101), mode="bilinear", align_corners=False)
    labels, scores = predict(model, image, mode="slide", processor=processor, crop_size=(48, 48), stride=(32, 32),
                             scores="logits")
    assert np.array_equal(labels, logits.argmax(1)[0].numpy())
    assert (scores - logits[0]).abs().max().item() <= 1e-6
    labels, probs = predict(model, image, mode="slide", processor=processor, crop_size=(48, 48), stride=(32, 32),
                            scores="probs")
    assert probs.shape == (5, 70, 101) and torch.allclose(probs.sum(0), torch.ones(70, 101), atol=1e-5)


def test_chunked_argmax_of_several_runs_equals_the_full_softmax_mean(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    sources = [(torch.randn(1, 7, 13, 17, generator=gen), False), (torch.randn(1, 7, 20, 31, generator=gen), True)]
    full = sum(inference.tensor.unflip(F.interpolate(lg, size=(41, 53), mode="bilinear"), fl).softmax(1)
               for lg, fl in sources)
    monkeypatch.setattr(inference.labels, "_CHUNK_BYTES", 1)  # one class per chunk
    labels = argmax_at(sources, (41, 53))[0]
    top2 = full[0].topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5  # ignore exact near-ties, where rounding may pick either
    assert clear.float().mean() > 0.99
    assert torch.equal(labels[clear].long(), full[0].argmax(0)[clear])


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_predict_multiscale_flip_labels_are_the_argmax_of_its_probabilities(mode):
    model, image = Cheap(5), rgb(40, 56)
    labels, probs = predict(model, image, mode=mode, processor=ImageProcessor(size=(64, 96)), scales=(0.5, 1.0),
                            flip=True, crop_size=(40, 40), stride=(24, 24), scores="probs")
    assert probs.shape == (5, 40, 56) and torch.allclose(probs.sum(0), torch.ones(40, 56), atol=1e-5)
    assert np.array_equal(labels, probs.argmax(0).numpy())
    with pytest.raises(ValueError, match="scores='logits' is for a single run"):
        predict(model, image, scales=(0.5, 1.0), scores="logits")


MEMORY_PROBE = """
import resource, sys
import numpy as np, torch, torch.nn.functional as F
from segformer.inference import predict
from segformer.preprocess import ImageProcessor

class Cheap(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 150, 1)
    def forward(self, x):
        return self.conv(F.avg_pool2d(x, 4))

model, size = Cheap(), int(sys.argv[1])
image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
kw = dict(mode="slide", processor=ImageProcessor(size=None), crop_size=(128, 128), stride=(96, 96))
predict(model, image[:200, :200], **kw)  # warm up: lazy imports and allocator pools
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
labels = predict(model, image, **kw)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, labels.shape, labels.dtype)
"""


def test_slide_predict_memory_stays_bounded(tmp_path):
    """A 768x768 image, 150 classes: full float32 logits would be 354 MB; the streamed run adds < 1/4 of that."""
    script = tmp_path / "probe.py"
    script.write_text(MEMORY_PROBE)
    run = subprocess.run([sys.executable, str(script), "768"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    grown, shape, dtype = run.stdout.split(maxsplit=1)[0], *run.stdout.split(maxsplit=1)[1].rsplit(maxsplit=1)
    assert shape == "(768, 768)" and dtype == "uint8"
    full_logits = 150 * 768 * 768 * 4
    assert int(grown) < full_logits / 4, f"peak RSS grew by {int(grown) / 2**20:.0f} MiB"


# ---- dtypes, devices, model outputs, arguments --------------------------------------------------------------------

class Probe(Cheap):
    def forward(self, x):
        out = self.conv(x)
        self.seen = out.dtype
        return F.avg_pool2d(out, 4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_runs_under_autocast(dtype):
    model, x = Probe(3), torch.randn(1, 3, 32, 32)
    reference = whole(model, x)
    got = whole(model, x, dtype=dtype)
    assert model.seen == getattr(torch, dtype) and got.dtype == torch.float32
    assert (got - reference).abs().max().item() < 0.05
    assert not torch.equal(got, reference)
    labels = predict(model, rgb(30, 40), dtype=dtype, processor=ImageProcessor(size=(32, 32)))
    assert labels.shape == (30, 40) and model.seen == getattr(torch, dtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    model, image = tiny(), rgb(64, 80)
    kw = dict(mode="slide", processor=ImageProcessor(size=None), crop_size=(48, 48), stride=(32, 32), scores="logits")
    _, cpu = predict(model, image, **kw)
    _, gpu = predict(model, image, device="cuda", **kw)
    assert next(model.parameters()).is_cuda and (gpu - cpu).abs().max().item() <= 1e-4


def test_model_outputs_and_argument_errors():
    class HFStyle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Cheap(3)

        def forward(self, x):
            return type("Output", (), {"logits": self.inner(x)})()

    x = torch.randn(1, 3, 16, 16)
    assert whole(HFStyle(), x).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"must return logits of shape \(B, K, h, w\).*got \(1, 3\)"):
        run_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3)), x)
    model, image = Cheap(3), rgb(8, 8)
    with pytest.raises(ValueError, match="unknown mode 'tile'; accepted: whole, slide"):
        predict(model, image, mode="tile")
    with pytest.raises(ValueError, match="unknown dtype 'int8'; accepted: float32, bfloat16, float16"):
        predict(model, image, dtype="int8")
    with pytest.raises(ValueError, match="scores must be None, 'probs' or 'logits'"):
        predict(model, image, scores="softmax")
    with pytest.raises(ValueError, match="stride .* larger than crop_size"):
        predict(model, image, mode="slide", crop_size=(8, 8), stride=(9, 9))


def test_predict_takes_paths_pil_arrays_and_lists(tmp_path):
    model, image = tiny(), rgb(40, 50)
    Image.fromarray(image).save(tmp_path / "a.png")
    model.train()
    expected = predict(model, image, processor=ImageProcessor(size=(32, 32)))
    assert model.training  # the caller's mode is restored
    kw = dict(processor=ImageProcessor(size=(32, 32)))
    assert np.array_equal(predict(model, tmp_path / "a.png", **kw), expected)
    both = predict(model, [Image.fromarray(image), str(tmp_path / "a.png")], **kw)
    assert isinstance(both, list) and all(np.array_equal(b, expected) for b in both)


def test_shard_gives_each_rank_its_share():
    items = list(range(11))
    shares = [shard(items, r, 3) for r in range(3)]
    assert shares[0] == [0, 3, 6, 9] and sorted(sum(shares, [])) == items
    with pytest.raises(ValueError, match="rank must be in 0..world_size-1, got rank 3 of 3"):
        shard(items, 3, 3)


# ---- the `segformer predict` command --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny(num_classes=150).save_pretrained(path)
    return path


def write_inputs(folder: Path) -> dict:
    """One image of every common kind, plus a corrupt and an empty file; returns {name: expected (H, W)}."""
    (folder / "nested" / "deeper").mkdir(parents=True)
    base = rgb(36, 52)
    Image.fromarray(base).save(folder / "photo.jpg", quality=95)
    Image.fromarray(base[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([base, np.full((36, 52), 7, np.uint8)])).save(folder / "nested" / "rgba.png")
    Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "nested" / "palette.png")
    Image.fromarray(base[:, :, 0].astype(np.uint16) * 257).save(folder / "nested" / "deeper" / "sixteen.png")
    Image.fromarray(base).save(folder / "scan.tif")
    Image.fromarray(base).save(folder / "web.webp", lossless=True)
    Image.fromarray(base).save(folder / "old.bmp")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(base).save(folder / "rotated.jpg", exif=exif)
    good = (folder / "photo.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[:len(good) // 3])  # truncated
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image; folders are searched by extension")
    sizes = {n: (36, 52) for n in ["photo", "gray", "nested/rgba", "nested/palette", "nested/deeper/sixteen", "scan",
                                   "web", "old"]}
    sizes["rotated"] = (52, 36)
    return sizes


def test_cli_predict_folder_every_kind_bad_files_and_overwrite(tmp_path, saved_model, capsys):
    sizes = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--model", str(saved_model), "--out", str(out), "--size", "32"]
    assert main(args) == 1  # two bad files: reported, skipped, and the exit code says so
    captured = capsys.readouterr()
    assert f"failed on {tmp_path / 'in' / 'broken.jpg'}: " in captured.err
    assert f"failed on {tmp_path / 'in' / 'empty.png'}: cannot read image file" in captured.err
    assert "segformer predict: 11 images, 9 written, 2 failed" in captured.out and "images/s" in captured.out
    for name, size in sizes.items():
        labels = np.asarray(Image.open(out / f"{name}.png"))
        overlay = Image.open(out / f"{name}_overlay.png")
        assert labels.shape == size and labels.dtype == np.uint8 and overlay.size == size[::-1]
    model = segformer.load_model(saved_model)
    for name in ("rotated.jpg", "nested/deeper/sixteen.png"):
        expected = predict(model, tmp_path / "in" / name, processor=ImageProcessor(size=(32, 32)))
        assert np.array_equal(np.asarray(Image.open(out / name.replace(Path(name).suffix, ".png"))), expected)
    assert not (out / "broken.png").exists() and not (out / "notes.png").exists()

    photo = out / "photo.png"
    before = photo.read_bytes(), photo.stat().st_ino
    assert main(args) == 2
    assert "18 output file(s) exist" in capsys.readouterr().err
    assert (photo.read_bytes(), photo.stat().st_ino) == before  # untouched
    assert main(args + ["--overwrite"]) == 1
    assert photo.stat().st_ino != before[1] and photo.read_bytes() == before[0]  # replaced, same content


def test_cli_predict_inputs_and_refusals(tmp_path, saved_model, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "empty").mkdir()
    Image.fromarray(rgb(40, 60)).save(tmp_path / "a" / "x.png")
    Image.fromarray(rgb(20, 30, seed=1)).save(tmp_path / "b" / "x.jpg")
    model = ["--model", str(saved_model)]
    cases = [
        ([str(tmp_path / "missing.jpg")], tmp_path / "o1", "input " + str(tmp_path / "missing.jpg") + ": no such file"),
        ([str(tmp_path / "empty")], tmp_path / "o2", f"no images in folder {tmp_path / 'empty'}"),
        ([str(tmp_path / "*.gif")], tmp_path / "o3", "no files match the pattern"),
        ([str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.jpg")], tmp_path / "o4",
         f"inputs {tmp_path / 'a' / 'x.png'} and {tmp_path / 'b' / 'x.jpg'} would both write"),
        ([str(tmp_path / "a")], tmp_path / "a", "would replace the input image"),
    ]
    for inputs, out, message in cases:
        assert main(["predict", *inputs, *model, "--out", str(out), "--overwrite"]) == 2
        assert message in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "*" / "x.*"), *model, "--out", str(tmp_path / "o5"), "--no-overlay"]) == 2
    assert "would both write" in capsys.readouterr().err  # a glob gives bare names too
    assert main(["predict", str(tmp_path / "a" / "*.png"), *model, "--out", str(tmp_path / "o6"), "--mode", "slide",
                 "--crop", "32", "--stride", "24", "--resize", "none", "--legend", "--opacity", "0.7"]) == 0
    assert sorted(p.name for p in (tmp_path / "o6").iterdir()) == ["x.png", "x_overlay.png"]
    assert Image.open(tmp_path / "o6" / "x_overlay.png").width > 60  # the legend panel
    for _ in range(2):  # outputs inside the input folder are not taken as inputs the second time
        assert main(["predict", str(tmp_path / "a"), *model, "--out", str(tmp_path / "a" / "out"), "--overwrite"]) == 0
        assert "1 images, 1 written, 0 failed" in capsys.readouterr().out
    for options, message in [(["--opacity", "2"], "--opacity must be in [0, 1], got 2.0"),
                             (["--mode", "slide", "--crop", "32", "--stride", "40"],
                              "stride (40, 40) larger than crop_size (32, 32)"),
                             (["--scales", "0.5", "0"], "scales must be positive numbers, got [0.5, 0.0]")]:
        assert main(["predict", str(tmp_path / "a"), *model, "--out", str(tmp_path / "o7"), *options]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o7").exists()  # refused before writing anything


def test_cli_writes_16_bit_label_maps_above_255_classes(tmp_path, capsys):
    tiny(num_classes=300).save_pretrained(tmp_path / "model")
    Image.fromarray(rgb(24, 40)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "x.png"), "--model", str(tmp_path / "model"), "--out",
                 str(tmp_path / "out"), "--size", "32"]) == 0
    saved = Image.open(tmp_path / "out" / "x.png")
    model = segformer.load_model(tmp_path / "model")
    expected = predict(model, tmp_path / "x.png", processor=ImageProcessor(size=(32, 32)))
    assert expected.dtype == np.uint16 and saved.mode.startswith("I")
    assert np.array_equal(np.asarray(saved).astype(np.int64), expected.astype(np.int64))


def test_torchrun_two_processes_write_the_same_files_as_one(tmp_path, saved_model):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(rgb(30 + i, 40, seed=i)).save(folder / f"img{i}.png")
    common = ["predict", str(folder), "--model", str(saved_model), "--size", "32", "--dtype", "float32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "segformer.cli", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "segformer.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert "5 images, 5 written, 0 failed" in two.stdout and two.stdout.count("segformer predict:") == 1
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(names) == 10 and names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
