"""Readers of the 4D datasets as published (docs/formats.md).

Point clouds, each item a ``(PointSequence, SceneGraph4D)`` pair (:class:`PointCloudDataset`):

* :class:`Spade4DPointCloud` (``spade4d-pc``): spade4d's own layout, ``<root>/point_clouds/<video_id>/%06d.pth``
  tensor tuples and ``<root>/psg4d.json``;
* :class:`PSG4DGTAPointCloud` (``psg4d-gta-pc``) and :class:`PSG4DHOIPointCloud` (``psg4d-hoi-pc``): the files
  PSG4D's point-cloud branch reads (numpy tuples, torch's legacy serialisation, frames missing where its
  generator skipped them).

RGB-D video, for conversion to points: :class:`PSG4DGTA` (NDC depth through ``rage_matrices``, ``K``/``Rt``
cameras, stuff ids + 1000) and :class:`PSG4DHOI` (``categories.json`` names, per-camera intrinsics).

Frame files are loaded safely (:mod:`spade4d.data.torchfile`): nothing but arrays is ever unpickled.
``rgb_range`` (``"auto"``, ``"unit"``, ``"byte"``, ``"signed"``) says how colours map to [0, 1]; ``auto`` takes
values above 1.5 as 0-255 and negative ones as [-1, 1].
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spade4d.data.cameras import load_camera_yaml
from spade4d.data.files import DatasetError, load_image, load_json, load_npy
from spade4d.structures import PointSequence, Relation4D, SceneGraph4D, StructureError, as_int, merge_spans


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def normalise_rgb(rgb: np.ndarray, rgb_range: str = "auto") -> np.ndarray:
    rgb = rgb.astype(np.float32)
    if rgb_range == "auto":
        if rgb.size and float(rgb.min()) < -0.01:
            rgb_range = "signed"
        elif rgb.size and float(rgb.max()) > 1.5:
            rgb_range = "byte"
        else:
            rgb_range = "unit"
    if rgb_range == "signed":
        return (rgb + 1.0) / 2.0
    if rgb_range == "byte":
        return rgb / 255.0
    if rgb_range == "unit":
        return rgb
    raise ValueError(f"rgb_range must be auto, unit, byte or signed, not {rgb_range!r}")


def dataset_root(root: str | os.PathLike) -> Path:
    """``root`` as a Path, refused in one line when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    return root


def _frame_error(path: Path, msg: str) -> DatasetError:
    return DatasetError(f"{path}: {msg}")


def _integer_labels(arr: np.ndarray, name: str, path: Path) -> np.ndarray:
    """Per-point integer ids: integer arrays as they are, float arrays only when every value is integral."""
    if arr.dtype == bool:
        raise _frame_error(path, f"{name} holds booleans, expected integer ids")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise _frame_error(path, f"{name} holds NaN or infinite values, expected integer ids")
        if (arr != np.round(arr)).any() or (np.abs(arr) > 2**53).any():
            raise _frame_error(path, f"{name} holds fractional values, expected integer ids")
        return arr.astype(np.int64)
    raise _frame_error(path, f"{name} has dtype {arr.dtype}, expected integer ids")


def load_point_frame(path: str | os.PathLike, rgb_range: str = "auto") -> dict:
    """One point-cloud frame as numpy arrays (``xyz rgb semantic instance``), checked.

    The file is a ``torch.save`` tuple ``(xyz, rgb, semantic, instance)`` of tensors or numpy arrays, in the zip
    or the legacy serialisation, read with the safe loader (:mod:`spade4d.data.torchfile`). A 2-tuple
    ``(xyz, rgb)`` (unlabelled points, as DKNet's test files) gets ``-100`` labels."""
    from spade4d.data.torchfile import TorchFileError, load_tuple

    path = Path(path)
    try:
        data = load_tuple(path)
    except TorchFileError as e:
        raise DatasetError(str(e)) from None
    if len(data) < 4 and len(data) != 2:
        raise _frame_error(path, f"holds {len(data)} arrays, expected (xyz, rgb, semantic_label, instance_label)")
    xyz, rgb = (_to_numpy(a) for a in data[:2])
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise _frame_error(path, f"xyz has shape {xyz.shape}, expected (N, 3)")
    n = len(xyz)
    if len(data) >= 4:
        sem, inst = (_to_numpy(a) for a in data[2:4])
    else:
        sem = inst = np.full(n, -100, np.int64)
    for name, arr, shape in (("rgb", rgb, (n, 3)), ("semantic_label", sem, (n,)), ("instance_label", inst, (n,))):
        if arr.shape != shape:
            raise _frame_error(path, f"{name} has shape {arr.shape}, expected {shape}")
    for name, arr in (("xyz", xyz), ("rgb", rgb)):
        if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
            raise _frame_error(path, f"{name} has dtype {arr.dtype}, expected floats")
        if not np.isfinite(arr).all():
            raise _frame_error(path, f"{name} holds NaN or infinite values")
    return {
        "xyz": xyz.astype(np.float32),
        "rgb": normalise_rgb(rgb, rgb_range),
        "semantic": _integer_labels(sem, "semantic_label", path),
        "instance": _integer_labels(inst, "instance_label", path),
    }


