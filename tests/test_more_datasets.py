"""COCO-Stuff 164k, Pascal Context 59/60 and Pascal VOC 2012 aug against MMSegmentation 1.2.2's datasets.

Small fixture trees in the real on-disk layouts are written here; the oracle (tests/oracles/mmseg_datasets.py, in
the mmseg venv) reads them with mmseg's dataset classes and LoadAnnotations, and runs mmseg's COCO-Stuff converter.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import mmseg_oracle
from segformer.data import open_dataset
from segformer.data.more_datasets import COCO_UNUSED_IDS, COCOStuff164k, PascalContext, PascalVOC, coco_stuff_lut
from segformer.data.palettes import get_class_names, get_palette

ROOT = Path(__file__).resolve().parents[1]
USED_COCO_IDS = np.array([i for i in range(182) if i not in COCO_UNUSED_IDS] + [255])


def _write(path: Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.astype(np.uint8))
    if palette is not None:  # VOC's SegmentationClass maps are palette ("P") PNGs: index = class
        image = Image.frombytes("P", image.size, image.tobytes())
        image.putpalette(palette.ravel().tolist())
    image.save(path)


def _trees(tmp: Path, rng: np.random.Generator) -> dict[str, Path]:
    """The fixture datasets (two or three images each, 37x45) in mmseg's layouts."""
    def rgb():
        return rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)

    coco, raw, raw_root = tmp / "coco_stuff164k", tmp / "stuffthingmaps", tmp / "coco_raw_layout"
    for stem in ("000000000139", "000000000285"):
        (coco / "images" / "val2017").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb()).save(coco / "images" / "val2017" / f"{stem}.jpg")
        _write(coco / "annotations" / "val2017" / f"{stem}_labelTrainIds.png",
               rng.choice(np.r_[np.arange(171), 255], (37, 45)))
        ids = rng.choice(USED_COCO_IDS, (37, 45))
        _write(raw / f"{stem}.png", ids)
        (raw_root / "images" / "val2017").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb()).save(raw_root / "images" / "val2017" / f"{stem}.jpg")
        _write(raw_root / "annotations" / "val2017" / f"{stem}.png", ids)
    context = tmp / "VOCdevkit" / "VOC2010"
    voc = tmp / "voc" / "VOCdevkit" / "VOC2012"
    names = {"context": ["2008_000002", "2008_000007"], "train": ["2007_000032", "2007_000039"],
             "val": ["2007_000033"], "aug": ["2008_000123", "2007_000032"]}
    for name in names["context"]:
        (context / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb()).save(context / "JPEGImages" / f"{name}.jpg")
        _write(context / "SegmentationClassContext" / f"{name}.png", rng.integers(0, 60, (37, 45)))
    (context / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (context / "ImageSets" / "SegmentationContext" / "val.txt").write_text("\n".join(names["context"]) + "\n")
    palette = get_palette(21, "voc").astype(np.uint8)
    full_palette = np.zeros((256, 3), np.uint8)
    full_palette[:21] = palette
    full_palette[255] = (224, 224, 192)
    for split in ("train", "val", "aug"):
        for name in names[split]:
            (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
            if not (voc / "JPEGImages" / f"{name}.jpg").exists():
                Image.fromarray(rgb()).save(voc / "JPEGImages" / f"{name}.jpg")
            label = rng.choice(np.r_[np.arange(21), 255], (37, 45))
            if split == "aug":
                _write(voc / "SegmentationClassAug" / f"{name}.png", label)
            else:
                _write(voc / "SegmentationClass" / f"{name}.png", label, full_palette)
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names[split]) + "\n")
    return {"coco": coco, "coco_raw": raw, "coco_raw_root": raw_root, "context": context, "voc": voc,
            "voc_top": tmp / "voc", "context_top": tmp}


