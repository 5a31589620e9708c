"""Safe reading of point-cloud frames saved with ``torch.save`` (docs/formats.md, "Loading is safe").

PSG4D's point-cloud branch wrote its frames under torch 1.5: the *legacy* (non-zip) serialisation, holding a tuple
of **numpy** arrays pickled by numpy 1.x. spade4d's own layout holds tuples of tensors in the zip serialisation.
Both are read here with ``torch.load(weights_only=True)``: torch's restricted unpickler, which builds nothing but
tensors, plain containers and the globals allowed below. The allow-list is numpy's array reconstruction
(``_reconstruct`` under its numpy-1 name ``numpy.core.multiarray`` and its numpy-2 name ``numpy._core.multiarray``),
``numpy.ndarray``, ``numpy.dtype`` and numpy's numeric/boolean dtype classes. Object and string dtypes are not
allowed, so no Python object from a file is ever built; a file that asks for anything else is refused with a
one-line error naming it. There is no "trust this file" switch because none is needed for the published data.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TorchFileError", "safe_numpy_globals", "load_tuple"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# dtype classes a point-cloud frame may use; object, string and void dtypes are deliberately absent
_DTYPE_NAMES = (
    "BoolDType Int8DType UInt8DType Int16DType UInt16DType Int32DType UInt32DType Int64DType UInt64DType "
    "LongDType ULongDType LongLongDType ULongLongDType ByteDType UByteDType ShortDType UShortDType IntDType "
    "UIntDType Float16DType Float32DType Float64DType LongDoubleDType"
).split()


class TorchFileError(ValueError):
    """A ``.pth`` file cannot be read safely; the message names the file and the problem."""


def safe_numpy_globals() -> list[Any]:
    """The globals a numpy array pickle needs, under their numpy-1 and numpy-2 names (torch ``safe_globals``)."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    import numpy.dtypes as dtypes

    allowed: list[Any] = [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
    ]
    allowed += [getattr(dtypes, n) for n in _DTYPE_NAMES if hasattr(dtypes, n)]
    return allowed


def _first_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e)).strip()
    for line in text.splitlines():
        # torch's refusal puts the reason after its advice; keep the reason
        if "Unsupported global" in line or "but got" in line or "Can only build" in line:
            return line.strip().rstrip(".")
    return (text.splitlines() or [type(e).__name__])[0].strip()


def _classify(path: Path) -> str:
    """'zip' or 'legacy' for a torch.save file, or raise a one-line error saying what else it is."""
    import zipfile

    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == 0x80:  # a pickle stream (protocol 2+): the legacy torch serialisation
        return "legacy"
    if not head:
        raise TorchFileError(f"{path}: empty file")
    raise TorchFileError(f"{path}: not a torch.save file (neither the zip nor the legacy pickle serialisation)")


def load_tuple(path: str | os.PathLike) -> tuple:
    """The tuple (or list) a ``torch.save`` frame file holds, its elements tensors or numpy arrays, loaded with
    ``weights_only=True`` and the numpy allow-list. Raises :class:`TorchFileError` (one line, naming the file)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TorchFileError(f"{path}: frame file not found")
    kind = _classify(path)
    try:
        with torch.serialization.safe_globals(safe_numpy_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TorchFileError(f"{path}: refused by the safe loader ({_first_line(e)})") from None
    except (EOFError, RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise TorchFileError(f"{path}: unreadable {kind} torch file, truncated or corrupt ({_first_line(e)})") from None
    if not isinstance(data, (tuple, list)):
        raise TorchFileError(f"{path}: holds a {type(data).__name__}, expected a tuple of arrays")
    for k, a in enumerate(data):
        if not isinstance(a, (np.ndarray, torch.Tensor)):
            raise TorchFileError(f"{path}: element {k} is a {type(a).__name__}, expected a tensor or numpy array")
    return tuple(data)


def save_numpy_tuple_legacy(path: str | os.PathLike, arrays: tuple) -> None:
    """Write ``arrays`` (numpy) the way PSG4D's generator did: ``torch.save`` of a tuple of numpy arrays in the
    legacy (non-zip) serialisation, the arrays pickled under numpy 1.x's module name ``numpy.core.multiarray``.

    The legacy format's pickles name globals as newline-terminated text (protocol 2 ``GLOBAL``), so numpy 2's
    ``numpy._core.multiarray`` is renamed in place to what numpy 1.x wrote. Written atomically."""
    import io

    import torch

    from spade4d.io import write_with

    buf = io.BytesIO()
    torch.save(tuple(np.asarray(a) for a in arrays), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    write_with(Path(path), lambda tmp: Path(tmp).write_bytes(data))