RELATION_LAYOUTS = {
    "gta": "[subject_id, predicate, object_id, [start, end]]",
    "hoi": "[subject_id, object_id, predicate, start, end]",
    "pvsg": "[subject_id, object_id, predicate, [[start, end], ...]]",
}


def _unpack_relation(rel: Any, style: str) -> tuple[Any, Any, Any, Any] | None:
    """(subject, predicate, object, list of spans) of one relation entry in a dataset's layout, or None."""
    if not isinstance(rel, (list, tuple)):
        return None
    if style == "gta" and len(rel) == 4:
        return rel[0], rel[1], rel[2], [rel[3]]
    if style == "hoi" and len(rel) == 5:
        return rel[0], rel[2], rel[1], [rel[3:5]]
    if style == "pvsg" and len(rel) == 4:
        return rel[0], rel[2], rel[1], rel[3]
    return None


def parse_relations(
    entry: dict, object_ids: set[int], num_frames: int, where: str, style: str = "gta"
) -> list[Relation4D]:
    """Relations of one video in the ``style`` layout (see ``RELATION_LAYOUTS``), checked (known object ids,
    spans inside the video) and merged: entries of one (subject, predicate, object) become one relation with
    several spans."""
    spans: dict[tuple[int, str, int], list[tuple[int, int]]] = {}
    rels = entry.get("relations", [])
    if not isinstance(rels, list):
        raise DatasetError(f"{where}: relations is a {type(rels).__name__}, expected a list")
    for k, rel in enumerate(rels):
        parts = _unpack_relation(rel, style)
        if parts is None:
            raise DatasetError(f"{where}: relation {k} {rel!r} is not {RELATION_LAYOUTS[style]}")
        s, p, o, rel_spans = parts
        try:
            s, o = as_int(s, "subject id", ""), as_int(o, "object id", "")
        except StructureError as e:
            raise DatasetError(f"{where}: relation {k} {e}") from None
        for role, oid in (("subject", s), ("object", o)):
            if oid not in object_ids:
                raise DatasetError(f"{where}: relation {k} names unknown {role} id {oid!r}")
        if not isinstance(p, str) or not p.strip():
            raise DatasetError(f"{where}: relation {k} predicate {p!r} is not a non-empty string")
        if not isinstance(rel_spans, list):
            raise DatasetError(f"{where}: relation {k} spans {rel_spans!r} is not a list of [start, end]")
        for span in rel_spans:
            if not isinstance(span, (list, tuple)) or len(span) != 2:
                raise DatasetError(f"{where}: relation {k} span {span!r} is not [start, end]")
            try:
                start, end = (as_int(x, "span frame", "") for x in span)
            except StructureError as e:
                raise DatasetError(f"{where}: relation {k} {e}") from None
            if start < 0 or end >= num_frames or start > end:
                raise DatasetError(
                    f"{where}: relation {k} span [{start}, {end}] lies outside frames 0..{num_frames - 1}"
                )
            spans.setdefault((s, p, o), []).append((start, end))
    return [Relation4D(subject=s, object=o, predicate=p, spans=merge_spans(v)) for (s, p, o), v in spans.items()]


def names_used(entries: list[dict], style: str) -> tuple[set[str], set[str]]:
    """The object categories and predicates that annotation ``entries`` (relations in ``style``) use."""
    classes, predicates = set(), set()
    for e in entries:
        objs, rels = e.get("object", []), e.get("relations", [])
        classes.update(o["category"] for o in objs if isinstance(o, dict) and isinstance(o.get("category"), str))
        for rel in rels if isinstance(rels, list) else []:
            parts = _unpack_relation(rel, style)
            if parts is not None and isinstance(parts[1], str):
                predicates.add(parts[1])
    return classes, predicates


# the 36 names PSG4D's GTA point-cloud generator indexes ``semantic`` with (9 stuff, "other object", 26 things);
# 25 marks points of no instance and 9 an instance the annotation does not list (docs/formats.md, PSG4D-GTA points)
GTA_POINT_CLASSES = (
    "sky floor ceiling ground wall grass fence stair window".split()
    + ["other object", "chair", "sofa", "table", "bed", "person", "car", "motorcycle", "truck", "bird", "dog"]
    + ["handbag", "suitcase", "bottle", "cup", "bowl", "potted plant", "dining table", "tv", "laptop"]
    + ["cell phone", "bag", "bin", "box", "door", "road barrier", "stick"]
)
GTA_NO_INSTANCE, GTA_UNKNOWN_INSTANCE = 25, 9
IGNORE = -100


