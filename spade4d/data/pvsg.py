"""PVSG reader (docs/formats.md).

``pvsg.json``: ``objects.thing``/``objects.stuff``, ``relations`` (predicate names), ``split[source][train|val]``,
``data[]`` with ``video_id``, ``meta{height,width,fps,num_frames}``, ``objects[{object_id, category, is_thing}]``,
``relations[[subject_id, object_id, "predicate", [[start, end], ...]]]``.
Layout: ``<root>/<source>/videos/<video_id>.mp4`` read with decord (frame-accurate seeking; only the frames
asked for are decoded) and ``<root>/<source>/masks/<video_id>/%04d.png``, P-mode PNGs whose pixel value is the
object id. ``source`` is found from the split table (``ego4d``, ``epic_kitchen``, ``vidor``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spade4d.data.files import DatasetError, load_image, load_json, load_npy
from spade4d.data.psg4d import RGBDDataset, RGBDFrameRecord, VideoAnnotation, parse_relations


class PVSG(RGBDDataset):
    def __init__(self, root: str | os.PathLike, split: str = "val", annotation: str | os.PathLike | None = None):
        self.root = Path(root)
        self.ann_path = Path(annotation) if annotation else self.root / "pvsg.json"
        ann = load_json(self.ann_path)
        try:
            self.thing_classes = list(ann["objects"]["thing"])
            self.stuff_classes = list(ann["objects"]["stuff"])
            self.predicates = list(ann["relations"])
            split_table = ann["split"]
            data = ann["data"]
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{self.ann_path}: missing {e}") from None
        self.classes = self.thing_classes + self.stuff_classes
        self.source_of: dict[str, str] = {}
        for src, parts in split_table.items():
            for vid in parts.get(split, []):
                self.source_of[vid] = src
        if not isinstance(data, list) or not all(isinstance(d, dict) and "video_id" in d for d in data):
            raise DatasetError(f"{self.ann_path}: 'data' must be a list of objects with a 'video_id'")
        self.entries = [d for d in data if d["video_id"] in self.source_of]
        missing = sorted(set(self.source_of) - {d["video_id"] for d in self.entries})
        if missing:
            raise DatasetError(
                f"{self.ann_path}: split {split!r} lists {len(missing)} video ids with no entry in 'data' "
                f"({', '.join(missing[:3])})"
            )
        self.split = split

    def __len__(self) -> int:
        return len(self.entries)

    def video_ids(self) -> list[str]:
        return [e["video_id"] for e in self.entries]

    def num_frames(self, i: int) -> int:
        """Video ``i``'s ``meta.num_frames``."""
        e = self.entries[i]
        try:
            return int(e["meta"]["num_frames"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{self.ann_path} [{e['video_id']}]: meta.num_frames missing") from None

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) of video ``i`` from its ``meta``."""
        e = self.entries[i]
        try:
            h, w = int(e["meta"]["height"]), int(e["meta"]["width"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{self.ann_path} [{e['video_id']}]: meta.height / meta.width missing") from None
        if h <= 0 or w <= 0:
            raise DatasetError(f"{self.ann_path} [{e['video_id']}]: meta size {w}x{h} is not positive")
        return h, w

    def annotation(self, i: int) -> VideoAnnotation:
        e = self.entries[i]
        vid = e["video_id"]
        where = f"{self.ann_path} [{vid}]"
        T = self.num_frames(i)
        labels = {int(o["object_id"]): str(o["category"]) for o in e.get("objects", [])}
        rels = parse_relations(e, set(labels), T, where, "pvsg")
        return VideoAnnotation(vid, T, labels, rels)

    def video_path(self, vid: str) -> Path:
        return self.root / self.source_of[vid] / "videos" / f"{vid}.mp4"

    def read_frames(self, vid: str, indices: Sequence[int]) -> np.ndarray:
        """(len(indices), H, W, 3) uint8 frames, decoded with decord by seeking (only these frames)."""
        try:
            from decord import VideoReader, cpu
        except ImportError as e:  # pragma: no cover - decord is in the video extra
            raise DatasetError("reading PVSG videos needs decord (pip install 'spade4d[video]')") from e
        path = self.video_path(vid)
        if not path.is_file():
            raise DatasetError(f"{path}: video not found")
        try:
            vr = VideoReader(str(path), ctx=cpu(0))
        except Exception as e:  # decord raises its own DECORDError
            raise DatasetError(f"{path}: unreadable video ({e})") from None
        n = len(vr)
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise DatasetError(f"{path}: frames {bad[:5]} outside the video's {n} frames")
        return vr.get_batch(list(indices)).asnumpy()

    def read_mask(self, vid: str, t: int) -> np.ndarray:
        """(H, W) int64 object ids of frame t (P-mode PNG: the palette index is the object id)."""
        return load_image(self.mask_path(vid, t)).astype(np.int64)

    def mask_path(self, vid: str, t: int) -> Path:
        return self.root / self.source_of[vid] / "masks" / vid / f"{t:04d}.png"


class PVSGWithDepth(PVSG):
    """PVSG plus per-frame depth maps (PVSG ships none: e.g. from a depth estimator or an RGB-D re-capture),
    ``<depth_root>/<video_id>/%04d.npy`` in units of ``depth_scale`` metres, and one pinhole ``K`` for the
    videos. Gives the frame records :func:`spade4d.data.convert.convert_rgbd` lifts to the point-cloud layout;
    frames are decoded one at a time by seeking."""

    def __init__(
        self,
        root: str | os.PathLike,
        depth_root: str | os.PathLike,
        K,
        split: str = "val",
        annotation: str | os.PathLike | None = None,
        depth_scale: float = 1.0,
    ):
        super().__init__(root, split, annotation)
        self.depth_root = Path(depth_root)
        self.K = np.asarray(K, dtype=np.float64)
        self.depth_scale = depth_scale

    def frame(self, vid: str, t: int):

        rgb = self.read_frames(vid, [t])[0]
        dpath = self.depth_root / vid / f"{t:04d}.npy"
        depth = load_npy(dpath).astype(np.float32) * self.depth_scale
        mask = self.read_mask(vid, t)
        if depth.shape != rgb.shape[:2] or mask.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{dpath}: depth {depth.shape} / mask {mask.shape} do not match the frame {rgb.shape[:2]}"
            )
        return RGBDFrameRecord(rgb, depth, self.K, None, mask, str(dpath))
