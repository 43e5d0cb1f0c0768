"""The mmseg training / test transforms, each against its definition; RandomResize's size arithmetic and the
photometric operations also against mmcv / mmseg themselves (oracle venv via a subprocess; skipped, saying
why, when it is absent)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import mmseg_oracle as oracle_paths
from segformer.data import transforms as T
from segformer.data.transforms import (
    PhotoMetricDistortion,
    TrainTransform,
    crop_box,
    random_crop,
    random_flip,
    random_resize,
    random_resize_size,
)

REPO = Path(__file__).resolve().parents[1]
MEAN = torch.tensor([123.675, 116.28, 103.53])
STD = torch.tensor([58.395, 57.12, 57.375])


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --- MMSegmentation / mmcv as the oracle -------------------------------------------------------------------------

ORACLE = r'''
import json, sys
import numpy as np
spec = json.load(open(sys.argv[1]))
sys.path.insert(0, spec["shim_dir"])
import mmcv_ops_shim  # noqa: F401  (lets mmseg import on mmcv-lite)
from mmcv.transforms import RandomResize
import mmseg.datasets.transforms.transforms as mt

out = {"resize": []}
for h, w, scale, ratio in spec["resize"]:
    t = RandomResize(scale=tuple(scale), ratio_range=(ratio, ratio), keep_ratio=True)
    res = t(dict(gt_seg_map=np.zeros((h, w), np.uint8), seg_fields=["gt_seg_map"]))
    out["resize"].append(list(res["gt_seg_map"].shape))


class Fixed:  # stands in for numpy.random inside mmseg's PhotoMetricDistortion: "apply", with this value
    def __init__(self, value):
        self.value = value

    def randint(self, *args):
        return 1 if len(args) == 1 else self.value

    def uniform(self, *args):
        return self.value


image = np.load(spec["image"])[..., ::-1].copy()  # mmseg works on BGR
pmd = mt.PhotoMetricDistortion()
ops = {"brightness": pmd.brightness, "contrast": pmd.contrast, "saturation": pmd.saturation, "hue": pmd.hue}
arrays = {}
for name, value in spec["photometric"]:
    mt.random = Fixed(value)
    arrays[f"{name}/{value}"] = ops[name](image.copy())[..., ::-1]
np.savez(spec["arrays_out"], **arrays)
json.dump(out, open(spec["out"], "w"))
'''

PHOTOMETRIC = [("brightness", -32.0), ("brightness", 7.25), ("brightness", 31.5), ("contrast", 0.5),
               ("contrast", 0.87), ("contrast", 1.5), ("saturation", 0.5), ("saturation", 1.2), ("saturation", 1.5),
               ("hue", -18), ("hue", 5), ("hue", 17)]



@pytest.fixture(scope="module")
def mmseg_oracle(tmp_path_factory):
    python, shim = oracle_paths()
    work = tmp_path_factory.mktemp("mmseg_transforms")
    rng = np.random.default_rng(0)
    resize = [(int(h), int(w), scale, float(r)) for (h, w), r in zip(rng.integers(1, 2500, size=(60, 2)),
                                                                       rng.uniform(0.5, 2.0, size=60), strict=True)
              for scale in ([2048, 512], [2048, 1024])]
    resize += [(512, 683, [2048, 512], 1.0), (1024, 2048, [2048, 1024], 0.5), (1, 1, [2048, 512], 2.0)]
    np.save(work / "image.npy", _image(48, 64, seed=1))
    spec = dict(shim_dir=str(Path(shim).parent), resize=resize, photometric=PHOTOMETRIC, image=str(work / "image.npy"),
                out=str(work / "out.json"), arrays_out=str(work / "arrays.npz"))
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "oracle.py").write_text(ORACLE)
    run = subprocess.run([python, str(work / "oracle.py"), str(work / "spec.json")], capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    return spec, json.loads((work / "out.json").read_text()), dict(np.load(work / "arrays.npz"))


@pytest.mark.mmseg
def test_random_resize_keep_ratio_size_matches_mmcv(mmseg_oracle):
    spec, out, _ = mmseg_oracle
    ours = [list(random_resize_size(h, w, tuple(scale), (r, r), np.random.default_rng(0)))
            for h, w, scale, r in spec["resize"]]
    assert ours == out["resize"]
    assert len(ours) == 123 and len({tuple(s) for s in ours}) > 100  # many distinct sizes really compared


@pytest.mark.mmseg
def test_photometric_operations_match_mmseg(mmseg_oracle):
    spec, _, arrays = mmseg_oracle
    image = np.load(spec["image"])
    ops = {"brightness": T.adjust_brightness, "contrast": T.adjust_contrast, "saturation": T.adjust_saturation,
           "hue": T.adjust_hue}
    for name, value in PHOTOMETRIC:
        ours = ops[name](image, value).astype(int)
        ref = arrays[f"{name}/{value}"].astype(int)
        diff = np.abs(ours - ref)
        if name in ("brightness", "contrast"):  # the same float32 affine, clip and truncation: exact
            assert diff.max() == 0, (name, value)
        else:  # mmseg goes through OpenCV's uint8 HSV (hue in 2-degree steps); ours through float HSV
            assert diff.max() <= 6 and diff.mean() <= 0.75, (name, value, diff.max(), diff.mean())
            assert np.abs(ours - image).mean() > 3 * diff.mean()  # the operation really changed the image


# --- each transform against its definition ----------------------------------------------------------------------

def test_random_resize_ratio_range_and_nearest_labels():
    label = np.random.default_rng(0).choice([2, 9, 200], size=(60, 90)).astype(np.int64)
    image = _image(60, 90)
    sizes = set()
    for seed in range(40):
        img, lab = random_resize(image, label, (600, 150), (0.5, 2.0), np.random.default_rng(seed))
        assert img.shape[:2] == lab.shape and img.dtype == np.uint8
        assert set(np.unique(lab)) <= {2, 9, 200}  # nearest: no interpolated ids
        # the short side goes to int(150 * r) for r in [0.5, 2]: rounding of int() and +0.5 aside
        assert 75 - 1 <= min(lab.shape) <= 300 + 1
        assert abs(lab.shape[1] / lab.shape[0] - 1.5) < 0.01  # aspect kept
        sizes.add(lab.shape)
    assert len(sizes) > 25


def test_cat_max_ratio_is_respected():
    # Left 80% of the width is class 0 only; the right 20% mixes classes 1 and 2. A 20x20 crop passes
    # (max class share < 0.75, two classes) only if it reaches 6+ columns into the right part.
    label = np.zeros((40, 100), np.int64)
    label[:, 80:] = np.where(np.arange(40)[:, None] % 2 == 0, 1, 2)
    label[:5, :5] = 255

    def passes(box) -> bool:
        y1, y2, x1, x2 = box
        classes, counts = np.unique(label[y1:y2, x1:x2], return_counts=True)
        counts = counts[classes != 255]
        return len(counts) > 1 and counts.max() / counts.sum() < 0.75

    checked = sum(passes(crop_box(label, (20, 20), 0.75, 255, np.random.default_rng(s))) for s in range(200))
    unchecked = sum(passes(crop_box(label, (20, 20), 1.0, 255, np.random.default_rng(s))) for s in range(200))
    # one draw passes with p = 15 / 81 (x1 >= 66); after 10 checked redraws the miss rate is 0.815**10 ~ 0.13
    assert unchecked <= 200 * 0.3 and checked >= 200 * 0.8


def test_cat_max_ratio_gives_up_after_ten_tries():
    label = np.zeros((30, 30), np.int64)  # one class: no crop can pass

    class Counting:
        def __init__(self):
            self.rng, self.calls = np.random.default_rng(0), 0

        def integers(self, *args, **kwargs):
            self.calls += 1
            return self.rng.integers(*args, **kwargs)

    rng = Counting()
    y1, y2, x1, x2 = crop_box(label, (10, 10), 0.75, 255, rng)
    assert rng.calls == 2 * 11  # first box + 10 redraws (mmseg checks 10 times, keeps the last draw unchecked)
    assert (y2 - y1, x2 - x1) == (10, 10)


def test_crop_smaller_than_image_keeps_all_then_pads_with_0_and_255():
    image, label = _image(20, 30), np.ones((20, 30), np.int64)
    img, lab = random_crop(image, label, (32, 32), 0.75, 255, np.random.default_rng(0))
    assert img.shape == (20, 30, 3) and lab.shape == (20, 30)
    t = TrainTransform(crop_size=(32, 32), scale=(30, 20), ratio_range=(1.0, 1.0), cat_max_ratio=1.0, flip_prob=0.0,
                       photometric=False)
    x, y = t(image, label, np.random.default_rng(0))
    assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64
    assert (x[:, 20:, :] == 0).all() and (x[:, :, 30:] == 0).all()  # bottom / right, 0 after normalising
    assert (y[20:, :] == 255).all() and (y[:, 30:] == 255).all() and (y[:20, :30] == 1).all()
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() - MEAN[:, None, None]) / STD[:, None, None]
    assert torch.allclose(x[:, :20, :30], expected, atol=1e-6)


def test_flip_moves_image_and_label_together():
    image, label = _image(4, 5), np.arange(20).reshape(4, 5)
    img, lab = random_flip(image, label, 1.0, np.random.default_rng(0))
    assert (img == image[:, ::-1]).all() and (lab == label[:, ::-1]).all()
    img, lab = random_flip(image, label, 0.0, np.random.default_rng(0))
    assert (img == image).all() and (lab == label).all()
    flips = sum(random_flip(image, label, 0.5, np.random.default_rng(s))[1][0, 0] == 4 for s in range(400))
    assert 160 <= flips <= 240


def test_photometric_sampling_follows_mmseg_ranges(monkeypatch):
    seen = {"brightness": [], "contrast": [], "saturation": [], "hue": []}
    orders = []

    def record(name):
        def op(image, value):
            seen[name].append(value)
            orders[-1].append(name)
            return image
        return op

    for name in seen:
        monkeypatch.setattr(T, f"adjust_{name}", record(name))
    image, n = _image(2, 2), 800
    for seed in range(n):
        orders.append([])
        PhotoMetricDistortion()(image, np.random.default_rng(seed))
    b, c, s, h = (np.array(seen[k]) for k in ("brightness", "contrast", "saturation", "hue"))
    assert b.min() >= -32 and b.max() <= 32 and b.min() < -28 and b.max() > 28
    for values in (c, s):
        assert values.min() >= 0.5 and values.max() <= 1.5 and values.min() < 0.55 and values.max() > 1.45
    assert set(h.tolist()) == set(range(-18, 18))  # numpy randint(-18, 18): 18 itself excluded, as mmseg
    for values in (b, c, s, h):  # each applied with probability 0.5
        assert 0.43 * n <= len(values) <= 0.57 * n
    # brightness, then contrast either before saturation and hue or after both, 50/50; never in between
    assert all(o.index("brightness") == 0 for o in orders if "brightness" in o)
    both = [o for o in orders if "contrast" in o and "hue" in o]
    first = sum(o.index("contrast") < o.index("hue") for o in both)
    assert 0.35 * len(both) <= first <= 0.65 * len(both)
    for o in orders:
        if "contrast" in o and "saturation" in o and "hue" in o:
            assert o.index("contrast") in (len(o) - 3, len(o) - 1)


def test_seeded_train_transform_repeats():
    image, label = _image(50, 70), np.random.default_rng(1).integers(0, 4, (50, 70))
    t = TrainTransform(crop_size=(32, 32), scale=(140, 50))
    a = t(image, label, np.random.default_rng(5))
    b = t(image, label, np.random.default_rng(5))
    c = t(image, label, np.random.default_rng(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_test_transform_resizes_image_not_label():
    image, label = _image(100, 300), np.zeros((100, 300), np.int64)
    x, y = T.TestTransform(scale=(2048, 512))(image, label)
    assert x.shape == (3, 512, 1536) and y.shape == (100, 300)  # short side 512, ratio kept
    x, y = T.TestTransform(scale=(600, 150))(image, label)
    assert x.shape == (3, 150, 450)
    x, y = T.TestTransform()(image, label)
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() - MEAN[:, None, None]) / STD[:, None, None]
    assert x.shape == (3, 100, 300) and torch.allclose(x, expected, atol=1e-6)
