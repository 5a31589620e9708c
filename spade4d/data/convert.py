"""Conversion of RGB-D datasets to the PSG4D point-cloud layout (docs/formats.md).

Streaming: one frame is read, lifted and written at a time. Resumable: a frame whose ``.pth`` exists is skipped
(each file is written to a temporary name and renamed, so an existing file is always complete), and the
annotation ``psg4d.json`` is written last, so an interrupted conversion never looks finished. ``workers``
processes convert videos in parallel. Frames with no valid depth are written empty and counted; pixels with
NaN or non-positive depth are dropped and counted.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spade4d.data.lift import LiftedFrame, LiftError, lift_points, lift_rgbd
from spade4d.data.psg4d import DatasetError, RGBDDataset, VideoAnnotation
from spade4d.io import write_json, write_with


@dataclass
class ConvertSummary:
    videos: int = 0
    frames_written: int = 0
    frames_skipped_existing: int = 0
    empty_frames: list[str] = field(default_factory=list)
    frames_without_files: list[str] = field(default_factory=list)
    invalid_depth_pixels: int = 0
    points: int = 0

    def merge(self, other: ConvertSummary) -> None:
        self.videos += other.videos
        self.frames_written += other.frames_written
        self.frames_skipped_existing += other.frames_skipped_existing
        self.empty_frames += other.empty_frames
        self.frames_without_files += other.frames_without_files
        self.invalid_depth_pixels += other.invalid_depth_pixels
        self.points += other.points

    def describe(self) -> str:
        return (
            f"converted {self.videos} videos: {self.frames_written} frames written, "
            f"{self.frames_skipped_existing} already there, {len(self.empty_frames)} empty, "
            f"{len(self.frames_without_files)} without their depth/rage-matrix/image/mask files (written empty), "
            f"{self.invalid_depth_pixels} invalid depth pixels dropped"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "frames_written": self.frames_written,
            "frames_skipped_existing": self.frames_skipped_existing,
            "empty_frames": len(self.empty_frames),
            "frames_without_files": len(self.frames_without_files),
            "invalid_depth_pixels": self.invalid_depth_pixels,
            "points": self.points,
        }


def _convert_video(args: tuple) -> tuple[ConvertSummary, dict]:
    import torch

    ds, index, out, voxel_size, class_index = args
    ann: VideoAnnotation = ds.annotation(index)
    vid = ann.video_id
    folder = Path(out) / "point_clouds" / vid
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp*"):  # a temporary file of a conversion killed mid-write
        stale.unlink(missing_ok=True)
    summary = ConvertSummary(videos=1)
    sem_lut = {oid: class_index.get(lab, -100) for oid, lab in ann.labels.items()}
    for t in range(ann.num_frames):
        path = folder / f"{t:06d}.pth"
        if path.exists():
            summary.frames_skipped_existing += 1
            continue
        rec = ds.frame(vid, t, ann.mask_ids) if ann.mask_ids else ds.frame(vid, t)
        if rec is None:  # the dataset lacks a file of this frame (PSG4D-GTA): an empty frame, counted
            summary.frames_without_files.append(ds.skipped[-1] if getattr(ds, "skipped", None) else f"{vid} {t}")
            lifted = LiftedFrame(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
            lifted.instance = np.zeros(0, np.int64)
        else:
            try:
                if rec.points is not None:
                    lifted = lift_points(rec.rgb, rec.points, rec.valid, instance=rec.instance, voxel_size=voxel_size)
                else:
                    lifted = lift_rgbd(
                        rec.rgb, rec.depth, rec.K, rec.world_from_camera, instance=rec.instance, voxel_size=voxel_size
                    )
            except LiftError as e:
                raise DatasetError(f"{rec.source}: {e}") from None
        if not np.isfinite(lifted.xyz).all():
            raise DatasetError(f"{rec.source}: lifting gave non-finite points (check the camera and pose)")
        summary.invalid_depth_pixels += lifted.dropped_invalid
        known = np.isin(lifted.instance, list(ann.labels)) if ann.labels else np.zeros(len(lifted), bool)
        instance = np.where(known, lifted.instance, -100)
        semantic = (
            np.array([sem_lut.get(int(i), -100) for i in instance], dtype=np.int64)
            if len(instance)
            else np.zeros(0, np.int64)
        )
        if len(lifted) == 0 and rec is not None:
            summary.empty_frames.append(f"{rec.source} (no valid depth)")
        data = (
            torch.from_numpy(lifted.xyz),
            torch.from_numpy(lifted.rgb),
            torch.from_numpy(semantic),
            torch.from_numpy(instance.astype(np.int64)),
        )
        write_with(path, lambda tmp, d=data: torch.save(d, tmp))
        summary.frames_written += 1
        summary.points += len(lifted)
    entry = {
        "video_id": vid,
        "meta": {"num_frames": ann.num_frames},
        "object": [{"object_id": oid, "category": lab} for oid, lab in sorted(ann.labels.items())],
        "relations": [[r.subject, r.predicate, r.object, [s, e]] for r in ann.relations for s, e in r.spans],
    }
    return summary, entry


def convert_rgbd(
    ds: RGBDDataset,
    out: str | os.PathLike,
    voxel_size: float | None = None,
    workers: int = 1,
    split_name: str | None = None,
    progress: bool = True,
) -> ConvertSummary:
    """Convert every video of ``ds`` into ``out`` (PSG4D point-cloud layout); ``psg4d.json`` is written last."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume_settings(out, {"voxel_size": voxel_size, "source": type(ds).__name__})
    class_index = {c: k for k, c in enumerate(ds.classes)}
    jobs = [(ds, i, str(out), voxel_size, class_index) for i in range(len(ds))]
    summary = ConvertSummary()
    entries = []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        results = pool.map(_convert_video, jobs) if pool else map(_convert_video, jobs)
        for s, entry in tqdm(results, total=len(jobs), desc="convert", disable=not progress):
            summary.merge(s)
            entries.append(entry)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    for msg in summary.empty_frames:
        warnings.warn(f"empty frame written: {msg}", stacklevel=2)
    if summary.frames_without_files:
        warnings.warn(
            f"{len(summary.frames_without_files)} frames lack a depth, rage-matrix, image or mask file and were "
            f"written empty, e.g. {summary.frames_without_files[0]}",
            stacklevel=2,
        )
    ann = {
        "objects": {"thing": ds.thing_classes, "stuff": ds.stuff_classes},
        "split": {split_name or "all": [e["video_id"] for e in entries]},
        "data": entries,
    }
    write_json(out / "psg4d.json", ann)
    write_json(out / "convert_summary.json", summary.as_dict(), indent=1)
    return summary