class VideoAnnotations:
    """A GTA/HOI-style annotation file read and checked once: class lists, the split's video entries, predicates.
    Shared by the point-cloud layouts and the RGB-D readers."""

    relation_style = "gta"

    def __init__(self, annotation: str | os.PathLike, split: str | None):
        self.ann_path = Path(annotation)
        ann = load_json(self.ann_path)
        if not isinstance(ann, dict) or not isinstance(ann.get("data"), list):
            raise DatasetError(f"{self.ann_path}: expected an object with a 'data' list of videos")
        self.thing_classes, self.stuff_classes = self._class_lists(ann)
        self.classes = self.thing_classes + self.stuff_classes
        data = ann["data"]
        seen: set[str] = set()
        for k, d in enumerate(data):
            if not isinstance(d, dict) or not isinstance(d.get("video_id"), str):
                raise DatasetError(f"{self.ann_path}: data[{k}] has no string video_id")
            if d["video_id"] in seen:
                raise DatasetError(f"{self.ann_path}: data[{k}] repeats video {d['video_id']!r}")
            seen.add(d["video_id"])
        if split is not None:
            splits = ann.get("split", {})
            if not isinstance(splits, dict) or split not in splits:
                have = ", ".join(splits) if isinstance(splits, dict) and splits else "none"
                raise DatasetError(f"{self.ann_path}: no split {split!r} (has {have})")
            wanted = splits[split]
            if not isinstance(wanted, list) or not all(isinstance(v, str) for v in wanted):
                raise DatasetError(f"{self.ann_path}: split.{split} is not a list of video id strings")
            if len(set(wanted)) != len(wanted):
                raise DatasetError(f"{self.ann_path}: split.{split} lists a video twice")
            by_id = {d["video_id"]: d for d in data}
            unknown = [v for v in wanted if v not in by_id]
            if unknown:
                raise DatasetError(f"{self.ann_path}: split.{split} names videos not in data: {unknown[:3]}")
            data = [by_id[v] for v in dict.fromkeys(wanted)]
        self.entries = data
        preds = ann["predicates"] if "predicates" in ann else ann.get("relations")
        if preds is None and "predicates" not in ann:
            self.predicates = sorted(self.names_used_in(ann["data"])[1])
        elif isinstance(preds, list) and all(isinstance(p, str) for p in preds):
            self.predicates = list(preds)
        else:
            raise DatasetError(f"{self.ann_path}: predicates is not a list of names")
        self.split = split

    # -- annotation -------------------------------------------------------------------------------------------
    def _class_lists(self, ann: dict) -> tuple[list[str], list[str]]:
        objs = ann.get("objects")
        if isinstance(objs, dict):
            if "thing" not in objs:
                raise DatasetError(f"{self.ann_path}: objects has no 'thing' class list")
            thing, stuff = objs["thing"], objs.get("stuff", [])
        elif isinstance(objs, list):
            thing, stuff = objs, []
        else:
            raise DatasetError(f"{self.ann_path}: missing objects.thing / objects.stuff class lists")
        for name, lst in (("objects.thing", thing), ("objects.stuff", stuff)):
            if not isinstance(lst, list) or not all(isinstance(c, str) for c in lst):
                raise DatasetError(f"{self.ann_path}: {name} is not a list of class names")
        if not thing and not stuff:
            raise DatasetError(f"{self.ann_path}: the objects lists name no class")
        return list(thing), list(stuff)

    def names_used_in(self, entries: list[dict]) -> tuple[set[str], set[str]]:
        classes = set()
        for e in entries:
            where = f"{self.ann_path} [{e.get('video_id')}]"
            for o in self._objects(e, where):
                classes.add(self.class_of(o, where))
        return classes, names_used(entries, self.relation_style)[1]

    def names_used(self) -> tuple[set[str], set[str]]:
        """The object categories and predicates this split's annotations use (no frame is read)."""
        return self.names_used_in(self.entries)

    def _objects(self, e: dict, where: str) -> list[dict]:
        objs = e.get("object", e.get("objects", []))
        if not isinstance(objs, list) or not all(isinstance(o, dict) for o in objs):
            raise DatasetError(f"{where}: object is not a list of {{object_id, category}} entries")
        return objs

    def class_of(self, obj: dict, where: str) -> str:
        cat = obj.get("category")
        if not isinstance(cat, str):
            raise DatasetError(f"{where}: object {obj.get('object_id')!r} has no category name")
        return cat

    def object_labels(self, e: dict) -> dict[int, str]:
        """object_id -> class name of one video's annotation entry, checked (integer, unique ids)."""
        where = f"{self.ann_path} [{e['video_id']}]"
        labels: dict[int, str] = {}
        for o in self._objects(e, where):
            oid = o.get("object_id")
            if isinstance(oid, bool) or not isinstance(oid, int):
                raise DatasetError(f"{where}: object_id {oid!r} is not an integer")
            if oid in labels:
                raise DatasetError(f"{where}: object_id {oid} appears twice")
            labels[oid] = self.class_of(o, where)
        return labels

    def __len__(self) -> int:
        return len(self.entries)

    def video_ids(self) -> list[str]:
        return [e["video_id"] for e in self.entries]

    def __iter__(self) -> Iterator[tuple[PointSequence, SceneGraph4D]]:
        for i in range(len(self)):
            yield self[i]

    def index_of(self, video_id: str) -> int:
        for i, e in enumerate(self.entries):
            if e["video_id"] == video_id:
                return i
        raise KeyError(f"{video_id!r} is not in split {self.split!r} of {self.ann_path}")

    def num_frames(self, i: int) -> int:
        """The frame count of sequence ``i`` from its annotation (no frame is read)."""
        return self.meta_num_frames(self.entries[i])

    def meta_num_frames(self, e: dict) -> int:
        n = e.get("meta", {}).get("num_frames") if isinstance(e.get("meta"), dict) else None
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise DatasetError(f"{self.ann_path} [{e['video_id']}]: meta.num_frames missing or not a positive integer")
        return n


