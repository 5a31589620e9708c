"""Your own point-cloud frames as a :class:`~spade4d.structures.PointSequence`, without an annotation file.

A folder of per-frame files, sorted by name: ``.ply`` / ``.pcd`` (read with Open3D; colours when the file has
them), ``.npy`` (an ``(N, 3)`` xyz or ``(N, 6)`` xyz + rgb array) or ``.npz`` (``xyz`` or ``points``, and
optionally ``rgb`` or ``colors``). Colours in [0, 255] are scaled to [0, 1]; a frame without colours is grey.

spade4d's models are trained on z-up frames in metres (the synthetic world, PSG4D). ``up_axis`` names the input's
up direction (``z``, ``y``, ``-y`` for OpenCV camera axes, ``x``...), ``units`` its length unit (``m``, ``cm``,
``mm``); the frames are turned to z up and scaled to metres as they are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spade4d.data.files import DatasetError
from spade4d.structures import PointSequence

FRAME_SUFFIXES = (".ply", ".pcd", ".npy", ".npz")
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
AXES = ("x", "y", "z", "-x", "-y", "-z")


def up_rotation(up_axis: str) -> np.ndarray:
    """The rotation (3, 3) that turns ``up_axis`` into +z (a proper rotation: right-handed frames stay so)."""
    if up_axis not in AXES:
        raise ValueError(f"up axis must be one of {', '.join(AXES)}, got {up_axis!r}")
    up = np.zeros(3)
    up["xyz".index(up_axis[-1])] = -1.0 if up_axis.startswith("-") else 1.0
    z = np.array([0.0, 0.0, 1.0])
    if np.allclose(up, z):
        return np.eye(3)
    if np.allclose(up, -z):
        return np.diag([1.0, -1.0, -1.0])  # half a turn about x
    axis = np.cross(up, z)
    axis /= np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + K + K @ K  # Rodrigues for a quarter turn: sin = 1, 1 - cos = 1


def read_frame(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One frame file -> (xyz (N, 3) float32, rgb (N, 3) float32 in [0, 1]); a bad file is a one-line error."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".ply", ".pcd"):
            import open3d as o3d

            pc = o3d.io.read_point_cloud(str(path))
            xyz = np.asarray(pc.points)
            rgb = np.asarray(pc.colors) if pc.has_colors() else None
            if not len(xyz) and path.stat().st_size > 0 and not _declares_no_points(path):
                raise DatasetError(f"{path}: Open3D read no points (not a point cloud, or damaged)")
        elif suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim != 2 or arr.shape[1] not in (3, 6):
                raise DatasetError(f"{path}: expected an (N, 3) or (N, 6) array, found shape {arr.shape}")
            xyz, rgb = arr[:, :3], arr[:, 3:] if arr.shape[1] == 6 else None
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in ("xyz", "points") if k in z), None)
                if key is None:
                    raise DatasetError(f"{path}: no 'xyz' or 'points' array (found {', '.join(z.files) or 'none'})")
                xyz = z[key]
                rgb = next((z[k] for k in ("rgb", "colors") if k in z), None)
        else:
            raise DatasetError(f"{path}: not a frame file ({', '.join(FRAME_SUFFIXES)})")
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: unreadable frame ({str(e).splitlines()[0][:160]})") from None
    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise DatasetError(f"{path}: points have shape {xyz.shape}, expected (N, 3)")
    if rgb is None:
        rgb = np.full_like(xyz, 0.5)
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape != xyz.shape:
        raise DatasetError(f"{path}: colours have shape {rgb.shape}, points {xyz.shape}")
    if len(rgb) and rgb.max() > 1.0:
        rgb = rgb / 255.0
    return xyz, np.clip(rgb, 0.0, 1.0)


def _declares_no_points(path: Path) -> bool:
    head = path.read_bytes()[:2048].decode("latin-1")
    return "element vertex 0" in head or "POINTS 0" in head


def frame_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of frame files")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder}: no frame files ({', '.join(FRAME_SUFFIXES)})")
    kinds = {p.suffix.lower() for p in files}
    if len(kinds) > 1:
        raise DatasetError(f"{folder}: frames of several kinds ({', '.join(sorted(kinds))}); keep one per folder")
    return files


def read_frames(
    path: str | os.PathLike, up_axis: str = "z", units: str = "m", video_id: str | None = None
) -> PointSequence:
    """The frames of the folder ``path`` (sorted by file name) as one sequence, turned to z up and metres. Points
    that are not finite are kept out (counted per frame)."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
    folder = Path(path)
    R = up_rotation(up_axis).astype(np.float32)
    scale = np.float32(UNITS[units])
    xyz, rgb = [], []
    for f in frame_files(folder):
        x, c = read_frame(f)
        ok = np.isfinite(x).all(1)
        xyz.append((x[ok] @ R.T) * scale)
        rgb.append(c[ok])
    return PointSequence.from_frames(xyz, rgb, video_id=video_id or folder.name)