def _check_resume_settings(out: Path, settings: dict) -> None:
    """A conversion resumed into ``out`` must use the settings it started with (else old and new frames mix)."""
    path = out / "convert_settings.json"
    if path.is_file():
        import json

        try:
            before = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            before = None
        if before != settings:
            raise DatasetError(
                f"{path}: this folder holds a conversion made with {before}, not {settings}; "
                "use another --out or the same settings"
            )
    else:
        write_json(path, settings)


def check_out_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a directory")
    return out


def open_rgbd_source(
    source: str,
    root: str | os.PathLike,
    split: str | None = None,
    *,
    annotation: str | os.PathLike | None = None,
    mask_root: str | os.PathLike | None = None,
    depth_root: str | os.PathLike | None = None,
    intrinsics=None,
    depth_scale: float | None = None,
    camera_root: str | os.PathLike | None = None,
) -> RGBDDataset:
    """The RGB-D dataset ``convert`` reads: ``psg4d-gta`` (NDC depth through rage matrices), ``psg4d-hoi``
    (``mask_root`` and ``annotation`` needed; depth in mm unless ``depth_scale``) or ``pvsg`` (no depth of its
    own: ``depth_root`` and ``intrinsics`` needed; default split val). docs/formats.md describes each layout."""
    if source == "pvsg":
        from spade4d.data.pvsg import PVSGWithDepth

        if not depth_root or not intrinsics:
            raise ValueError("pvsg needs --depth-root and --intrinsics fx,fy,cx,cy (PVSG ships no depth)")
        return PVSGWithDepth(
            root, depth_root, intrinsics, split or "val", annotation=annotation, depth_scale=depth_scale or 1.0
        )
    if source == "psg4d-gta":
        from spade4d.data.psg4d import PSG4DGTA

        if depth_scale is not None:
            raise ValueError("psg4d-gta depth is NDC and is read through rage_matrices; --depth-scale does not apply")
        return PSG4DGTA(root, split, annotation=annotation)
    if source == "psg4d-hoi":
        from spade4d.data.psg4d import PSG4DHOI

        if not mask_root or not annotation:
            raise ValueError("psg4d-hoi needs --mask-root and --ann (psg4d_hoi.json, categories.json beside it)")
        return PSG4DHOI(
            root, mask_root, annotation, intrinsics, split, depth_scale=depth_scale or 0.001, camera_root=camera_root
        )
    raise ValueError(f"unknown RGB-D source {source!r} (psg4d-gta | psg4d-hoi | pvsg)")