class PointCloudDataset(VideoAnnotations):
    """A point-cloud layout as a sequence dataset of ``(PointSequence, SceneGraph4D)`` pairs.

    Subclasses name where frame ``t`` of a video lies and how a file's instance ids become annotation object ids.
    Per-point ``instance`` in the returned sequences is the annotation's ``object_id`` (``-100``: none) and
    ``semantic`` the object's index in :attr:`classes`. ``stats`` counts what a user should know about the split
    (frames missing on disk, GT relations that cannot be recalled because an object has no points)."""

    format_name = ""
    rgb_range = "auto"

    def __init__(self, annotation: str | os.PathLike, split: str | None):
        super().__init__(annotation, split)
        self.stats = {"missing_frames": 0, "unrecallable_relations": 0, "gt_relations": 0}

    def frame_paths(self, video_id: str, num_frames: int) -> list[Path | None]:
        """The file of each frame, ``None`` where the layout has none (an empty frame)."""
        raise NotImplementedError

    def to_object_ids(self, instance: np.ndarray, e: dict, labels: dict[int, str]) -> np.ndarray:
        """A file's per-point instance ids as annotation object ids (``-100``: no annotated object)."""
        return np.where(np.isin(instance, list(labels)), instance, IGNORE)

    def _empty_frame(self) -> dict:
        z = np.zeros((0, 3), np.float32)
        return {"xyz": z, "rgb": z.copy(), "semantic": np.zeros(0, np.int64), "instance": np.zeros(0, np.int64)}

    def read_frames(self, i: int) -> tuple[list[dict], int]:
        """Frames of sequence ``i`` (missing ones empty) and how many were missing."""
        e = self.entries[i]
        paths = self.frame_paths(e["video_id"], self.num_frames(i))
        frames, missing = [], 0
        for p in paths:
            if p is None or not p.is_file():
                frames.append(self._empty_frame())
                missing += 1
            else:
                frames.append(load_point_frame(p, self.rgb_range))
        return frames, missing

    def __getitem__(self, i: int) -> tuple[PointSequence, SceneGraph4D]:
        e = self.entries[i]
        vid = e["video_id"]
        where = f"{self.ann_path} [{vid}]"
        num_frames = self.num_frames(i)
        labels = self.object_labels(e)
        frames, missing = self.read_frames(i)
        class_index = {c: k for k, c in enumerate(self.classes)}
        sem_of = {oid: class_index.get(lab, IGNORE) for oid, lab in labels.items()}
        instance, semantic = [], []
        for f in frames:
            inst = self.to_object_ids(f["instance"], e, labels)
            ids, inverse = np.unique(inst, return_inverse=True)
            instance.append(inst)
            semantic.append(np.array([sem_of.get(int(x), IGNORE) for x in ids], np.int64)[inverse.reshape(-1)])
        points = PointSequence.from_frames(
            [f["xyz"] for f in frames], [f["rgb"] for f in frames], video_id=vid, semantic=semantic, instance=instance
        )
        relations = parse_relations(e, set(labels), num_frames, where, self.relation_style)
        try:
            graph = SceneGraph4D.from_labels(points, labels, relations)
        except StructureError as err:
            raise DatasetError(f"{where}: {err}") from None
        self.stats["missing_frames"] += missing
        self.stats["gt_relations"] += len(relations)
        self.stats["unrecallable_relations"] += count_unrecallable(graph)
        return points, graph


def count_unrecallable(graph: SceneGraph4D) -> int:
    """GT relations no prediction can recall: on no frame of their spans do both objects have points."""
    masks = {o.id: o.masks for o in graph.objects}
    n = 0
    for r in graph.relations:
        s, o = masks.get(r.subject, {}), masks.get(r.object, {})
        if not any(t in s and t in o for a, b in r.spans for t in range(a, b + 1)):
            n += 1
    return n


