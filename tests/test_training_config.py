"""Training configs: the recipes carry MMSegmentation's numbers (fixture written by mmseg itself), YAML / flags /
--set layering, and bad input named clearly (unknown key, wrong type, missing data root, wrong class count)."""

import json
from pathlib import Path

import pytest
import yaml

from segformer import cli
from segformer.data.synthetic import write_synthetic
from segformer.models.zoo import get_entry, model_config
from segformer.training.config import FIELDS, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = json.loads((ROOT / "tests" / "fixtures" / "mmseg_recipes.json").read_text())
CONFIGS = ROOT / "configs"


def test_every_recipe_is_a_fixture_entry_and_back():
    segmentation = [p.name for p in CONFIGS.glob("*.yaml") if "_pose_" not in p.name]  # pose: test_pose.py
    assert sorted(segmentation) == sorted(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_matches_mmseg(name):
    mm = RECIPES[name]
    cfg = load_config(CONFIGS / name)
    for key in ("optimizer", "lr", "weight_decay", "head_lr_mult", "power", "min_lr", "iters", "eval_interval",
                "checkpoint_interval", "batch_size", "cat_max_ratio", "flip_prob", "eval_mode", "warmup_iters"):
        assert getattr(cfg, key) == mm[key], key
    assert list(cfg.crop_size) == mm["crop_size"]
    assert list(cfg.scale) == mm["scale"] == mm["test_scale"]
    assert list(cfg.ratio_range) == mm["ratio_range"]
    if mm["eval_mode"] == "slide":
        assert list(cfg.eval_crop) == mm["eval_crop"] and list(cfg.eval_stride) == mm["eval_stride"]
    if mm["optimizer"] == "sgd":
        assert cfg.momentum == mm["momentum"]
    else:
        assert list(cfg.betas) == mm["betas"] and cfg.warmup_ratio == mm["warmup_ratio"]
        assert cfg.no_decay == "mmseg" and mm["norm_decay_mult"] == 0.0
    # The model the recipe names is mmseg's: decoder type and width, drop-path, crop-sized ViT grid.
    model = model_config(cfg.model, **cfg.model_args)
    if get_entry(cfg.model).arch == "segformer":
        assert mm["decode_head"] == "SegformerHead" and model.decoder_style == "mmseg"
        assert model.decoder_dim == mm["decode_channels"] and model.encoder.drop_path_rate == mm["drop_path_rate"]
        assert cfg.pretrained == f"nvidia/mit-{cfg.model.split('-')[1]}"
    else:
        assert model.decoder == name.split("_")[1]
        assert mm["decode_head"] == ("SETRMLAHead" if model.decoder == "mla" else "SETRUPHead")
        assert list(model.encoder.img_size) == mm["crop_size"]
        assert (model.num_classes == 150) == ("ade20k" in name)


def test_yaml_flags_and_sets_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("iters: 100\nlr: 6e-5\ncrop_size: 64\nmodel_args: {decoder_style: mmseg}\n")
    cfg = load_config(path, {"iters": 50, "lr": None}, ["iters=20", "model_args.drop_path_rate=0",
                                                       "clip_grad=1.5", "class_weights=[1, 2.5]"])
    assert cfg.iters == 20 and cfg.lr == 6e-5 and isinstance(cfg.lr, float)  # YAML reads 6e-5 as a string
    assert cfg.crop_size == (64, 64) and cfg.clip_grad == 1.5 and cfg.class_weights == [1.0, 2.5]
    assert cfg.model_args == {"decoder_style": "mmseg", "drop_path_rate": 0}
    again = TrainConfig(**yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg and set(cfg.to_dict()) == set(FIELDS)


@pytest.mark.parametrize("sets, message", [
    (["itres=5"], "unknown key 'itres' (did you mean 'iters'?)"),
    (["iters"], "expected key=value"),
    (["iters=ten"], "iters must be int, got 'ten'"),
    (["crop_size=[1, 2, 3]"], "crop_size must be a list of 2 ints"),
    (["optimizer=adam"], "optimizer must be one of adamw, sgd; got 'adam'"),
    (["iters.sub=1"], "iters is not a mapping"),
    (["batch_size=10", "grad_accum=4"], "batch_size 10 is not divisible by grad_accum 4"),
])
def test_bad_set_is_named(sets, message):
    with pytest.raises(ValueError) as info:
        load_config(None, {}, sets)
    assert message in str(info.value)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model: segformer-b0\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"recipe\.yaml: unknown key 'learning_rate'"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_cli_errors_name_the_root_and_class_count(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    assert f"dataset folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    data = write_synthetic(tmp_path / "data", num_train=2, num_val=1, min_size=16, max_size=16)
    assert cli.main(["train", "--data", str(data), "--num-classes", "7", "--out", str(tmp_path / "run")]) == 2
    assert "lists 6 classes but 7 were requested" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--set", "foo=1"]) == 2
    assert "--set foo=1: unknown key 'foo'" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(data)]) == 2
    assert "out: no run directory given" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written for a refused run


# ---------------------------------------------------------------- run-length-aware defaults (issue 14)
def test_unset_schedule_keys_follow_the_run_length():
    from segformer.training.config import resolve_run_length, usable_cpus

    short = resolve_run_length(TrainConfig(iters=600))
    assert (short.warmup_iters, short.eval_interval, short.checkpoint_interval) == (30, 120, 120)
    assert short.num_workers == min(8, usable_cpus())
    long = resolve_run_length(TrainConfig())  # the 160k ADE20K schedule keeps its numbers
    assert (long.warmup_iters, long.eval_interval, long.checkpoint_interval) == (1500, 16000, 16000)
    given = resolve_run_length(TrainConfig(iters=600, warmup_iters=0, eval_interval=0, num_workers=0))
    assert (given.warmup_iters, given.eval_interval, given.checkpoint_interval, given.num_workers) == (0, 0, 600, 0)
    assert resolve_run_length(TrainConfig(iters=3)).eval_interval == 1


def test_unset_augmentation_follows_the_run_length():
    from segformer.training.config import resolve_run_length

    def augmentation(**kwargs):
        c = resolve_run_length(TrainConfig(**kwargs))
        return tuple(c.ratio_range), c.photometric

    assert augmentation(iters=160000) == ((0.5, 2.0), True)  # mmseg's pipeline from its 20k schedule on
    assert augmentation(iters=20000) == ((0.5, 2.0), True)
    assert augmentation(iters=10000) == ((0.7071, 1.4142), True)
    assert augmentation(iters=9999)[1] is False
    assert augmentation(iters=600) == ((0.9794, 1.021), False)  # a short run: nearly unscaled crops
    # what the user or a recipe sets is kept, at any length
    assert augmentation(iters=600, ratio_range=[0.5, 2.0], photometric=True) == ((0.5, 2.0), True)
    assert augmentation(iters=160000, ratio_range=1.0, photometric=False) == ((1.0, 1.0), False)
    recipe = load_config("segformer_b0_ade20k_512", sets=["iters=600"])
    assert augmentation(**{k: getattr(recipe, k) for k in ("iters", "ratio_range", "photometric")}) == \
        ((0.5, 2.0), True)


def test_a_warm_up_over_a_tenth_of_the_run_warns(caplog):
    from segformer.training.config import resolve_run_length

    with caplog.at_level("WARNING", logger="segformer.training.config"):
        resolve_run_length(TrainConfig(iters=600, warmup_iters=60))
    assert not caplog.records
    with caplog.at_level("WARNING", logger="segformer.training.config"):
        resolve_run_length(TrainConfig(iters=600, warmup_iters=1500))
    assert "warmup_iters=1500 is more than a tenth of the 600-step run" in caplog.text


def test_every_key_is_listed_with_its_meaning_by_the_cli_and_the_readme(capsys):
    from segformer.training.config import KEY_HELP

    assert sorted(KEY_HELP) == sorted(FIELDS)
    assert cli.main(["train", "--list-keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(FIELDS)
    assert "warmup_iters         null" in "\n".join(lines)
    readme = (ROOT / "README.md").read_text()
    missing = [k for k in FIELDS if f"| `{k}` |" not in readme]
    assert not missing, f"README's key table lacks {missing}"
