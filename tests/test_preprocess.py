"""Preprocessing parity with transformers' SegformerImageProcessor (PIL backend) and with MMSegmentation.

The mmseg checks run the real pipeline (LoadImageFromFile, LoadAnnotations, Resize, ResizeToMultiple,
SegDataPreProcessor) in the oracle venv through a subprocess; they skip, saying why, when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import mmseg_oracle as oracle_paths
from segformer.preprocess import (
    ImageProcessor,
    keep_ratio_size,
    multiple_size,
    postprocess,
    reduce_labels,
    to_rgb_array,
)

REPO = Path(__file__).resolve().parents[1]


def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like RGB uint8 image: smooth gradients and waves, sensor noise, hard-edged shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([200 * x + 30 * np.sin(9 * y), 180 * y + 40 * np.cos(7 * x), 120 + 80 * np.sin(5 * (x + y))], -1)
    img = img + rng.normal(0, 12, img.shape)
    for _ in range(6):  # rectangles and discs of flat colour
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, max(4, min(h, w) // 4))
        mask = ((y * max(h, w) - cy) ** 2 + (x * max(h, w) - cx) ** 2 < r * r) if rng.random() < 0.5 else (
            (abs(y * max(h, w) - cy) < r) & (abs(x * max(h, w) - cx) < 2 * r))
        img[mask] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_label(h: int, w: int, seed: int, num_classes: int = 150) -> np.ndarray:
    """A uint8 label map of blob-shaped regions (Voronoi cells) with ids 0..num_classes and a 255 patch."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, [h, w], size=(24, 2))
    ids = rng.integers(0, num_classes + 1, size=24)
    ids[:3] = (0, 1, num_classes)
    y, x = np.ogrid[0:h, 0:w]
    best = np.full((h, w), np.inf, np.float32)
    label = np.zeros((h, w), np.uint8)
    for (cy, cx), i in zip(centres, ids, strict=True):
        d = ((y - cy) ** 2 + (x - cx) ** 2).astype(np.float32)
        label[d < best] = i
        best = np.minimum(best, d)
    label[h // 3: h // 3 + max(2, h // 10), w // 4: w // 2] = 255
    return label


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    # The PIL backend explicitly: `SegformerImageProcessor` only falls back to it when torchvision is absent.
    return transformers.SegformerImageProcessorPil()


def _hf_pixels(hf, images, **kwargs) -> torch.Tensor:
    return hf(images, return_tensors="pt", **kwargs)["pixel_values"]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
    return (a - b).abs().max().item()


@pytest.mark.parametrize("hw", [(97, 131), (333, 500), (700, 1100), (512, 512)])
def test_rgb_pixels_match_hf(hf, hw):
    rgb = make_image(*hw, seed=hw[0])
    ours = ImageProcessor()
    for image in (Image.fromarray(rgb), rgb):  # PIL and numpy inputs
        got = ours(image)["pixel_values"]
        assert got.shape == (1, 3, 512, 512)
        assert _max_diff(got, _hf_pixels(hf, image)) <= 1e-5


def test_other_modes_match_hf(hf, tmp_path):
    rgb = make_image(150, 90, seed=3)
    gray = Image.fromarray(rgb).convert("L")
    palette = Image.fromarray(rgb).quantize(64)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    ours = ImageProcessor()
    # In-memory non-RGB images: HF needs do_convert_rgb=True (by default it refuses them), then uses PIL's convert.
    for image in (gray, palette, cmyk):
        assert _max_diff(ours(image)["pixel_values"], _hf_pixels(hf, image, do_convert_rgb=True)) <= 1e-5, image.mode
    assert _max_diff(ours(np.asarray(gray))["pixel_values"], _hf_pixels(hf, gray, do_convert_rgb=True)) <= 1e-5
    # Files: HF's loader (load_image) converts to RGB, dropping alpha and palette transparency, like ours.
    alpha = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None, :, None].repeat(rgb.shape[0], 0)
    rgba = Image.fromarray(np.concatenate([rgb, alpha], -1), mode="RGBA")
    transparent_palette = palette.copy()
    transparent_palette.info["transparency"] = 0
    files = {"rgba.png": rgba, "p_transparent.png": transparent_palette, "gray.png": gray,
             "photo.jpg": Image.fromarray(rgb)}
    for name, image in files.items():
        image.save(tmp_path / name)
        path = str(tmp_path / name)
        assert _max_diff(ours(path)["pixel_values"], _hf_pixels(hf, path)) <= 1e-5, name
        assert _max_diff(ours(Path(path))["pixel_values"], ours(Image.open(path))["pixel_values"]) == 0, name


