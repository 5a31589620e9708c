"""Prediction files (docs/formats.md): writing, and loading with validation.

A prediction file is parsed lazily, one sequence (or image) at a time, so an evaluator's memory does not grow
with the size of the split: the raw JSON holds only RLE strings; masks are decoded when a sequence is asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spade4d.io import read_json, write_json
from spade4d.rle import RLEError
from spade4d.structures import (
    PRED_FORMAT_2D,
    PRED_FORMAT_4D,
    PRED_VERSION,
    SceneGraph2D,
    SceneGraph4D,
    StructureError,
)


class PredictionFileError(ValueError):
    """A prediction file is malformed; the message names the file, the sequence or image, and the field."""


def _read(path: str | os.PathLike, fmt: str, key: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PredictionFileError(f"{path}: prediction file not found")
    try:
        data = read_json(path)
    except ValueError as e:
        raise PredictionFileError(str(e)) from None
    if not isinstance(data, dict):
        raise PredictionFileError(f"{path}: top level is a {type(data).__name__}, expected an object")
    if data.get("format") != fmt:
        raise PredictionFileError(f"{path}: field 'format' is {data.get('format')!r}, expected {fmt!r}")
    if type(data.get("version")) is not int or data.get("version") != PRED_VERSION:
        raise PredictionFileError(
            f"{path}: field 'version' is {data.get('version')!r}; this spade4d reads version {PRED_VERSION}"
        )
    if not isinstance(data.get(key), dict):
        raise PredictionFileError(f"{path}: field {key!r} missing or not an object")
    unknown = [k for k in data if k not in ("format", "version", key)]
    if unknown:
        raise PredictionFileError(f"{path}: unknown top-level field {unknown[0]!r} (format, version, {key})")
    return data


def _check_scores(path: Path, where: str, entry: Mapping[str, Any]) -> None:
    """NaN/inf scores are refused with the field named (json lets NaN through as a float)."""
    for kind in ("objects", "relations"):
        items = entry.get(kind, [])
        if not isinstance(items, list):
            raise PredictionFileError(f"{path}: {where}: field {kind!r} is not a list")
        for k, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise PredictionFileError(f"{path}: {where}: {kind}[{k}] is not an object")
            score = item.get("score", 1.0)
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise PredictionFileError(f"{path}: {where}: {kind}[{k}].score is {score!r}, not a finite number")


class PredictionFile4D:
    """A ``spade4d-predictions-4d`` file; ``get(video_id, num_points)`` parses and validates one sequence."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._data = _read(self.path, PRED_FORMAT_4D, "sequences")
        self.sequences: dict[str, Any] = self._data["sequences"]
        for vid, entry in self.sequences.items():  # every entry, scored or not, is at least an object
            if not isinstance(entry, Mapping):
                raise PredictionFileError(f"{self.path}: sequence {vid!r}: entry is a {type(entry).__name__}")

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.sequences

    def video_ids(self) -> list[str]:
        return list(self.sequences)

    def get(self, video_id: str, num_points: Sequence[int] | None = None) -> SceneGraph4D:
        where = f"sequence {video_id!r}"
        entry = self.sequences[video_id]
        if not isinstance(entry, Mapping):
            raise PredictionFileError(f"{self.path}: {where}: entry is not an object")
        _check_scores(self.path, where, entry)
        if num_points is not None and entry.get("num_frames") != len(num_points):
            raise PredictionFileError(
                f"{self.path}: {where}: field 'num_frames' is {entry.get('num_frames')!r}, the sequence has "
                f"{len(num_points)} frames"
            )
        try:
            return SceneGraph4D.from_json(video_id, entry, num_points=num_points)
        except (StructureError, RLEError) as e:
            raise PredictionFileError(f"{self.path}: {e}") from None


class PredictionFile2D:
    """A ``spade4d-predictions-2d`` file; ``get(image_id, (h, w))`` parses and validates one image."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._data = _read(self.path, PRED_FORMAT_2D, "images")
        self.images: dict[str, Any] = self._data["images"]

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.images

    def get(self, image_id: str, size: tuple[int, int] | None = None) -> SceneGraph2D:
        where = f"image {image_id!r}"
        entry = dict(self.images[image_id])
        _check_scores(self.path, where, entry)
        if size is not None:
            for field, value in zip(("height", "width"), size):
                if field in entry and entry[field] != value:
                    raise PredictionFileError(
                        f"{self.path}: {where}: field {field!r} is {entry[field]}, the image's is {value}"
                    )
            entry.setdefault("height", size[0])
            entry.setdefault("width", size[1])
        try:
            return SceneGraph2D.from_json(image_id, entry)
        except (StructureError, RLEError) as e:
            raise PredictionFileError(f"{self.path}: {e}") from None


def triplet_masks_2d(pf: PredictionFile2D, image_id: str, size: tuple[int, int]) -> dict[int, tuple]:
    """The per-triplet masks of one image of a 2D prediction file: relation index -> (subject mask, object mask),
    for the relations that carry both ``subject_mask`` and ``object_mask`` RLEs of the image size (the
    ``--per-triplet-masks`` setting, docs/metrics.md)."""
    from spade4d import rle

    out = {}
    for r, rel in enumerate(pf.images[image_id].get("relations") or []):
        if not isinstance(rel, Mapping) or ("subject_mask" not in rel and "object_mask" not in rel):
            continue
        where = f"{pf.path}: image {image_id!r}: relation {r}"
        if "subject_mask" not in rel or "object_mask" not in rel:
            raise PredictionFileError(f"{where}: has one of subject_mask / object_mask but not both")
        try:
            out[r] = tuple(
                rle.decode_mask(rel[k], expected_size=size, context=f"{where} {k}")
                for k in ("subject_mask", "object_mask")
            )
        except RLEError as e:
            raise PredictionFileError(str(e)) from None
    return out


def load_predictions_4d(
    path: str | os.PathLike, num_points: Mapping[str, Sequence[int]] | None = None, only: Iterable[str] | None = None
) -> dict[str, SceneGraph4D]:
    """Parse (and validate) every sequence of a 4D prediction file, or those in ``only``."""
    pf = PredictionFile4D(path)
    ids = pf.video_ids() if only is None else [v for v in only if v in pf]
    return {v: pf.get(v, None if num_points is None else num_points.get(v)) for v in ids}


def write_predictions_4d(path: str | os.PathLike, graphs: Iterable[SceneGraph4D]) -> Path:
    """Write graphs as a ``spade4d-predictions-4d`` file (atomically)."""
    return write_json(
        path,
        {"format": PRED_FORMAT_4D, "version": PRED_VERSION, "sequences": {g.video_id: g.to_json() for g in graphs}},
    )


def write_predictions_2d(path: str | os.PathLike, graphs: Iterable[SceneGraph2D]) -> Path:
    return write_json(
        path, {"format": PRED_FORMAT_2D, "version": PRED_VERSION, "images": {g.image_id: g.to_json() for g in graphs}}
    )
