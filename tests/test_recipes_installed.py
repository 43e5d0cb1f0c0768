"""Recipes are installed with the package: `segformer train NAME` resolves from any directory (here a temporary
cwd with no configs/), to the same settings as the repository's file; unknown names say what is installed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from segformer.training.config import load_config
from segformer.training.recipes import find_recipe, list_recipes, recipes_dir

ROOT = Path(__file__).resolve().parents[1]


def test_every_repository_recipe_is_installed():
    repo = sorted(p.relative_to(ROOT / "configs").with_suffix("").as_posix()
                  for p in (ROOT / "configs").rglob("*.yaml"))
    assert repo and list_recipes() == repo
    assert recipes_dir().resolve() == (ROOT / "configs").resolve()


def test_name_resolves_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not Path("configs").exists()
    for name in ("segformer_b0_ade20k_512", "segformer_b0_ade20k_512.yaml", "papers/setr_mla_pascal_context_480"):
        assert find_recipe(name).is_file()
    config = load_config("segformer_b0_ade20k_512", {"data": "somewhere"})
    assert config == load_config(ROOT / "configs" / "segformer_b0_ade20k_512.yaml", {"data": "somewhere"})
    own = tmp_path / "segformer_b0_ade20k_512"
    own.write_text("iters: 7\n")  # a file of that path wins over the installed recipe
    assert load_config("segformer_b0_ade20k_512").iters == 7
    with pytest.raises(FileNotFoundError, match=r"no installed recipe named 'segformer_b0_ade20k'; did you mean "
                                                r"segformer_b0_ade20k_512"):
        find_recipe("segformer_b0_ade20k")


def test_cli_train_takes_a_recipe_name_outside_the_repository(tmp_path):
    """The command a user types, in a fresh process whose cwd is not the repository: the recipe loads and the
    run stops at the (missing) data with the data's error, not the config's."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "segformer.cli", "train", "setr_naive_ade20k_512", "--data",
                           str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"dataset folder {tmp_path / 'nowhere'} does not exist" in proc.stderr
