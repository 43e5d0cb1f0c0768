"""The training recipes shipped with the package (the repository's `configs/`, installed as package data under
`segformer/configs`), so `segformer train segformer_b0_ade20k_512 ...` works from any directory."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path


def recipes_dir() -> Path:
    """The installed recipes' folder."""
    return Path(str(resources.files("segformer") / "configs"))


def list_recipes() -> list[str]:
    """Recipe names, e.g. "segformer_b0_ade20k_512", "papers/setr_mla_pascal_context_480"."""
    root = recipes_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def find_recipe(source: str | Path) -> Path:
    """`source` if it is a file, else the installed recipe of that name (".yaml" optional); a FileNotFoundError
    naming the close recipes otherwise."""
    path = Path(source)
    if path.is_file():
        return path
    name = path.as_posix().removesuffix(".yaml").removeprefix("configs/")
    candidate = recipes_dir() / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    names = list_recipes()
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; installed recipes: {', '.join(names)}"
    raise FileNotFoundError(f"config {source}: no such file, and no installed recipe named {name!r}{hint}")
