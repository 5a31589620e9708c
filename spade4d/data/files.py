"""Reading the files datasets are made of, with one-line errors naming the file: JSON, images, ``.npy`` arrays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from spade4d.io import read_json


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return read_json(path)
    except ValueError as e:
        raise DatasetError(str(e)) from None


def load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: unreadable or truncated .npy ({e})") from None


def load_image(path: Path, mode: str | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert(mode) if mode else im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable or truncated image ({e})") from None
