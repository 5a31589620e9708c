"""Typed containers passed between stages.

Conventions (stated once for the whole package):

* coordinates are metres in a right-handed world frame with +z up;
* a sequence has ``T`` frames; frame ``t`` holds ``N_t`` points; a flat point array of all frames is indexed
  through ``offsets`` (``offsets[t]:offsets[t + 1]`` are frame ``t``'s points, Pointcept style);
* frame spans are inclusive ``(start, end)`` pairs (docs/formats.md);
* labels and predicates are names (strings), never indices, so open-vocabulary output needs no index table.

Every container validates on construction and raises :class:`StructureError` with a message that says what is
wrong, rather than letting a bad value travel to a stage that fails far from the cause.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spade4d import rle

__all__ = [
    "StructureError",
    "PointSequence",
    "Object2D",
    "Relation2D",
    "SceneGraph2D",
    "ObjectTube",
    "Relation4D",
    "SceneGraph4D",
    "merge_spans",
    "spans_to_frames",
    "frames_to_spans",
    "PRED_FORMAT_4D",
    "PRED_FORMAT_2D",
    "PRED_VERSION",
]

PRED_FORMAT_4D = "spade4d-predictions-4d"
PRED_FORMAT_2D = "spade4d-predictions-2d"
PRED_VERSION = 1


class StructureError(ValueError):
    """A container was given values that break its invariants."""


def _where(context: str) -> str:
    return f"{context}: " if context else ""


# ----------------------------------------------------------------------------------------------------------------
# spans
# ----------------------------------------------------------------------------------------------------------------


def merge_spans(spans: Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    """Sort inclusive spans and merge the ones that overlap or touch (``[1, 3] + [4, 6] -> [1, 6]``)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def spans_to_frames(spans: Iterable[Sequence[int]], num_frames: int | None = None) -> np.ndarray:
    """Boolean frame indicator (length ``num_frames``, or ``max end + 1``) of a list of inclusive spans."""
    spans = [(int(s), int(e)) for s, e in spans]
    if num_frames is None:
        num_frames = max((e for _, e in spans), default=-1) + 1
    on = np.zeros(num_frames, dtype=bool)
    for s, e in spans:
        on[max(s, 0) : min(e, num_frames - 1) + 1] = True
    return on


def frames_to_spans(on: Sequence[bool] | np.ndarray, min_length: int = 1) -> list[tuple[int, int]]:
    """Inclusive spans of the runs of ``True`` in a frame indicator, dropping runs shorter than ``min_length``."""
    on = np.asarray(on, dtype=bool)
    if on.size == 0:
        return []
    padded = np.concatenate([[False], on, [False]]).astype(np.int8)
    d = np.diff(padded)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends) if e - s + 1 >= min_length]


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def as_int(value: Any, what: str, where: str) -> int:
    """``value`` as a Python int when it is an integer (or an integral float) that fits int64; else a one-line
    :class:`StructureError` naming ``what``. Booleans, strings, NaN and fractions are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StructureError(f"{where}{what} {value!r} is not an integer")
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        raise StructureError(f"{where}{what} {value!r} is not an integer")
    v = int(value)
    if not INT64_MIN <= v <= INT64_MAX:
        raise StructureError(f"{where}{what} {v} does not fit a 64-bit integer")
    return v


def check_keys(entry: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse a field the format does not define (a typo such as ``"socre"`` would otherwise be ignored)."""
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise StructureError(f"{where}unknown field {unknown[0]!r} (the format defines {', '.join(allowed)})")


PRED_KEYS_4D = {
    "sequence": ("num_frames", "objects", "relations"),
    "object": ("id", "label", "score", "masks"),
    "relation": ("subject", "object", "predicate", "score", "spans"),
}
PRED_KEYS_2D = {
    "image": ("height", "width", "objects", "relations"),
    "object": ("id", "label", "score", "mask"),
    "relation": ("subject", "object", "predicate", "score", "subject_mask", "object_mask"),
}