def test_sixteen_bit_gray_is_scaled_not_clipped(hf):
    # PIL's convert("RGB") (and so HF) clips 16-bit values at 255; ours keeps the top byte as OpenCV's imread
    # does (checked against OpenCV in test_mmseg_pipeline_parity), then matches HF on that 8-bit image.
    g16 = (np.linspace(0, 65535, 97 * 131).reshape(97, 131)).astype(np.uint16)
    image = Image.fromarray(g16)
    assert image.mode == "I;16"
    rgb = to_rgb_array(image)
    assert rgb.shape == (97, 131, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 1], g16 >> 8)
    eight_bit = Image.fromarray((g16 >> 8).astype(np.uint8))
    expected = _hf_pixels(hf, eight_bit, do_convert_rgb=True)
    assert _max_diff(ImageProcessor()(image)["pixel_values"], expected) <= 1e-5


def test_batch_matches_hf(hf):
    images = [make_image(97, 131, 0), Image.fromarray(make_image(333, 500, 1)), make_image(64, 48, 2)]
    got = ImageProcessor()(images)
    assert got["pixel_values"].shape == (3, 3, 512, 512)
    assert got["original_sizes"] == [(97, 131), (333, 500), (64, 48)]
    assert _max_diff(got["pixel_values"], _hf_pixels(hf, images)) <= 1e-5


@pytest.mark.parametrize("reduce", [False, True])
def test_labels_match_hf(hf, reduce):
    for hw in [(97, 131), (333, 500), (700, 1100)]:
        rgb, label = make_image(*hw, seed=7), make_label(*hw, seed=hw[1])
        palette_label = Image.fromarray(label, mode="L").convert("P")
        for lab in (Image.fromarray(label), palette_label, label, label.astype(np.int64)):
            ours = ImageProcessor(reduce_labels=reduce)(rgb, lab)
            theirs = hf(rgb, segmentation_maps=lab, do_reduce_labels=reduce, return_tensors="pt")
            assert ours["labels"].dtype == torch.int64 and ours["labels"].shape == (1, 512, 512)
            assert torch.equal(ours["labels"], theirs["labels"]), (hw, type(lab))
            assert _max_diff(ours["pixel_values"], theirs["pixel_values"]) <= 1e-5


@pytest.mark.parametrize("processor", [ImageProcessor(), ImageProcessor.mmseg()], ids=["hf", "mmseg"])
def test_strided_inputs_and_large_label_ids(processor):
    rgb, label = make_image(97, 131, 5), make_label(97, 131, 5)
    flipped = processor(rgb[:, ::-1], label[:, ::-1])  # negative-stride views are accepted
    copied = processor(rgb[:, ::-1].copy(), label[:, ::-1].copy())
    assert torch.equal(flipped["pixel_values"], copied["pixel_values"])
    assert torch.equal(flipped["labels"], copied["labels"])
    # Ids above 255 (HF's processor cannot hold them) survive the nearest resize unchanged.
    shifted = processor(rgb, label.astype(np.int64) + 300)["labels"]
    assert torch.equal(shifted, processor(rgb, label)["labels"] + 300)


def test_reduce_labels_rule():
    label = np.array([[0, 1, 2, 150, 254, 255]])
    np.testing.assert_array_equal(reduce_labels(label), [[255, 0, 1, 149, 253, 255]])


def test_postprocess_matches_hf(hf):
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 32, 40)
    sizes = [(97, 131), (333, 500)]
    expected = hf.post_process_semantic_segmentation(SimpleNamespace(logits=logits), target_sizes=sizes)
    got = postprocess(logits, sizes)
    assert len(got) == 2
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == torch.int64 and torch.equal(g, e)
    as_tensor = postprocess(logits, torch.tensor(sizes))
    assert all(torch.equal(g, e) for g, e in zip(as_tensor, expected, strict=True))
    # One size for the whole batch -> one (B, H, W) tensor.
    single = postprocess(logits, (97, 131))
    same = hf.post_process_semantic_segmentation(SimpleNamespace(logits=logits), target_sizes=[(97, 131)] * 2)
    assert single.shape == (2, 97, 131) and torch.equal(single, torch.stack(same))
    native = hf.post_process_semantic_segmentation(SimpleNamespace(logits=logits))
    assert torch.equal(postprocess(logits), torch.stack(native))


