"""Readers of the PSG4D layouts (PROTOCOLS.md §1.3-1.5).

:class:`PSG4DPointCloud` reads the point-cloud layout (§1.5): per-frame ``.pth`` tuples
``(xyz, rgb, semantic_label, instance_label)`` under ``<root>/point_clouds/<video_id>/`` and the GTA-style
annotation ``<root>/psg4d.json``. Each item is a ``(PointSequence, SceneGraph4D)`` pair.

Options (choices PROTOCOLS.md leaves open):
* ``rgb_range``: ``"auto"`` (default) maps colours to [0, 1] whatever the file holds: values above 1.5 are
  taken as 0-255, negative values as [-1, 1] (the ScanNet-style normalisation of point-cloud codebases);
  ``"unit"``, ``"byte"`` or ``"signed"`` force one reading.
* ``allow_pickle``: ``.pth`` files holding numpy arrays need full unpickling, which runs code from the file;
  off by default (torch's ``weights_only`` loading), on for files you trust.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spade4d.structures import PointSequence, Relation4D, SceneGraph4D, StructureError, merge_spans


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


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


def load_point_frame(path: str | os.PathLike, allow_pickle: bool = False, rgb_range: str = "auto") -> dict:
    """One frame of the point-cloud layout as numpy arrays (``xyz rgb semantic instance``), checked."""
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: frame file not found")
    if not allow_pickle and not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: not a readable torch file (not a torch.save archive: truncated or another format)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        raise DatasetError(
            f"{path}: cannot be loaded with weights_only=True ({str(e).splitlines()[0]}); if it holds numpy arrays "
            "and you trust it, pass allow_pickle=True"
        ) from None
    except Exception as e:
        raise DatasetError(f"{path}: not a readable torch file ({type(e).__name__}: {e})") from None
    if not isinstance(data, (tuple, list)) or len(data) < 4:
        raise DatasetError(f"{path}: expected a tuple (xyz, rgb, semantic_label, instance_label)")
    xyz, rgb, sem, inst = (_to_numpy(a) for a in data[:4])
    n = len(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise DatasetError(f"{path}: xyz has shape {xyz.shape}, expected (N, 3)")
    for name, arr, shape in (("rgb", rgb, (n, 3)), ("semantic_label", sem, (n,)), ("instance_label", inst, (n,))):
        if arr.shape != shape:
            raise DatasetError(f"{path}: {name} has shape {arr.shape}, expected {shape}")
    return {
        "xyz": xyz.astype(np.float32),
        "rgb": normalise_rgb(rgb, rgb_range),
        "semantic": sem.astype(np.int64),
        "instance": inst.astype(np.int64),
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
    for k, rel in enumerate(entry.get("relations", [])):
        parts = _unpack_relation(rel, style)
        if parts is None:
            raise DatasetError(f"{where}: relation {k} {rel!r} is not {RELATION_LAYOUTS[style]}")
        s, p, o, rel_spans = parts
        for role, oid in (("subject", s), ("object", o)):
            if oid not in object_ids:
                raise DatasetError(f"{where}: relation {k} names unknown {role} id {oid!r}")
        for span in rel_spans:
            if not isinstance(span, (list, tuple)) or len(span) != 2:
                raise DatasetError(f"{where}: relation {k} span {span!r} is not [start, end]")
            start, end = int(span[0]), int(span[1])
            if start < 0 or end >= num_frames or start > end:
                raise DatasetError(
                    f"{where}: relation {k} span [{start}, {end}] lies outside frames 0..{num_frames - 1}"
                )
            spans.setdefault((int(s), str(p), int(o)), []).append((start, end))
    return [Relation4D(subject=s, object=o, predicate=p, spans=merge_spans(v)) for (s, p, o), v in spans.items()]


def names_used(entries: list[dict], style: str) -> tuple[set[str], set[str]]:
    """The object categories and predicates that annotation ``entries`` (relations in ``style``) use."""
    classes, predicates = set(), set()
    for e in entries:
        classes.update(str(o.get("category")) for o in e.get("object", []) if isinstance(o, dict))
        for rel in e.get("relations", []):
            parts = _unpack_relation(rel, style)
            if parts is not None:
                predicates.add(str(parts[1]))
    return classes, predicates


class PSG4DPointCloud:
    """The PSG4D point-cloud layout as a sequence dataset of ``(PointSequence, SceneGraph4D)``."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "test",
        annotation: str = "psg4d.json",
        allow_pickle: bool = False,
        rgb_range: str = "auto",
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found")
        self.ann_path = self.root / annotation
        ann = load_json(self.ann_path)
        try:
            self.thing_classes = list(ann["objects"]["thing"])
            self.stuff_classes = list(ann["objects"]["stuff"])
            data = ann["data"]
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{self.ann_path}: missing {e} (need objects.thing, objects.stuff, data)") from None
        self.classes = self.thing_classes + self.stuff_classes
        if split is not None:
            if split not in ann.get("split", {}):
                raise DatasetError(f"{self.ann_path}: no split {split!r} (has {', '.join(ann.get('split', {}))})")
            wanted = set(ann["split"][split])
            data = [d for d in data if d["video_id"] in wanted]
        self.entries = data
        self.predicates = list(
            ann.get("predicates") or sorted({r[1] for d in ann["data"] for r in d.get("relations", [])})
        )
        self.split = split
        self.allow_pickle, self.rgb_range = allow_pickle, rgb_range

    def __len__(self) -> int:
        return len(self.entries)

    def video_ids(self) -> list[str]:
        return [e["video_id"] for e in self.entries]

    def names_used(self) -> tuple[set[str], set[str]]:
        """The object categories and predicates this split's annotations use (no frame is read)."""
        return names_used(self.entries, "gta")

    def __iter__(self) -> Iterator[tuple[PointSequence, SceneGraph4D]]:
        for i in range(len(self)):
            yield self[i]

    def index_of(self, video_id: str) -> int:
        for i, e in enumerate(self.entries):
            if e["video_id"] == video_id:
                return i
        raise KeyError(f"{video_id!r} is not in split {self.split!r} of {self.ann_path}")

    def frame_paths(self, video_id: str, num_frames: int) -> list[Path]:
        return [self.root / "point_clouds" / video_id / f"{t:06d}.pth" for t in range(num_frames)]

    def num_frames(self, i: int) -> int:
        """The frame count of sequence ``i`` from its annotation (no frame is read)."""
        e = self.entries[i]
        try:
            return int(e["meta"]["num_frames"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{self.ann_path} [{e.get('video_id')}]: meta.num_frames missing or not an integer"
            ) from None

    def __getitem__(self, i: int) -> tuple[PointSequence, SceneGraph4D]:
        e = self.entries[i]
        vid = e["video_id"]
        where = f"{self.ann_path} [{vid}]"
        num_frames = self.num_frames(i)
        seq_dir = self.root / "point_clouds" / vid
        if not seq_dir.is_dir():
            raise DatasetError(f"{seq_dir}: point-cloud folder of {vid!r} not found")
        on_disk = len(list(seq_dir.glob("*.pth")))
        if on_disk != num_frames:
            raise DatasetError(f"{seq_dir}: holds {on_disk} frame files but meta.num_frames is {num_frames}")
        frames = [load_point_frame(p, self.allow_pickle, self.rgb_range) for p in self.frame_paths(vid, num_frames)]
        points = PointSequence.from_frames(
            [f["xyz"] for f in frames],
            [f["rgb"] for f in frames],
            video_id=vid,
            semantic=[f["semantic"] for f in frames],
            instance=[f["instance"] for f in frames],
        )
        labels = {}
        for o in e.get("object", []):
            try:
                labels[int(o["object_id"])] = str(o["category"])
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{where}: object entry {o!r} lacks object_id/category") from None
        relations = parse_relations(e, set(labels), num_frames, where, "gta")
        try:
            graph = SceneGraph4D.from_labels(points, labels, relations)
        except StructureError as err:
            raise DatasetError(f"{where}: {err}") from None
        return points, graph


# ----------------------------------------------------------------------------------------------------------------
# RGB-D layouts: PSG4D-GTA (§1.3) and PSG4D-HOI (§1.4)
# ----------------------------------------------------------------------------------------------------------------


class RGBDFrameRecord:
    """One RGB-D frame ready for lifting: ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) metres, ``K`` 3x3,
    ``world_from_camera`` 4x4 or None, ``instance`` (H, W) int64 object ids (0: none)."""

    __slots__ = ("rgb", "depth", "K", "world_from_camera", "instance", "source")

    def __init__(self, rgb, depth, K, world_from_camera, instance, source: str):
        self.rgb, self.depth, self.K = rgb, depth, K
        self.world_from_camera, self.instance, self.source = world_from_camera, instance, source


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: unreadable or truncated .npy ({e})") from None


def _load_image(path: Path, mode: str | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert(mode) if mode else im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable or truncated image ({e})") from None


def _load_camera_yaml(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import yaml

    if not path.is_file():
        raise DatasetError(f"{path}: camera file not found")
    try:
        cam = yaml.safe_load(path.read_text())
        K = np.array([[cam["fx"], 0.0, cam["cx"]], [0.0, cam["fy"], cam["cy"]], [0.0, 0.0, 1.0]], dtype=np.float64)
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: camera file lacks fx/fy/cx/cy ({e})") from None
    pose = cam.get("world_from_camera")
    return K, None if pose is None else np.asarray(pose, dtype=np.float64).reshape(4, 4)


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


class _RGBDDataset:
    """Common part of the RGB-D readers: annotation parsing, splits, frame counting."""

    relation_style = "gta"

    def __init__(self, annotation: str | os.PathLike, split: str | None):
        self.ann_path = Path(annotation)
        ann = load_json(self.ann_path)
        try:
            data = ann["data"]
        except (KeyError, TypeError):
            raise DatasetError(f"{self.ann_path}: missing 'data'") from None
        objs = ann.get("objects", {})
        self.thing_classes = list(objs.get("thing", [])) if isinstance(objs, dict) else list(objs)
        self.stuff_classes = list(objs.get("stuff", [])) if isinstance(objs, dict) else []
        self.classes = self.thing_classes + self.stuff_classes
        if split is not None:
            splits = ann.get("split", {})
            if split not in splits:
                raise DatasetError(f"{self.ann_path}: no split {split!r} (has {', '.join(splits) or 'none'})")
            wanted = set(splits[split])
            data = [d for d in data if d["video_id"] in wanted]
        self.entries = data

    def __len__(self) -> int:
        return len(self.entries)

    def video_ids(self) -> list[str]:
        return [e["video_id"] for e in self.entries]

    def names_used(self) -> tuple[set[str], set[str]]:
        """The object categories and predicates this split's annotations use (no frame is read)."""
        return names_used(self.entries, self.relation_style)

    def annotation(self, i: int) -> VideoAnnotation:
        e = self.entries[i]
        vid = e["video_id"]
        where = f"{self.ann_path} [{vid}]"
        num_frames = self.count_frames(vid, e)
        labels, mask_ids = {}, {}
        for o in e.get("object", e.get("objects", [])):
            try:
                oid = int(o["object_id"])
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{where}: object entry {o!r} lacks object_id") from None
            if "mask_id" in o:
                mask_ids[int(o["mask_id"])] = oid
            labels[oid] = self.class_of(o, where)
        rels = parse_relations(e, set(labels), num_frames, where, self.relation_style)
        return VideoAnnotation(vid, num_frames, labels, rels, mask_ids)

    def class_of(self, obj: dict, where: str) -> str:
        if "category" not in obj:
            raise DatasetError(f"{where}: object {obj.get('object_id')!r} has no category")
        return str(obj["category"])

    def count_frames(self, vid: str, entry: dict) -> int:
        raise NotImplementedError


class PSG4DGTA(_RGBDDataset):
    """PSG4D-GTA RGB-D frames: ``<root>/{images,depth,camera,masks}/<video_id>/%06d.<ext>``.

    Mask pixels hold the object id, background (stuff) segments id + 1000 (``stuff_offset``). Camera files are
    YAML with ``fx fy cx cy`` and optionally a 4x4 ``world_from_camera`` (OpenCV axes); without it points stay in
    camera coordinates. ``depth_scale`` converts the depth files to metres.
    """

    relation_style = "gta"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "test",
        annotation: str | os.PathLike | None = None,
        depth_scale: float = 1.0,
        stuff_offset: int = 1000,
        image_ext: str = "bmp",
    ):
        self.root = Path(root)
        super().__init__(annotation or self.root / "psg4d.json", split)
        self.depth_scale, self.stuff_offset, self.image_ext = depth_scale, stuff_offset, image_ext

    def count_frames(self, vid: str, entry: dict) -> int:
        try:
            n = int(entry["meta"]["num_frames"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{self.ann_path} [{vid}]: meta.num_frames missing") from None
        folder = self.root / "images" / vid
        if not folder.is_dir():
            raise DatasetError(f"{folder}: image folder of {vid!r} not found")
        on_disk = len(list(folder.glob(f"*.{self.image_ext}")))
        if on_disk != n:
            raise DatasetError(f"{folder}: holds {on_disk} images but meta.num_frames is {n}")
        return n

    def frame(self, vid: str, t: int) -> RGBDFrameRecord:
        name = f"{t:06d}"
        rgb = _load_image(self.root / "images" / vid / f"{name}.{self.image_ext}", "RGB")
        depth = _load_npy(self.root / "depth" / vid / f"{name}.npy").astype(np.float32) * self.depth_scale
        K, pose = _load_camera_yaml(self.root / "camera" / vid / f"{name}.yaml")
        mpath = self.root / "masks" / vid / f"{name}.npy"
        ids = _load_npy(mpath).astype(np.int64)
        for arr, what, path in ((depth, "depth", self.root / "depth" / vid / f"{name}.npy"), (ids, "mask", mpath)):
            if arr.shape != rgb.shape[:2]:
                raise DatasetError(f"{path}: {what} has shape {arr.shape}, the image is {rgb.shape[:2]}")
        instance = np.where(ids >= self.stuff_offset, ids - self.stuff_offset, ids)
        return RGBDFrameRecord(rgb, depth, K, pose, instance, str(mpath))


class PSG4DHOI(_RGBDDataset):
    """PSG4D-HOI RGB-D frames: ``<root>/<video_id>/align_rgb/%05d.jpg`` and ``align_depth/%05d.png`` (uint16
    millimetres by default, ``depth_scale=0.001``), masks ``<mask_root>/<video_id>/mask/%05d.npz`` (key
    ``array``, stored transposed), object class ``mask_id % 1000`` into the annotation's class list, relations
    ``[subject_id, object_id, "predicate", start, end]``. HOI ships no per-frame camera files, so the
    intrinsics are given (``K``)."""

    relation_style = "hoi"

    def __init__(
        self,
        root: str | os.PathLike,
        mask_root: str | os.PathLike,
        annotation: str | os.PathLike,
        K: np.ndarray,
        split: str | None = "test",
        depth_scale: float = 0.001,
    ):
        self.root, self.mask_root = Path(root), Path(mask_root)
        super().__init__(annotation, split)
        self.K = np.asarray(K, dtype=np.float64)
        self.depth_scale = depth_scale

    def class_of(self, obj: dict, where: str) -> str:
        if "mask_id" in obj and self.classes:
            idx = int(obj["mask_id"]) % 1000
            if not 0 <= idx < len(self.classes):
                raise DatasetError(f"{where}: mask_id {obj['mask_id']} gives class {idx}, outside the class list")
            return self.classes[idx]
        return super().class_of(obj, where)

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
        rgb = _load_image(self.root / vid / "align_rgb" / f"{name}.jpg", "RGB")
        depth = _load_image(self.root / vid / "align_depth" / f"{name}.png").astype(np.float32) * self.depth_scale
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
        return RGBDFrameRecord(rgb, depth, self.K, None, instance, str(mpath))