def _records(entry: Mapping[str, Any], key: str, allowed: Sequence[str], required: Sequence[str], where: str):
    """``(k, record)`` of the list ``entry[key]``, each checked to be an object with the ``required`` fields and
    no field outside ``allowed``."""
    for k, rec in enumerate(_list_field(entry, key, where)):
        if not isinstance(rec, Mapping):
            raise StructureError(f"{where}{key}[{k}] is a {type(rec).__name__}, expected an object")
        check_keys(rec, allowed, f"{where}{key}[{k}]: ")
        missing = [f for f in required if f not in rec]
        if missing:
            raise StructureError(f"{where}{key}[{k}] has no {missing[0]!r}")
        yield k, rec


def _list_field(entry: Mapping[str, Any], key: str, where: str) -> list:
    if key not in entry:  # an empty entry ({}) is a mistake, not "no predictions": those write empty lists
        raise StructureError(f"{where}missing field {key!r} (write [] for none)")
    value = entry[key]
    if not isinstance(value, list):
        raise StructureError(f"{where}{key} is a {type(value).__name__}, expected a list")
    return value


def _check_spans(spans: Sequence[Sequence[int]], num_frames: int, where: str) -> list[tuple[int, int]]:
    if not isinstance(spans, (list, tuple)) or len(spans) == 0:
        raise StructureError(f"{where}spans {spans!r} is not a non-empty list of [start, end] pairs")
    out = []
    for span in spans:
        if not isinstance(span, (list, tuple)) or len(span) != 2:
            raise StructureError(f"{where}span {span!r} is not a [start, end] pair")
        s, e = (as_int(x, "span frame", where) for x in span)
        if s > e:
            raise StructureError(f"{where}span [{s}, {e}] ends before it starts")
        if s < 0 or e >= num_frames:
            raise StructureError(f"{where}span [{s}, {e}] lies outside the sequence's frames 0..{num_frames - 1}")
        out.append((s, e))
    return merge_spans(out)


def _check_score(score: Any, where: str) -> float:
    if isinstance(score, (bool, np.bool_)) or not isinstance(score, (int, float, np.integer, np.floating)):
        raise StructureError(f"{where}score {score!r} is not a number")
    try:
        value = float(score)
    except OverflowError:
        raise StructureError(f"{where}score {score!r} is beyond the float range") from None
    if not math.isfinite(value):
        raise StructureError(f"{where}score is {value} (must be finite)")
    return value