def test_keep_ratio_and_multiple_sizes():
    # Hand-derived from mmcv 2.1 `rescale_size` (mmcv/image/geometric.py): factor = min(max(scale) / max(h, w),
    # min(scale) / min(h, w)); new side = int(side * factor + 0.5). mmcv takes (w, h); these are (h, w).
    assert keep_ratio_size(333, 500, (2048, 512)) == (512, 769)  # factor 512/333; 500 * 1.5375 = 768.77
    assert keep_ratio_size(97, 131, (2048, 512)) == (512, 691)  # 131 * 512 / 97 = 691.46
    assert keep_ratio_size(512, 4096, (2048, 512)) == (256, 2048)  # the long side binds: factor 0.5
    assert keep_ratio_size(1024, 1025, (512, 2048)) == (512, 513)  # 512.5 rounds half up; scale order is free
    assert keep_ratio_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert keep_ratio_size(1200, 400, (2048, 512)) == (1536, 512)
    # mmseg ResizeToMultiple: each side rounded up to the divisor (np.ceil(s / d) * d).
    assert multiple_size(512, 769) == (512, 800)
    assert multiple_size(97, 131, 32) == (128, 160)
    assert multiple_size(512, 512) == (512, 512)
    assert multiple_size(1, 33, 16) == (16, 48)
    p = ImageProcessor.mmseg(scale=(2048, 512), size_divisor=32)
    assert p.resize_steps(333, 500) == [(512, 769), (512, 800)]
    out = p(make_image(333, 500, 0), make_label(333, 500, 0))
    assert out["pixel_values"].shape == (1, 3, 512, 800) and out["labels"].shape == (1, 512, 800)


