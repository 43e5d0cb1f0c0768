"""Input files of the CLI: images named by file, folder or glob, and each process's share under torchrun."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from ..data.datasets import IMAGE_EXTENSIONS


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The share of `items` that process `rank` of `world_size` handles: every world_size-th, from rank."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
    return list(items[rank::world_size])


def collect_images(inputs: Sequence[str], exclude: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(image file, output stem) pairs for files, folders (searched recursively for IMAGE_EXTENSIONS) and glob
    patterns. A file's stem is its name without the extension; inside a folder, its path relative to the folder.
    A file named directly is taken whatever its extension (reading it says whether it is an image). A folder
    search skips everything under `exclude` (the output folder) when that lies inside it, so earlier outputs
    are not taken as inputs."""
    skip = Path(exclude).resolve() if exclude is not None else None
    pairs = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            pairs.append((path, Path(path.stem)))
        elif path.is_dir():
            inner = skip is not None and skip != path.resolve()
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not (inner and p.resolve().is_relative_to(skip)))
            if not found:
                raise FileNotFoundError(f"no images in folder {path} (searched for {', '.join(IMAGE_EXTENSIONS)})")
            pairs += [(p, p.relative_to(path).with_suffix("")) for p in found]
        elif any(c in item for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"no files match the pattern {item!r}")
            pairs += [(p, Path(p.stem)) for p in found]
        else:
            raise FileNotFoundError(f"input {item}: no such file, folder or glob match")
    return pairs