def _check_name(name: Any, what: str, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise StructureError(f"{where}{what} {name!r} is not a non-empty string")
    return name


# ----------------------------------------------------------------------------------------------------------------
# point sequences
# ----------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class PointSequence:
    """``T`` frames of coloured points, stored flat.

    Attributes:
        xyz: ``(N, 3)`` float32 world coordinates in metres, all frames concatenated.
        rgb: ``(N, 3)`` float32 colours in ``[0, 1]``.
        offsets: ``(T + 1,)`` int64 cumulative point counts; frame ``t`` is ``offsets[t]:offsets[t + 1]``.
        video_id: the sequence's name.
        semantic: optional ``(N,)`` int64 class index per point (``-100``: none).
        instance: optional ``(N,)`` int64 object id per point (``-100``: none).
        source: where the frames were read from (a folder or file), for messages; empty when unknown.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    offsets: np.ndarray
    video_id: str = ""
    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        w = _where(f"sequence {self.video_id!r}" if self.video_id else "")
        self.xyz = np.asarray(self.xyz, dtype=np.float32)
        self.rgb = np.asarray(self.rgb, dtype=np.float32)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise StructureError(f"{w}xyz has shape {self.xyz.shape}, expected (N, 3)")
        if self.rgb.shape != self.xyz.shape:
            raise StructureError(f"{w}rgb has shape {self.rgb.shape}, expected {self.xyz.shape} like xyz")
        if self.offsets.ndim != 1 or self.offsets.size < 2:
            raise StructureError(f"{w}offsets must be 1-D with T + 1 >= 2 entries, got shape {self.offsets.shape}")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.xyz) or np.any(np.diff(self.offsets) < 0):
            raise StructureError(
                f"{w}offsets must rise from 0 to the point count {len(self.xyz)}, got {self.offsets.tolist()[:8]}..."
            )
        for name in ("semantic", "instance"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.int64)
                if value.shape != (len(self.xyz),):
                    raise StructureError(f"{w}{name} has shape {value.shape}, expected ({len(self.xyz)},)")
                setattr(self, name, value)

    @classmethod
    def from_frames(
        cls,
        xyz: Sequence[np.ndarray],
        rgb: Sequence[np.ndarray],
        video_id: str = "",
        semantic: Sequence[np.ndarray] | None = None,
        instance: Sequence[np.ndarray] | None = None,
    ) -> PointSequence:
        """Build from per-frame arrays (lists of length ``T``)."""
        if len(xyz) != len(rgb) or len(xyz) == 0:
            raise StructureError(f"sequence {video_id!r}: need the same non-zero number of xyz and rgb frames")
        counts = [len(x) for x in xyz]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

        def cat(arrs: Sequence[np.ndarray] | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
            if arrs is None:
                return None
            return np.concatenate([np.asarray(a, dtype=dtype).reshape(-1, *shape) for a in arrs])

        return cls(
            xyz=cat(xyz, (3,), np.float32),
            rgb=cat(rgb, (3,), np.float32),
            offsets=offsets,
            video_id=video_id,
            semantic=None if semantic is None else cat(semantic, (), np.int64),
            instance=None if instance is None else cat(instance, (), np.int64),
        )

    @property
    def num_frames(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        """``(T,)`` points per frame."""
        return np.diff(self.offsets)

    def frame_slice(self, t: int) -> slice:
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} outside 0..{self.num_frames - 1} of sequence {self.video_id!r}")
        return slice(int(self.offsets[t]), int(self.offsets[t + 1]))

    def frame(self, t: int) -> dict[str, np.ndarray]:
        """Frame ``t`` as a dict of arrays (keys ``xyz``, ``rgb`` and, when present, ``semantic``/``instance``)."""
        sl = self.frame_slice(t)
        out = {"xyz": self.xyz[sl], "rgb": self.rgb[sl]}
        if self.semantic is not None:
            out["semantic"] = self.semantic[sl]
        if self.instance is not None:
            out["instance"] = self.instance[sl]
        return out

    def frame_index(self) -> np.ndarray:
        """``(N,)`` frame index of every point."""
        return np.repeat(np.arange(self.num_frames), self.counts)

    def __len__(self) -> int:
        return self.num_frames


# ----------------------------------------------------------------------------------------------------------------
# 2D scene graphs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Object2D:
    """One segment of an image: a boolean ``(H, W)`` mask, a class name and (for predictions) a score."""

    label: str
    mask: np.ndarray
    score: float = 1.0


@dataclass
class Relation2D:
    """``subject`` and ``object`` index into the graph's object list."""

    subject: int
    object: int
    predicate: str
    score: float = 1.0


@dataclass(eq=False)
class SceneGraph2D:
    """An image's panoptic scene graph (ground truth or prediction)."""

    image_id: str
    height: int
    width: int
    objects: list[Object2D] = field(default_factory=list)
    relations: list[Relation2D] = field(default_factory=list)
    file_name: str = ""

    def __post_init__(self) -> None:
        w = _where(f"image {self.image_id!r}")
        if int(self.height) <= 0 or int(self.width) <= 0:
            raise StructureError(f"{w}image size {self.height}x{self.width} must be positive")
        for k, obj in enumerate(self.objects):
            _check_name(obj.label, f"object {k} label", w)
            obj.mask = np.asarray(obj.mask).astype(bool, copy=False)
            if obj.mask.shape != (self.height, self.width):
                raise StructureError(
                    f"{w}object {k} mask has shape {obj.mask.shape}, expected ({self.height}, {self.width})"
                )
            obj.score = _check_score(obj.score, f"{w}object {k} ")
        for r, rel in enumerate(self.relations):
            for role in ("subject", "object"):
                idx = getattr(rel, role)
                if not 0 <= int(idx) < len(self.objects):
                    raise StructureError(f"{w}relation {r} {role} {idx} is not one of the {len(self.objects)} objects")
            _check_name(rel.predicate, f"relation {r} predicate", w)
            rel.score = _check_score(rel.score, f"{w}relation {r} ")

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]

    def masks(self) -> np.ndarray:
        """``(K, H, W)`` boolean stack of the object masks."""
        if not self.objects:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return np.stack([o.mask for o in self.objects])

    def to_json(self) -> dict[str, Any]:
        """The per-image entry of a docs/formats.md prediction file."""
        return {
            "height": int(self.height),
            "width": int(self.width),
            "objects": [
                {"id": k, "label": o.label, "score": float(o.score), "mask": rle.encode_mask(o.mask)}
                for k, o in enumerate(self.objects)
            ],
            "relations": [
                {"subject": r.subject, "object": r.object, "predicate": r.predicate, "score": float(r.score)}
                for r in self.relations
            ],
        }

    @classmethod
    def from_json(cls, image_id: str, entry: Mapping[str, Any], context: str = "") -> SceneGraph2D:
        w = _where(context or f"image {image_id!r}")
        if not isinstance(entry, Mapping):
            raise StructureError(f"{w}entry is a {type(entry).__name__}, expected an object")
        check_keys(entry, PRED_KEYS_2D["image"], w)
        for key in ("height", "width"):
            if key not in entry:
                raise StructureError(f"{w}missing field {key!r}")
        height, width = as_int(entry["height"], "height", w), as_int(entry["width"], "width", w)
        if height <= 0 or width <= 0 or height * width > 2**31:
            raise StructureError(f"{w}image size {height}x{width} is not a positive size below 2^31 pixels")
        objs, id_to_index = [], {}
        for k, o in _records(entry, "objects", PRED_KEYS_2D["object"], ("label", "mask"), w):
            oid = as_int(o.get("id", k), f"objects[{k}].id", w)
            if oid in id_to_index:
                raise StructureError(f"{w}object id {oid} appears twice")
            mask = rle.decode_mask(o["mask"], expected_size=(height, width), context=f"{w}object {k}")
            id_to_index[oid] = k
            objs.append(Object2D(label=o["label"], mask=mask, score=o.get("score", 1.0)))
        rels = []
        required = ("subject", "object", "predicate")
        for r, rel in _records(entry, "relations", PRED_KEYS_2D["relation"], required, w):
            ends = []
            for role in ("subject", "object"):
                oid = as_int(rel[role], f"relation {r} {role} id", w)
                if oid not in id_to_index:
                    raise StructureError(f"{w}relation {r} {role} id {oid!r} names no object")
                ends.append(id_to_index[oid])
            rels.append(
                Relation2D(subject=ends[0], object=ends[1], predicate=rel["predicate"], score=rel.get("score", 1.0))
            )
        return cls(image_id=str(image_id), height=height, width=width, objects=objs, relations=rels)