@pytest.mark.mmseg
def test_loaders_equal_mmseg_datasets(tmp_path):
    python, shim = mmseg_oracle()
    trees = _trees(tmp_path / "data", np.random.default_rng(0))
    spec = {"shim": shim, "coco": str(trees["coco"]), "coco_raw": str(trees["coco_raw"]),
            "coco_converted": str(tmp_path / "converted"), "context": str(trees["context"]), "voc": str(trees["voc"]),
            "out": str(tmp_path / "oracle")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    run = subprocess.run([python, str(ROOT / "tests" / "oracles" / "mmseg_datasets.py"), str(tmp_path / "spec.json")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ref, meta = np.load(tmp_path / "oracle.npz"), json.loads((tmp_path / "oracle.json").read_text())

    ours = {"coco": open_dataset(trees["coco"], "val"),
            "context59": open_dataset(trees["context_top"], "val"),
            "context60": open_dataset(trees["context"], "val", num_classes=60),
            "voc_train": open_dataset(trees["voc_top"], "train")}
    assert isinstance(ours["coco"], COCOStuff164k) and isinstance(ours["voc_train"], PascalVOC)
    assert isinstance(ours["context59"], PascalContext) and ours["context59"].num_classes == 59
    assert ours["context60"].kind == "pascal_context" and ours["context59"].kind == "pascal_context_59"
    for key, kind in (("coco", "coco_stuff"), ("context59", "pascal_context_59"), ("context60", "pascal_context"),
                      ("voc_train", "voc")):
        assert ours[key].class_names == meta["classes"][key]
        assert get_class_names(len(meta["classes"][key]), kind) == meta["classes"][key]
        assert get_palette(len(meta["palette"][key]), kind).tolist() == meta["palette"][key]
    expected = {k: [ref[f"{k}/{i}"] for i in range(len(meta["samples"][k]))] for k in meta["samples"]}
    expected["voc_train"] = expected["voc_train"] + expected.pop("voc_aug")  # mmseg voc12aug: ConcatDataset
    paths = {**meta["samples"], "voc_train": meta["samples"]["voc_train"] + meta["samples"]["voc_aug"]}
    for key, dataset in ours.items():
        assert [[str(a), str(b)] for a, b in dataset.samples] == paths[key], key
        assert len(dataset) == len(expected[key])
        for i, label in enumerate(expected[key]):
            np.testing.assert_array_equal(dataset.load(i)[1], label, err_msg=f"{key} {i}")

    # COCO-Stuff raw stuffthingmaps: our id table equals mmseg's converter on every id the maps can hold
    assert {int(k): v for k, v in meta["coco_table"].items()} == {
        int(i): int(coco_stuff_lut()[i]) for i in USED_COCO_IDS}
    raw_layout = open_dataset(trees["coco_raw_root"], "val")
    for i, (image, _) in enumerate(raw_layout.samples):
        converted = tmp_path / "converted" / "val2017" / f"{image.stem}_labelTrainIds.png"
        np.testing.assert_array_equal(raw_layout.load(i)[1], np.asarray(Image.open(converted)))


def test_layout_errors(tmp_path):
    trees = _trees(tmp_path, np.random.default_rng(1))
    with pytest.raises(ValueError, match="59 classes \\(no background\\) or 60"):
        PascalContext(trees["context"], "val", num_classes=21)
    with pytest.raises(FileNotFoundError, match="split list .*train.txt does not exist"):
        open_dataset(trees["context"], "train")
    (trees["voc"] / "SegmentationClass" / "2007_000033.png").unlink()
    with pytest.raises(FileNotFoundError, match="lists '2007_000033' but its label map .* does not exist"):
        open_dataset(trees["voc"], "val")
    assert len(open_dataset(trees["voc"], "aug")) == 2 and len(open_dataset(trees["voc"], "train")) == 4


PAPER_RECIPES = json.loads((ROOT / "tests" / "fixtures" / "mmseg_paper_recipes.json").read_text())


def test_every_paper_recipe_is_a_fixture_entry():
    assert sorted(f"papers/{p.name}" for p in (ROOT / "configs" / "papers").glob("*.yaml")) == sorted(PAPER_RECIPES)


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_paper_recipe_matches_composed_mmseg_config(name):
    """The papers' recipes (COCO-Stuff SegFormer, Pascal Context SETR) carry the numbers of an mmseg config of the
    same model and schedule with mmseg's dataset pipeline and the paper's changes (tests/oracles/mmseg_recipes.py)."""
    from segformer.models.zoo import model_config
    from segformer.training.config import load_config

    mm, cfg = PAPER_RECIPES[name], load_config(ROOT / "configs" / name)
    for key in ("optimizer", "lr", "weight_decay", "head_lr_mult", "power", "min_lr", "iters", "eval_interval",
                "checkpoint_interval", "batch_size", "cat_max_ratio", "flip_prob", "eval_mode", "warmup_iters"):
        assert getattr(cfg, key) == mm[key], key
    assert [list(cfg.crop_size), list(cfg.scale), list(cfg.ratio_range)] == [mm["crop_size"], mm["scale"],
                                                                              mm["ratio_range"]]
    assert mm["scale"] == mm["test_scale"]
    if cfg.eval_mode == "slide":
        assert [list(cfg.eval_crop), list(cfg.eval_stride)] == [mm["eval_crop"], mm["eval_stride"]]
    model = model_config(cfg.model, **{**cfg.model_args, "num_classes": cfg.num_classes or mm["num_classes"]})
    assert model.num_classes == mm["num_classes"]
    if mm["img_size"] is not None:  # SETR: the ViT grid of the crop, MLA head
        assert list(model.encoder.img_size) == mm["img_size"] and model.decoder == "mla"
        assert cfg.momentum == mm["momentum"]
    else:
        assert model.decoder_dim == mm["decode_channels"] and model.encoder.drop_path_rate == mm["drop_path_rate"]
        assert list(cfg.betas) == mm["betas"] and cfg.warmup_ratio == mm["warmup_ratio"]
    assert cfg.data is None