class Spade4DPointCloud(PointCloudDataset):
    """spade4d's own point-cloud layout (``spade4d-pc``; docs/formats.md): ``<root>/point_clouds/<video_id>/%06d.pth``
    tuples of tensors ``(xyz, rgb in [0, 1], semantic, instance = object_id)`` and the GTA-style ``<root>/psg4d.json``.
    Written by ``spade4d convert`` and the synthetic world, so every frame must be there."""

    format_name = "spade4d-pc"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "test",
        annotation: str | os.PathLike | None = None,
        rgb_range: str = "auto",
    ):
        self.root = dataset_root(root)
        super().__init__(annotation or self.root / "psg4d.json", split)
        self.rgb_range = rgb_range

    def frame_paths(self, video_id: str, num_frames: int) -> list[Path | None]:
        seq_dir = self.root / "point_clouds" / video_id
        if not seq_dir.is_dir():
            raise DatasetError(f"{seq_dir}: point-cloud folder of {video_id!r} not found")
        on_disk = len(list(seq_dir.glob("*.pth")))
        if on_disk != num_frames:
            raise DatasetError(f"{seq_dir}: holds {on_disk} frame files but meta.num_frames is {num_frames}")
        return [seq_dir / f"{t:06d}.pth" for t in range(num_frames)]


PSG4DPointCloud = Spade4DPointCloud  # the name this reader had before the PSG4D layouts were added


class PSG4DGTAPointCloud(PointCloudDataset):
    """PSG4D-GTA point clouds as PSG4D's generator wrote them (``psg4d-gta-pc``; docs/formats.md):
    ``<root>/<video_id>/images_%06d.pth``, numpy tuples ``(xyz float64, rgb in [-1, 1], semantic, instance)`` in
    torch's legacy serialisation; the annotation is the RGB-D tree's ``sailvos3d.json`` (default
    ``<root>/sailvos3d.json``). ``instance`` is the ``visible/`` id (``-100``: none), so only things have points;
    frames the generator skipped are empty. Ids the annotation does not list (semantic 9) count as no object."""

    format_name = "psg4d-gta-pc"
    rgb_range = "signed"

    def __init__(self, root: str | os.PathLike, split: str | None = None, annotation: str | os.PathLike | None = None):
        self.root = dataset_root(root)
        super().__init__(annotation or self.root / "sailvos3d.json", split)

    def frame_paths(self, video_id: str, num_frames: int) -> list[Path | None]:
        folder = self.root / video_id
        if not folder.is_dir():
            raise DatasetError(f"{folder}: point-cloud folder of {video_id!r} not found")
        return [folder / f"images_{t:06d}.pth" for t in range(num_frames)]


class PSG4DHOIPointCloud(PointCloudDataset):
    """PSG4D-HOI point clouds (``psg4d-hoi-pc``; docs/formats.md): ``<root>/<video_id>/semantic_segmentation_label/
    <frame>.pth`` numpy tuples, frame index from the file name's number; the annotation ``psg4d_hoi.json``
    (relations ``[subject_id, object_id, predicate, start, end]``) with class names from ``categories.json``
    beside it (``mask_id % 1000``). Instance ids 0 and 1 mean no object; the others are matched against the
    objects' ``mask_id`` (``instance_key``; ``"object_id"`` matches them against object ids instead)."""

    format_name = "psg4d-hoi-pc"
    relation_style = "hoi"
    rgb_range = "auto"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        annotation: str | os.PathLike | None = None,
        instance_key: str = "mask_id",
    ):
        self.root = dataset_root(root)
        if instance_key not in ("mask_id", "object_id"):
            raise ValueError(f"instance_key must be mask_id or object_id, not {instance_key!r}")
        self.instance_key = instance_key
        ann = Path(annotation or self.root / "psg4d_hoi.json")
        self.categories = load_hoi_categories(ann.parent / "categories.json")
        super().__init__(ann, split)

    def _class_lists(self, ann: dict) -> tuple[list[str], list[str]]:
        if self.categories:
            return [self.categories[k] for k in sorted(self.categories, key=int)], []
        return super()._class_lists(ann)

    def class_of(self, obj: dict, where: str) -> str:
        return hoi_class_of(obj, self.categories, where, lambda o, w: PointCloudDataset.class_of(self, o, w))

    def frame_paths(self, video_id: str, num_frames: int) -> list[Path | None]:
        folder = self.root / video_id / "semantic_segmentation_label"
        if not folder.is_dir():
            raise DatasetError(f"{folder}: point-cloud folder of {video_id!r} not found")
        paths: list[Path | None] = [None] * num_frames
        for p in folder.glob("*.pth"):
            digits = "".join(ch for ch in p.stem if ch.isdigit())
            if not digits:
                raise DatasetError(f"{p}: no frame number in the file name")
            t = int(digits)
            if t < num_frames:
                paths[t] = p
        return paths

    def to_object_ids(self, instance: np.ndarray, e: dict, labels: dict[int, str]) -> np.ndarray:
        lut = {}
        for o in self._objects(e, str(self.ann_path)):
            key = o.get(self.instance_key)
            if isinstance(key, int) and not isinstance(key, bool):
                lut[key] = o["object_id"]
        out = np.full(len(instance), IGNORE, np.int64)
        for key, oid in lut.items():
            if key not in (0, 1):  # HOI4D: 0 and 1 are no instance
                out[instance == key] = oid
        return out


