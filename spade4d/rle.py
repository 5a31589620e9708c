"""COCO run-length encoding of image masks and point masks (docs/formats.md).

A point mask of a frame with ``N`` points is encoded as an ``(N, 1)`` array, so its RLE ``size`` is ``[N, 1]``.
``counts`` are stored as str (pycocotools gives bytes) so the result is JSON-ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


class RLEError(ValueError):
    """An RLE dict is malformed or has the wrong size."""


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """RLE of a 2-D boolean mask ``(H, W)``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise RLEError(f"expected a 2-D mask, got shape {mask.shape}")
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def encode_point_mask(mask: np.ndarray) -> dict[str, Any]:
    """RLE of a 1-D point mask ``(N,)`` as an ``(N, 1)`` image."""
    return encode_mask(np.asarray(mask).reshape(-1, 1))


MAX_ELEMENTS = 2**31  # larger masks are refused before anything is allocated


def string_counts(raw: bytes, context: str = "mask") -> np.ndarray:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, vectorised): 5 bits per
    character offset by 48, a continuation bit (0x20), sign extension from the last character's 0x10 bit, and runs
    after the third stored as the difference to the run two before."""
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if not len(c):
        return np.zeros(0, dtype=np.int64)
    if (c < 0).any() or (c >= 64).any():
        raise RLEError(f"{context}: RLE counts string holds a character outside the COCO alphabet")
    more = (c & 0x20) != 0
    if more[-1]:
        raise RLEError(f"{context}: truncated RLE counts string")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    shift = np.arange(len(c)) - np.repeat(starts, ends - starts + 1)  # (char index within its value) * 5 below
    if shift.max() > 11:  # no count of a real mask needs more than 60 bits
        raise RLEError(f"{context}: RLE counts string holds an over-long number")
    vals = np.add.reduceat((c & 0x1F) << (5 * shift), starts)
    negative = (c[ends] & 0x10) != 0
    vals = np.where(negative, vals - (np.int64(1) << (5 * (ends - starts + 1))), vals)
    runs = vals.copy()
    runs[3::2] = np.cumsum(vals[1::2])[1:]  # run i > 2 adds run i - 2 (cumulative per parity)
    runs[4::2] = np.cumsum(vals[2::2])[1:]
    return runs


def decode_mask(
    r: Mapping[str, Any], expected_size: tuple[int, int] | None = None, context: str = "mask"
) -> np.ndarray:
    """Decode an RLE dict to a boolean array of its ``size``, checking the size when ``expected_size`` is given."""
    if not isinstance(r, Mapping) or "size" not in r or "counts" not in r:
        raise RLEError(f"{context}: not an RLE dict with 'size' and 'counts'")
    size = r["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size)
    ):
        raise RLEError(f"{context}: RLE size {size!r} is not [height, width]")
    if expected_size is not None and tuple(size) != tuple(expected_size):
        raise RLEError(f"{context}: RLE size {list(size)} does not match the expected {list(expected_size)}")
    if size[0] * size[1] > MAX_ELEMENTS:
        raise RLEError(f"{context}: RLE size {list(size)} claims more than {MAX_ELEMENTS} elements")
    counts = r["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise RLEError(f"{context}: uncompressed RLE counts must be non-negative integers")
        if sum(counts) != size[0] * size[1]:
            raise RLEError(f"{context}: uncompressed RLE counts do not add up to {size[0]}x{size[1]}")
        r = mask_utils.frPyObjects({"size": list(size), "counts": counts}, size[0], size[1])
    elif isinstance(counts, (str, bytes)):
        raw = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
        runs = string_counts(raw, context)
        if (runs < 0).any() or int(runs.sum()) != size[0] * size[1]:
            raise RLEError(
                f"{context}: RLE counts are negative or do not add up to {size[0]}x{size[1]} (corrupt counts string)"
            )
        r = {"size": list(size), "counts": raw}
    else:
        raise RLEError(f"{context}: RLE counts of type {type(counts).__name__}")
    if size[0] * size[1] == 0:
        return np.zeros(size, dtype=bool)
    try:
        out = mask_utils.decode(r)
    except Exception as e:  # pycocotools raises bare exceptions on corrupt strings
        raise RLEError(f"{context}: corrupt RLE counts ({e})") from None
    return out.astype(bool)


def area(r: Mapping[str, Any]) -> int:
    """Number of set pixels of an RLE without decoding it."""
    counts = r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]
    return int(mask_utils.area({"size": list(r["size"]), "counts": counts}))
