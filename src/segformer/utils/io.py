"""Writing files safely: everything goes to a temporary beside the target and is renamed into place.

- A crash mid-write never leaves a partial file (or folder) under the real name.
- Files get mode 0666 and folders 0777 minus the umask (0644 / 0755 usually), like any ordinary file, not the
  0600 / 0700 of `tempfile`.
- Temporaries are named `.NAME.PID.XXXXXXXX.tmp`; one whose process no longer runs was left by a kill, and is
  removed by the next process that writes to the same folder (once per folder and process: a folder of many
  outputs is not listed again for every file).
- `atomic_dir` swaps a whole folder in (an atomic exchange on Linux), so a folder's files always belong together.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

_TEMP = re.compile(r"\..+\.(\d+)\.[A-Za-z0-9_]{8}\.tmp")
_CLEANED: set[str] = set()  # folders this process has cleaned
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is set-and-return)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporaries in `folder` that a process which no longer runs left behind; returns them."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP.fullmatch(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def check_free(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing `path` unless `overwrite`."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")


def _clean_once(folder: Path) -> None:
    key = os.path.realpath(folder)
    if key not in _CLEANED:
        clean_stale_temps(folder)
        _CLEANED.add(key)


def atomic_write(path: str | Path, write: Callable[[str], None], overwrite: bool = True) -> Path:
    """Call `write(tmp_path)`, then rename the temporary onto `path` (refused if `path` exists and not
    `overwrite`). The file gets the umask's mode."""
    path = Path(path)
    check_free(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str, overwrite: bool = True) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    done = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def atomic_dir(path: str | Path, fill: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Build a folder with `fill(tmp_dir)`, then put it at `path` in one step: renamed in if `path` is new,
    exchanged atomically with the old folder (then removed) if `overwrite`. Where the system has no atomic
    exchange, the old folder is moved aside first and a kill in between leaves both under temporary names."""
    path = Path(path)
    check_free(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())
        fill(tmp)
        if not path.exists():
            os.replace(tmp, path)
        elif not _exchange(tmp, path):
            aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
            os.replace(path, aside / "old")
            os.replace(tmp, path)
            tmp = aside
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def json_safe(value: object) -> object:
    """`value` with every NaN float, also inside dicts, lists and tuples, replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return [json_safe(v) for v in value] if isinstance(value, (list, tuple)) else value


def write_json(path: str | Path, data: object, overwrite: bool = True) -> Path:
    """`data` as indented JSON, atomically; NaN floats (e.g. the IoU of a class never seen) are written as null."""
    return atomic_write_text(path, json.dumps(json_safe(data), indent=2) + "\n", overwrite)


def atomic_files(paths: list[str | Path], fill: Callable[[Path], None], overwrite: bool = False) -> list[Path]:
    """Write several files that belong together (e.g. OpenVINO's NAME.xml + NAME.bin): `fill(tmp_dir)` writes
    each under its own name into a temporary folder beside them (one folder for all), then each is renamed into
    place in the order given, so a reader that looks for the last one finds the others complete. Every file is
    checked first (refused if it exists and not `overwrite`) and gets the umask's mode."""
    paths = [Path(p) for p in paths]
    parent = paths[0].parent
    if any(p.parent != parent for p in paths):
        raise ValueError(f"atomic_files writes into one folder, got {', '.join(map(str, paths))}")
    for path in paths:
        check_free(path, overwrite)
    parent.mkdir(parents=True, exist_ok=True)
    _clean_once(parent)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(paths[-1]), suffix=".tmp", dir=parent))
    try:
        fill(tmp)
        for path in paths:
            os.chmod(tmp / path.name, 0o666 & ~current_umask())
            os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