def load_hoi_categories(path: Path) -> dict[str, str]:
    """HOI4D's ``categories.json`` (``{"<class id>": name}``), or ``{}`` when the file is absent."""
    if not path.is_file():
        return {}
    cats = load_json(path)
    if not isinstance(cats, dict) or not all(isinstance(v, str) for v in cats.values()):
        raise DatasetError(f"{path}: expected an object mapping class ids to names")
    try:
        return {str(int(k)): v for k, v in cats.items()}
    except ValueError:
        raise DatasetError(f"{path}: class ids must be integers") from None


def hoi_class_of(obj: dict, categories: dict[str, str], where: str, fallback) -> str:
    """An HOI object's class name: ``categories[str(mask_id % 1000)]`` (HOI4D's sparse ids), else its category."""
    mid = obj.get("mask_id")
    if categories and isinstance(mid, int) and not isinstance(mid, bool):
        name = categories.get(str(mid % 1000))
        if name is None:
            raise DatasetError(f"{where}: mask_id {mid} gives class {mid % 1000}, not in categories.json")
        return name
    return fallback(obj, where)


POINT_CLOUD_FORMATS = {
    "spade4d-pc": Spade4DPointCloud,
    "psg4d-gta-pc": PSG4DGTAPointCloud,
    "psg4d-hoi-pc": PSG4DHOIPointCloud,
}
FORMAT_ALIASES = {"psg4d-pc": "spade4d-pc"}  # the name spade4d's own layout had before


def open_point_clouds(
    fmt: str, root: str | os.PathLike, split: str | None, annotation: str | os.PathLike | None = None
) -> PointCloudDataset:
    """A point-cloud dataset by format name (``spade4d-pc``, ``psg4d-gta-pc``, ``psg4d-hoi-pc``)."""
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt == "pvsg-video":  # RGB video on the image plane (docs/video.md)
        from spade4d.data.video import PVSGVideos

        return PVSGVideos(root, split, annotation=annotation)
    if fmt not in POINT_CLOUD_FORMATS:
        raise DatasetError(f"unknown point-cloud format {fmt!r} (one of {', '.join(POINT_CLOUD_FORMATS)})")
    return POINT_CLOUD_FORMATS[fmt](root, split, annotation=annotation)


# ----------------------------------------------------------------------------------------------------------------
# RGB-D layouts: PSG4D-GTA (§1.3) and PSG4D-HOI (§1.4)
# ----------------------------------------------------------------------------------------------------------------


class RGBDFrameRecord:
    """One RGB-D frame ready for lifting: ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) metres, ``K`` 3x3,
    ``world_from_camera`` 4x4 or None, ``instance`` (H, W) int64 object ids (0: none). Where the dataset gives
    each pixel's point directly (PSG4D-GTA's NDC depth), ``points`` is ``(H, W, 3)`` and ``valid`` ``(H, W)``."""

    __slots__ = ("rgb", "depth", "K", "world_from_camera", "instance", "source", "points", "valid")

    def __init__(self, rgb, depth, K, world_from_camera, instance, source: str, points=None, valid=None):
        self.rgb, self.depth, self.K = rgb, depth, K
        self.world_from_camera, self.instance, self.source = world_from_camera, instance, source
        self.points, self.valid = points, valid


GTA_SKY_DEPTH = np.float32(24e-5)


def gta_ndc_to_points(depth_file: np.ndarray, rage: dict) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(H, W, 3)`` and a validity mask ``(H, W)`` from a GTA depth file and its rage matrices.

    The file holds NDC depth: ``z_ndc = d / 6 - 4e-5``; pixel ``(u, v)`` has ``x_ndc = 2u / (W - 1) - 1`` and
    ``y_ndc = 1 - 2v / (H - 1)``; the row vector ``[x, y, z, 1] @ P_inv`` (divided by its 4th component) is the
    point in OpenGL camera coordinates (forward is -z) and ``@ VP_inv`` the point in the world. Sky pixels (exactly
    24e-5), non-finite values and points not in front of the camera are invalid."""
    h, w = depth_file.shape
    d = depth_file.astype(np.float64)
    z = d / 6.0 - 4e-5
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ndc = np.stack([2.0 * u / (w - 1) - 1.0, 1.0 - 2.0 * v / (h - 1), z, np.ones_like(z)], axis=-1).reshape(-1, 4)
    cam = ndc @ rage["P_inv"]
    world = ndc @ rage["VP_inv"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cam = cam[:, :3] / cam[:, 3:]
        world = world[:, :3] / world[:, 3:]
    valid = (
        np.isfinite(d).reshape(-1)
        & (depth_file.reshape(-1) != GTA_SKY_DEPTH)
        & np.isfinite(world).all(1)
        & (cam[:, 2] < 0)
    )
    return world.reshape(h, w, 3), valid.reshape(h, w)


def _load_rage(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: np.asarray(z[k], dtype=np.float64) for k in ("P_inv", "VP_inv")}
    except (ValueError, OSError, EOFError, KeyError) as e:
        raise DatasetError(f"{path}: unreadable rage matrices or no P_inv / VP_inv ({e})") from None
    for k, m in out.items():
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise DatasetError(f"{path}: {k} is not a finite 4x4 matrix")
    return out


class VideoAnnotation:
    """A video's objects (id -> class name) and relations, parsed from either annotation style."""

    def __init__(
        self,
        video_id: str,
        num_frames: int,
        labels: dict[int, str],
        relations: list[Relation4D],
        mask_ids: dict[int, int] | None = None,
    ):
        self.video_id, self.num_frames, self.labels = video_id, num_frames, labels
        self.relations, self.mask_ids = relations, mask_ids or {}


