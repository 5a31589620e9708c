"""What a run records of the code and libraries it ran with: the git commit of the checkout (``code_version``) and
the versions of Python and torch (``environment``), kept per start of a run in ``environment.json``."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from spade4d.version import __version__

SOURCE = Path(__file__).resolve().parents[1]  # the checkout, when spade4d runs from one


def code_version(where: str | Path = SOURCE) -> str:
    """The git commit of the checkout ``where`` (12 hex digits; ``+changes`` when tracked files differ from it), or
    ``unknown`` outside a git checkout (an installed wheel): runs of different code are not to be compared as
    repeats (docs/experiments.md, "Reproducibility")."""
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty else "")


def environment() -> dict[str, str]:
    """What a training run records beside its config: spade4d's version and commit, Python, torch and the
    platform. Two runs of one config repeat bit for bit only when these agree (and the thread count, in the config)."""
    import torch

    return {
        "spade4d": __version__,
        "code": code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def record_environment(out: str | Path, step: int = 0) -> list[dict]:
    """Append this process's :func:`environment` to ``<out>/environment.json``, the list of every start of the run
    in ``out`` (``step``: where it started; a resumed run adds an entry, so a run continued under other code says
    so). Returns the list."""
    from spade4d.io import read_json, write_json

    path = Path(out) / "environment.json"
    starts = read_json(path) if path.is_file() else []
    if not isinstance(starts, list):
        raise ValueError(f"{path}: expected a list of the run's starts")
    starts.append({"step": int(step), **environment()})
    write_json(path, starts, indent=1)
    return starts


def recorded_codes(run: str | Path) -> list[str]:
    """The commits a run folder was trained with (``environment.json``; ``not recorded`` before runs kept one)."""
    from spade4d.io import read_json

    path = Path(run) / "environment.json"
    if not path.is_file():
        return ["not recorded"]
    starts = read_json(path)
    codes = [s.get("code", "unknown") for s in starts if isinstance(s, dict)] if isinstance(starts, list) else []
    return list(dict.fromkeys(codes)) or ["not recorded"]
