"""Atomic file output: a reader never sees a half-written file, and an interrupted job leaves no file that
looks complete. Everything in spade4d that writes a result goes through these helpers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


class OutputError(OSError):
    """An output location cannot be used."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _free_mib(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB"
    except OSError:
        return "unknown space"


def honour_umask(path: Path, directory: bool = False) -> None:
    """Give a temporary file (0600) or folder (0700) the mode a plain ``open``/``mkdir`` would have, so outputs on a
    shared machine are readable by whom the user's umask allows."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove ``.<name>.partial-*`` siblings of ``path`` left by builds whose process is gone (killed)."""
    removed = []
    for d in path.parent.glob(f".{path.name}.partial-*"):
        pid_file = d / ".owner_pid"
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, 0)  # raises when no such process
            continue  # a live build: leave it
        except (OSError, ValueError):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes[-1:]), dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    honour_umask(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"{path}: cannot be written ({e.strerror or e}; {_free_mib(path.parent)} free)") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; raise ``ValueError`` with one line naming the file and the problem (not UTF-8, not
    JSON, truncated, nested too deeply). NaN and Infinity constants are read as floats for the callers to refuse."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, default=_json_default)
    return Path(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_with(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check it can be written, with a one-line error if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", delete=True)
        probe.close()
    except OSError as e:
        raise OutputError(f"cannot write to {path}: {e.strerror or e}") from None
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and rename it onto ``path`` when the block succeeds.

    An interrupted build leaves only ``.<name>.partial-*`` behind, never a directory at ``path`` that looks
    complete. ``path`` may exist if it is empty, or when ``overwrite`` is set.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path} exists and is not a directory")
        if any(path.iterdir()) and not overwrite:
            raise OutputError(f"{path} exists and is not empty (pass --overwrite to replace it)")
    check_writable_dir(path.parent if path.parent != Path("") else Path("."))
    remove_stale_partials(path)  # a killed earlier build's folder (its process is gone)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    honour_umask(tmp, directory=True)
    (tmp / ".owner_pid").write_text(str(os.getpid()))
    try:
        yield tmp
        (tmp / ".owner_pid").unlink(missing_ok=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