class RGBDDataset(VideoAnnotations):
    """Common part of the RGB-D readers: the checked annotation (:class:`VideoAnnotations`) and, per video, its
    objects, mask ids and relations; subclasses count the frames on disk."""

    def annotation(self, i: int) -> VideoAnnotation:
        e = self.entries[i]
        vid = e["video_id"]
        where = f"{self.ann_path} [{vid}]"
        num_frames = self.count_frames(vid, e)
        labels = self.object_labels(e)
        mask_ids = {}
        for o in self._objects(e, where):
            if "mask_id" in o:
                try:
                    mask_ids[as_int(o["mask_id"], "mask_id", "")] = o["object_id"]
                except StructureError as err:
                    raise DatasetError(f"{where}: object {o['object_id']} {err}") from None
        rels = parse_relations(e, set(labels), num_frames, where, self.relation_style)
        return VideoAnnotation(vid, num_frames, labels, rels, mask_ids)

    def count_frames(self, vid: str, entry: dict) -> int:
        raise NotImplementedError


class PSG4DGTA(RGBDDataset):
    """PSG4D-GTA RGB-D frames as published (docs/formats.md, PSG4D-GTA):
    ``<root>/{images,depth,camera,rage_matrices,masks|visible}/<video_id>/%06d.{bmp,npy,yaml,npz,npy}``.

    Depth is NDC and becomes world points through the frame's ``rage_matrices`` (:func:`gta_ndc_to_points`); sky
    is dropped. Mask pixels are object ids as the annotation lists them, stuff included (their ids carry +1000
    and are kept as they are). ``masks/`` (PSG4D's merged things + stuff) is read when it exists, else
    ``visible/`` (things only). A frame without its image, depth or rage matrices has no points: it is
    skipped and counted (``skipped``). The annotation is ``<root>/sailvos3d.json`` unless given."""

    relation_style = "gta"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        annotation: str | os.PathLike | None = None,
        image_ext: str = "bmp",
    ):
        self.root = dataset_root(root)
        super().__init__(annotation or self.root / "sailvos3d.json", split)
        self.image_ext = image_ext
        self.mask_dir = "masks" if (self.root / "masks").is_dir() else "visible"
        self.skipped: list[str] = []

    def count_frames(self, vid: str, entry: dict) -> int:
        n = self.meta_num_frames(entry)
        folder = self.root / "images" / vid
        if not folder.is_dir():
            raise DatasetError(f"{folder}: image folder of {vid!r} not found")
        return n

    def frame(self, vid: str, t: int) -> RGBDFrameRecord | None:
        """Frame ``t`` of ``vid``, or None (recorded in ``skipped``) when one of its files is missing."""
        name = f"{t:06d}"
        paths = {
            "image": self.root / "images" / vid / f"{name}.{self.image_ext}",
            "depth": self.root / "depth" / vid / f"{name}.npy",
            "rage_matrices": self.root / "rage_matrices" / vid / f"{name}.npz",
            "mask": self.root / self.mask_dir / vid / f"{name}.npy",
        }
        absent = [k for k, p in paths.items() if not p.is_file()]
        if absent:
            self.skipped.append(f"{vid} frame {t} (no {', '.join(absent)})")
            return None
        rgb = load_image(paths["image"], "RGB")
        h, w = rgb.shape[:2]
        depth_file = load_npy(paths["depth"])
        ids = load_npy(paths["mask"])
        for arr, what, path in ((depth_file, "depth", paths["depth"]), (ids, "mask", paths["mask"])):
            if arr.shape != (h, w):
                raise DatasetError(f"{path}: {what} has shape {arr.shape}, the image is {(h, w)}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise DatasetError(f"{paths['mask']}: mask has dtype {ids.dtype}, expected integer object ids")
        points, valid = gta_ndc_to_points(depth_file, _load_rage(paths["rage_matrices"]))
        K, pose = load_camera_yaml(self.root / "camera" / vid / f"{name}.yaml", w, h)
        depth = np.where(valid, 1.0, 0.0).astype(np.float32)  # lifting reads ``points``; depth marks validity
        return RGBDFrameRecord(rgb, depth, K, pose, ids.astype(np.int64), str(paths["mask"]), points, valid)


class PSG4DHOI(RGBDDataset):
    """PSG4D-HOI RGB-D frames (docs/formats.md, PSG4D-HOI): ``<root>/<video_id>/align_rgb/%05d.jpg`` and
    ``align_depth/%05d.png`` (uint16 millimetres, ``depth_scale=0.001``), masks ``<mask_root>/<video_id>/mask/
    %05d.npz`` (key ``array``, stored transposed) whose pixels are the objects' ``mask_id``, relations
    ``[subject_id, object_id, "predicate", start, end]``.

    Class names come from ``categories.json`` beside the annotation: ``categories[str(mask_id % 1000)]``
    (HOI4D's sparse class ids). Intrinsics are per camera: ``<camera_root>/<camera>/intrin.npy`` where
    ``<camera>`` is the video id's first component (default ``camera_root``: ``<root>/camera_params``); ``K``
    overrides them for every video."""

    relation_style = "hoi"

    def __init__(
        self,
        root: str | os.PathLike,
        mask_root: str | os.PathLike,
        annotation: str | os.PathLike,
        K: np.ndarray | None = None,
        split: str | None = None,
        depth_scale: float = 0.001,
        camera_root: str | os.PathLike | None = None,
    ):
        self.root, self.mask_root = Path(root), Path(mask_root)
        self.categories = load_hoi_categories(Path(annotation).parent / "categories.json")
        super().__init__(annotation, split)
        self.K = None if K is None else np.asarray(K, dtype=np.float64)
        self.camera_root = Path(camera_root) if camera_root else self.root / "camera_params"
        self.depth_scale = depth_scale
        self._intrinsics: dict[str, np.ndarray] = {}

    def _class_lists(self, ann: dict) -> tuple[list[str], list[str]]:
        if self.categories:
            return [self.categories[k] for k in sorted(self.categories, key=int)], []
        return super()._class_lists(ann)

    def class_of(self, obj: dict, where: str) -> str:
        if self.categories:
            return hoi_class_of(obj, self.categories, where, super().class_of)
        if "mask_id" in obj and self.classes:  # no categories.json: a class list indexed by mask_id % 1000
            idx = int(obj["mask_id"]) % 1000
            if not 0 <= idx < len(self.classes):
                raise DatasetError(f"{where}: mask_id {obj['mask_id']} gives class {idx}, outside the class list")
            return self.classes[idx]
        return super().class_of(obj, where)

    def intrinsics(self, vid: str) -> np.ndarray:
        """The 3x3 intrinsics of the camera that filmed ``vid`` (``K`` when given)."""
        if self.K is not None:
            return self.K
        camera = vid.split("/")[0]
        if camera not in self._intrinsics:
            path = self.camera_root / camera / "intrin.npy"
            if not path.is_file():
                raise DatasetError(f"{path}: intrinsics of camera {camera!r} not found (or pass --intrinsics)")
            K = load_npy(path).astype(np.float64)
            if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise DatasetError(f"{path}: not a 3x3 intrinsics matrix with positive focal lengths")
            self._intrinsics[camera] = K
        return self._intrinsics[camera]

    def count_frames(self, vid: str, entry: dict) -> int:
        folder = self.root / vid / "align_rgb"
        if not folder.is_dir():
            raise DatasetError(f"{folder}: frame folder of {vid!r} not found")
        n = len(list(folder.glob("*.jpg")))
        meta = entry.get("meta", {}).get("num_frames")
        if meta is not None and int(meta) != n:
            raise DatasetError(f"{folder}: holds {n} frames but meta.num_frames is {meta}")
        return n

    def frame(self, vid: str, t: int, mask_ids: dict[int, int] | None = None) -> RGBDFrameRecord:
        name = f"{t:05d}"
        rgb = load_image(self.root / vid / "align_rgb" / f"{name}.jpg", "RGB")
        depth = load_image(self.root / vid / "align_depth" / f"{name}.png").astype(np.float32) * self.depth_scale
        mpath = self.mask_root / vid / "mask" / f"{name}.npz"
        if not mpath.is_file():
            raise DatasetError(f"{mpath}: file not found")
        try:
            with np.load(mpath) as z:
                pix = z["array"].T.astype(np.int64)  # stored transposed
        except (ValueError, OSError, EOFError, KeyError) as e:
            raise DatasetError(f"{mpath}: unreadable mask file or no 'array' key ({e})") from None
        if pix.shape != rgb.shape[:2] or depth.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{mpath}: mask {pix.shape} / depth {depth.shape} do not match the image {rgb.shape[:2]}"
            )
        instance = np.zeros_like(pix)
        for mid, oid in (mask_ids or {}).items():
            instance[pix == mid] = oid
        return RGBDFrameRecord(rgb, depth, self.intrinsics(vid), None, instance, str(mpath))


_RGBDDataset = RGBDDataset  # the name this base class had before