def test_bad_input_errors(tmp_path):
    p = ImageProcessor()
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        p(str(missing))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(ValueError, match=r"cannot read image file .*corrupt\.png"):
        p(corrupt)
    with pytest.raises(ValueError, match=r"shape \(10, 10, 5\); accepted: .*\(H, W, 3\)"):
        p(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(ValueError, match="dtype float32; expected uint8"):
        p(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(TypeError, match="unsupported image type int; accepted: a file path"):
        p(3)
    with pytest.raises(ValueError, match="2 images but 1 label maps"):
        p([np.zeros((8, 8, 3), np.uint8)] * 2, [np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match=r"label map 0 has size \(8, 9\) but its image has \(8, 8\)"):
        p(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError, match="label map has PIL mode RGB"):
        p(np.zeros((8, 8, 3), np.uint8), Image.new("RGB", (8, 8)))
    with pytest.raises(ValueError, match="different sizes"):
        ImageProcessor.mmseg()([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 16, 3), np.uint8)])
    with pytest.raises(ValueError, match="unknown resize backend 'cv3'; accepted: pillow, cv2"):
        ImageProcessor(backend="cv3")
    with pytest.raises(ValueError, match="either size .* or keep_ratio_scale"):
        ImageProcessor(keep_ratio_scale=(2048, 512))
    with pytest.raises(ValueError, match=r"logits must be a \(B, K, h, w\) tensor, got \(7, 32, 40\)"):
        postprocess(torch.zeros(7, 32, 40))
    with pytest.raises(ValueError, match="list of 2 \\(H, W\\) pairs"):
        postprocess(torch.zeros(2, 7, 32, 40), [(10, 10)])


# ---------------------------------------------------------------------------------------------------------------
# MMSegmentation oracle (subprocess in its own venv)

ORACLE = r'''
import json, sys
import numpy as np
spec = json.load(open(sys.argv[1]))
sys.path.insert(0, spec["shim_dir"])
import mmcv_ops_shim  # noqa: F401  (lets mmseg import on mmcv-lite)
from mmcv.image.geometric import rescale_size
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets.transforms import LoadAnnotations, PackSegInputs, Resize, ResizeToMultiple
from mmseg.models.data_preprocessor import SegDataPreProcessor

out = {"rescale": np.array([rescale_size((w, h), tuple(s)) for h, w, s in spec["sizes"]])}
pre = SegDataPreProcessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
for case in spec["cases"]:
    steps = [LoadImageFromFile(), LoadAnnotations(reduce_zero_label=True),
             Resize(scale=tuple(case["scale"]), keep_ratio=True, backend=case["backend"])]
    steps += [ResizeToMultiple(size_divisor=32)] if case["multiple"] else []
    results = dict(img_path=case["image"], seg_map_path=case["label"], reduce_zero_label=True, seg_fields=[])
    for step in steps + [PackSegInputs()]:
        results = step(results)
    data = pre(dict(inputs=[results["inputs"]], data_samples=[results["data_samples"]]), training=False)
    out[case["name"] + "/pixels"] = data["inputs"].numpy()
    out[case["name"] + "/labels"] = data["data_samples"][0].gt_sem_seg.data.numpy()
for name, path in spec["loads"].items():
    out["load/" + name] = np.ascontiguousarray(LoadImageFromFile()(dict(img_path=path))["img"][..., ::-1])
np.savez(spec["out"], **out)
'''



SIZES = [(97, 131), (333, 500), (700, 1100), (1200, 400)]


@pytest.fixture(scope="module")
def mmseg_oracle(tmp_path_factory):
    python, shim = oracle_paths()
    work = tmp_path_factory.mktemp("mmseg_oracle")
    cases, loads = [], {}
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(make_image(h, w, seed=i)).save(work / f"img{i}.png")
        Image.fromarray(make_label(h, w, seed=i)).save(work / f"lab{i}.png")
        for backend in ("cv2", "pillow"):
            for multiple in (False, True) if backend == "cv2" else (False,):
                cases.append(dict(name=f"{i}-{backend}-{multiple}", image=str(work / f"img{i}.png"),
                                  label=str(work / f"lab{i}.png"), scale=[2048, 512], backend=backend,
                                  multiple=multiple))
    g16 = (np.linspace(0, 65535, 40 * 50).reshape(40, 50)).astype(np.uint16)
    Image.fromarray(g16).save(work / "g16.png")
    rgba = np.concatenate([make_image(40, 50, 9), np.full((40, 50, 1), 7, np.uint8)], -1)
    Image.fromarray(rgba, mode="RGBA").save(work / "rgba.png")
    rotated = Image.fromarray(make_image(40, 60, 10))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    rotated.save(work / "exif.jpg", exif=exif, quality=95)
    loads = {name: str(work / name) for name in ("g16.png", "rgba.png", "exif.jpg")}
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w), s) for h, w in rng.integers(1, 3000, size=(200, 2))
             for s in ([2048, 512], [2048, 1024], [512, 512], [1333, 800])]
    spec = dict(shim_dir=str(Path(shim).parent), cases=cases, loads=loads, sizes=sizes, out=str(work / "out.npz"))
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "oracle.py").write_text(ORACLE)
    run = subprocess.run([python, str(work / "oracle.py"), str(work / "spec.json")], capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    return spec, dict(np.load(work / "out.npz"))


@pytest.mark.mmseg
def test_keep_ratio_size_matches_mmcv(mmseg_oracle):
    spec, out = mmseg_oracle
    ours = np.array([keep_ratio_size(h, w, tuple(s))[::-1] for h, w, s in spec["sizes"]])
    np.testing.assert_array_equal(ours, out["rescale"])


@pytest.mark.mmseg
def test_mmseg_pipeline_parity(mmseg_oracle):
    """Ours vs mmseg's test pipeline (with labels): sizes and labels exact; pixels exact with the Pillow
    backend and, with OpenCV's, within one grey level (1 / 57.12 after normalising) per resize."""
    spec, out = mmseg_oracle
    report = []
    for case in spec["cases"]:
        p = ImageProcessor.mmseg(scale=tuple(case["scale"]), size_divisor=32 if case["multiple"] else None,
                                 reduce_labels=True, backend=case["backend"])
        got = p(case["image"], case["label"])
        expected_pixels = torch.from_numpy(out[case["name"] + "/pixels"])
        assert got["pixel_values"].shape == expected_pixels.shape, case["name"]
        assert torch.equal(got["labels"], torch.from_numpy(out[case["name"] + "/labels"]).long()), case["name"]
        diff = (got["pixel_values"] - expected_pixels).abs()
        resizes = len(p.resize_steps(1, 1))  # each rounds OpenCV's fixed point differently: <= 1 level per resize
        bound = 1e-5 if case["backend"] == "pillow" else resizes / 57.12 + 1e-5
        report.append(f"{case['name']}: max {diff.max().item():.5f}, differing {(diff > 1e-5).float().mean():.4f}")
        assert diff.max().item() <= bound, report[-1]
    print("\n".join(report))
    # File loading: 16-bit gray keeps the top byte, alpha is dropped, EXIF orientation applied, as OpenCV.
    np.testing.assert_array_equal(to_rgb_array(spec["loads"]["g16.png"]), out["load/g16.png"])
    np.testing.assert_array_equal(to_rgb_array(spec["loads"]["rgba.png"]), out["load/rgba.png"])
    exif_ours, exif_cv2 = to_rgb_array(spec["loads"]["exif.jpg"]), out["load/exif.jpg"]
    assert exif_ours.shape == exif_cv2.shape == (60, 40, 3)
    assert np.abs(exif_ours.astype(int) - exif_cv2).mean() < 2  # JPEG decoders differ slightly