# ----------------------------------------------------------------------------------------------------------------
# 4D scene graphs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ObjectTube:
    """An object over time: a boolean point mask per frame (frames absent from ``masks`` are empty)."""

    id: int
    label: str
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    score: float = 1.0
    # the predicting model's name distribution over its classes (inference only: never written to a file)
    class_probs: np.ndarray | None = field(default=None, repr=False, compare=False)

    def frames(self) -> list[int]:
        """Frames on which the mask is non-empty."""
        return sorted(t for t, m in self.masks.items() if m.any())

    def mask(self, t: int, num_points: int) -> np.ndarray:
        m = self.masks.get(t)
        return np.zeros(num_points, dtype=bool) if m is None else m


@dataclass
class Relation4D:
    """``subject``/``object`` are object *ids* (not list positions); ``spans`` are inclusive frame ranges."""

    subject: int
    object: int
    predicate: str
    spans: list[tuple[int, int]]
    score: float = 1.0

    def frames(self, num_frames: int) -> np.ndarray:
        return spans_to_frames(self.spans, num_frames)


@dataclass(eq=False)
class SceneGraph4D:
    """A sequence's 4D panoptic scene graph (ground truth or prediction).

    ``num_points`` (points per frame) is known for ground truth read with its point clouds and lets masks be
    checked; a prediction read alone may leave it ``None``, in which case mask lengths are checked only
    against each other (all objects on one frame must agree).
    """

    video_id: str
    num_frames: int
    objects: list[ObjectTube] = field(default_factory=list)
    relations: list[Relation4D] = field(default_factory=list)
    num_points: list[int] | None = None

    def __post_init__(self) -> None:
        w = _where(f"sequence {self.video_id!r}")
        self.num_frames = as_int(self.num_frames, "num_frames", w)
        if self.num_frames <= 0:
            raise StructureError(f"{w}num_frames {self.num_frames} must be a positive integer")
        if self.num_points is not None:
            self.num_points = [int(n) for n in self.num_points]
            if len(self.num_points) != self.num_frames:
                raise StructureError(
                    f"{w}num_points lists {len(self.num_points)} frames but num_frames is {self.num_frames}"
                )
        sizes: dict[int, int] = {}
        ids = set()
        for obj in self.objects:
            obj.id = as_int(obj.id, "object id", w)
            ow = f"{w}object {obj.id} "
            if obj.id in ids:
                raise StructureError(f"{w}object id {obj.id} appears twice")
            ids.add(obj.id)
            _check_name(obj.label, "label", ow)
            obj.score = _check_score(obj.score, ow)
            clean = {}
            for t, m in obj.masks.items():
                t = int(t)
                if not 0 <= t < self.num_frames:
                    raise StructureError(f"{ow}has a mask on frame {t}, outside 0..{self.num_frames - 1}")
                m = np.asarray(m).astype(bool, copy=False).reshape(-1)
                expected = self.num_points[t] if self.num_points is not None else sizes.setdefault(t, m.size)
                if m.size != expected:
                    raise StructureError(f"{ow}mask on frame {t} has {m.size} points, the frame has {expected}")
                clean[t] = m
            obj.masks = clean
        for r, rel in enumerate(self.relations):
            rw = f"{w}relation {r} "
            for role in ("subject", "object"):
                setattr(rel, role, as_int(getattr(rel, role), f"{role} id", rw))
                if getattr(rel, role) not in ids:
                    raise StructureError(f"{rw}{role} id {getattr(rel, role)!r} names no object")
            _check_name(rel.predicate, "predicate", rw)
            rel.spans = _check_spans(rel.spans, self.num_frames, rw)
            rel.score = _check_score(rel.score, rw)

    # -- access ---------------------------------------------------------------------------------------------------
    def object_by_id(self) -> dict[int, ObjectTube]:
        return {o.id: o for o in self.objects}

    def relations_at(self, t: int) -> list[Relation4D]:
        return [r for r in self.relations if any(s <= t <= e for s, e in r.spans)]

    def sorted_relations(self) -> list[Relation4D]:
        """Relations by score, highest first; ties keep their order (a stable sort)."""
        return sorted(self.relations, key=lambda r: -r.score)

    # -- interchange (docs/formats.md) ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The per-sequence entry of a ``spade4d-predictions-4d`` file."""
        return {
            "num_frames": self.num_frames,
            "objects": [
                {
                    "id": int(o.id),
                    "label": o.label,
                    "score": float(o.score),
                    "masks": {str(t): rle.encode_point_mask(m) for t, m in sorted(o.masks.items()) if m.any()},
                }
                for o in self.objects
            ],
            "relations": [
                {
                    "subject": int(r.subject),
                    "object": int(r.object),
                    "predicate": r.predicate,
                    "score": float(r.score),
                    "spans": [[int(s), int(e)] for s, e in r.spans],
                }
                for r in self.relations
            ],
        }

    @classmethod
    def from_json(
        cls,
        video_id: str,
        entry: Mapping[str, Any],
        num_points: Sequence[int] | None = None,
        context: str = "",
    ) -> SceneGraph4D:
        """Parse one sequence entry; ``num_points`` (from the ground truth) lets RLE sizes be checked."""
        w = _where(context or f"sequence {video_id!r}")
        if not isinstance(entry, Mapping):
            raise StructureError(f"{w}entry is a {type(entry).__name__}, expected an object")
        check_keys(entry, PRED_KEYS_4D["sequence"], w)
        if "num_frames" not in entry:
            raise StructureError(f"{w}missing field 'num_frames'")
        num_frames = as_int(entry["num_frames"], "num_frames", w)
        objects = []
        for k, o in _records(entry, "objects", PRED_KEYS_4D["object"], ("id", "label"), w):
            oid = as_int(o["id"], f"objects[{k}].id", w)
            ow = f"{w}object {oid} "
            masks_in = o.get("masks", {})
            if not isinstance(masks_in, Mapping):
                raise StructureError(f"{ow}masks is a {type(masks_in).__name__}, expected an object of frames")
            masks = {}
            for key, r in masks_in.items():
                try:
                    t = int(key)
                except ValueError:
                    raise StructureError(f"{ow}masks key {key!r} is not a frame index") from None
                if not 0 <= t < num_frames:
                    raise StructureError(f"{ow}has a mask on frame {t}, outside 0..{num_frames - 1}")
                expected = None if num_points is None or t >= len(num_points) else (int(num_points[t]), 1)
                masks[t] = rle.decode_mask(r, expected_size=expected, context=f"{ow}frame {t}").reshape(-1)
            objects.append(ObjectTube(id=oid, label=o["label"], masks=masks, score=o.get("score", 1.0)))
        relations = []
        required = ("subject", "object", "predicate", "spans")
        for k, r in _records(entry, "relations", PRED_KEYS_4D["relation"], required, w):
            relations.append(
                Relation4D(
                    subject=as_int(r["subject"], f"relations[{k}].subject", w),
                    object=as_int(r["object"], f"relations[{k}].object", w),
                    predicate=r["predicate"],
                    spans=r["spans"],
                    score=r.get("score", 1.0),
                )
            )
        return cls(
            video_id=str(video_id),
            num_frames=num_frames,
            objects=objects,
            relations=relations,
            num_points=None if num_points is None else list(num_points),
        )

    @classmethod
    def from_labels(
        cls,
        points: PointSequence,
        labels: Mapping[int, str],
        relations: Sequence[Relation4D],
    ) -> SceneGraph4D:
        """Ground truth from per-point instance labels: object ``i``'s mask on frame ``t`` is ``instance == i``."""
        if points.instance is None:
            raise StructureError(f"sequence {points.video_id!r}: points carry no instance labels")
        objects = []
        for oid, label in labels.items():
            masks = {}
            for t in range(points.num_frames):
                m = points.instance[points.frame_slice(t)] == oid
                if m.any():
                    masks[t] = m
            objects.append(ObjectTube(id=int(oid), label=label, masks=masks))
        return cls(
            video_id=points.video_id,
            num_frames=points.num_frames,
            objects=objects,
            relations=list(relations),
            num_points=points.counts.tolist(),
        )
