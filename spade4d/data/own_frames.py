"""Your own point-cloud or RGB-D frames as a :class:`~spade4d.structures.PointSequence`, without an annotation file.

A folder of per-frame files, sorted by name: ``.ply`` / ``.pcd`` (read with Open3D; colours when the file has
them), ``.npy`` (an ``(N, 3)`` xyz or ``(N, 6)`` xyz + rgb array) or ``.npz`` (``xyz`` or ``points``, and
optionally ``rgb`` or ``colors``). Colours in [0, 255] are scaled to [0, 1]; a frame without colours is grey.

spade4d's models are trained on z-up frames in metres (the synthetic world, PSG4D). ``up_axis`` names the input's
up direction (``z``, ``y``, ``-y`` for OpenCV camera axes, ``x``...), ``units`` its length unit (``m``, ``cm``,
``mm``); the frames are turned to z up and scaled to metres as they are read.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from spade4d.data.files import DatasetError
from spade4d.structures import PointSequence

FRAME_SUFFIXES = (".ply", ".pcd", ".npy", ".npz")
UNITS = {"m": 1.0, "cm": 100.0, "mm": 1000.0}  # units per metre
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
    """One frame file -> (xyz (N, 3) as stored, rgb (N, 3) float32 in [0, 1]); a bad file is a one-line error."""
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
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise DatasetError(f"{path}: points have shape {xyz.shape}, expected (N, 3)")
    if rgb is None:
        rgb = np.full(xyz.shape, 0.5, np.float32)
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape != xyz.shape:
        raise DatasetError(f"{path}: colours have shape {rgb.shape}, points {xyz.shape}")
    if len(rgb) and rgb.max() > 1.0:
        rgb = rgb / 255.0
    return xyz, np.clip(rgb, 0.0, 1.0)


def _declares_no_points(path: Path) -> bool:
    head = path.read_bytes()[:2048].decode("latin-1")
    return "element vertex 0" in head or "POINTS 0" in head


def frame_order(path: Path) -> tuple:
    """Sort key of frame files: by name, numbers compared as numbers (ScanNet's export writes ``0.png`` ...
    ``10.png`` without leading zeros; ``10`` comes after ``9``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.stem))


def frame_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of frame files")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), key=frame_order)
    if not files:
        raise DatasetError(f"{folder}: no frame files ({', '.join(FRAME_SUFFIXES)})")
    kinds = {p.suffix.lower() for p in files}
    if len(kinds) > 1:
        raise DatasetError(f"{folder}: frames of several kinds ({', '.join(sorted(kinds))}); keep one per folder")
    return files


def read_frames(
    path: str | os.PathLike, up_axis: str | None = None, units: str = "m", video_id: str | None = None
) -> PointSequence:
    """The frames of the folder ``path`` as one sequence, turned to z up and metres.

    A folder of point-cloud files (sorted by name; ``up_axis`` default ``z``, ``units`` their length unit) or an
    RGB-D folder (a ``depth/`` sub-folder: :func:`read_rgbd_frames`; ``up_axis`` default ``z`` with poses, ``-y``
    without, the camera's own axes). Points that are not finite are kept out."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
    folder = Path(path)
    if (folder / "depth").is_dir():
        return read_rgbd_frames(folder, up_axis=up_axis, video_id=video_id)
    R = up_rotation(up_axis or "z")
    xyz, rgb = [], []
    for f in frame_files(folder):
        x, c = read_frame(f)
        ok = np.isfinite(x).all(1)
        xyz.append(to_z_up_metres(x[ok], R, UNITS[units]))
        rgb.append(c[ok])
    seq = PointSequence.from_frames(xyz, rgb, video_id=video_id or folder.name)
    seq.source = str(folder)
    return seq


def to_z_up_metres(xyz: np.ndarray, R: np.ndarray, per_metre: float) -> np.ndarray:
    """Rotate and scale in float64, then round once to float32: a frame stored in millimetres (or y down) from
    float32 metres comes back to the very same floats."""
    return ((np.asarray(xyz, np.float64) @ R.T) / per_metre).astype(np.float32)


# ---- RGB-D folders ------------------------------------------------------------------------------------------------

COLOR_DIRS = ("color", "rgb", "image")
POSE_DIRS = ("pose", "poses")
INTRINSICS = ("intrinsics.json", "intrinsics.txt", "intrinsic.txt", "intrinsic/intrinsic_depth.txt")


def read_intrinsics(folder: Path) -> tuple[np.ndarray, float]:
    """(K (3, 3) of the depth camera in pixels, depth_scale) from the folder's intrinsics file: JSON with ``fx fy cx
    cy`` or ``K`` (and optionally ``depth_scale``), or a text 3x3 / 4x4 matrix (ScanNet's ``intrinsic_depth.txt``;
    depth scale 1000, depth PNGs in millimetres)."""
    path = next((folder / n for n in INTRINSICS if (folder / n).is_file()), None)
    if path is None:
        raise DatasetError(f"{folder}: an RGB-D folder needs an intrinsics file ({', '.join(INTRINSICS)})")
    scale = 1000.0
    try:
        if path.suffix == ".json":
            d = json.loads(path.read_text())
            K = (
                np.asarray(d["K"], np.float64)
                if "K" in d
                else np.array([[d["fx"], 0, d["cx"]], [0, d["fy"], d["cy"]], [0, 0, 1]], np.float64)
            )
            scale = float(d.get("depth_scale", scale))
        else:
            K = np.loadtxt(path, dtype=np.float64)
            K = K[:3, :3] if K.shape == (4, 4) else K
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable intrinsics ({str(e).splitlines()[0][:120]})") from None
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or scale <= 0:
        raise DatasetError(f"{path}: intrinsics must be a finite 3x3 K with positive focal lengths")
    return K, scale


def _matching(folder: Path, names: tuple[str, ...], stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for name in names:
        for suffix in suffixes:
            p = folder / name / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def read_depth(path: Path, scale: float) -> np.ndarray:
    """A depth map in metres: a 16-bit PNG in ``1 / scale`` metres (0: no depth) or a float ``.npy`` in metres."""
    from spade4d.data.files import load_image

    if path.suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False).astype(np.float64)
        except (ValueError, OSError) as e:
            raise DatasetError(f"{path}: unreadable depth ({str(e).splitlines()[0][:120]})") from None
    else:
        depth = load_image(path).astype(np.float64) / scale
    if depth.ndim != 2:
        raise DatasetError(f"{path}: depth must be one channel (H, W), found shape {depth.shape}")
    return depth


def read_pose(path: Path) -> np.ndarray | None:
    """A 4x4 camera-to-world matrix; None for a frame whose tracking was lost. ScanNet's ``.sens`` files hold
    ``-inf`` there, which its exporter (``SensReader/python/SensorData.py``, ``save_mat_to_file``: ``np.savetxt``,
    ``fmt='%f'``) writes as ``-inf`` text; as nerfstudio's ScanNet reader does, any infinite entry marks the frame
    lost (docs/own-data.md). NaN, or another shape, is an error."""
    try:
        pose = np.loadtxt(path, dtype=np.float64)
    except ValueError as e:
        raise DatasetError(f"{path}: unreadable pose ({str(e).splitlines()[0][:120]})") from None
    if pose.shape == (4, 4) and np.isinf(pose).any() and not np.isnan(pose).any():
        return None
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise DatasetError(f"{path}: a pose must be a finite 4x4 camera-to-world matrix, found {pose.shape}")
    return pose


def read_rgbd_frames(
    path: str | os.PathLike,
    up_axis: str | None = None,
    video_id: str | None = None,
    voxel_size: float | None = 0.02,
    max_depth: float = 10.0,
) -> PointSequence:
    """An RGB-D folder (the ScanNet export layout) as one sequence: ``depth/<name>.png`` (16-bit, see
    :func:`read_intrinsics` for the scale) or ``.npy`` (metres), ``color/<name>.jpg|png`` (or ``rgb/``, resized to the
    depth map when it differs), an intrinsics file of the depth camera, and optionally ``pose/<name>.txt`` (4x4
    camera-to-world, OpenCV camera axes) for every frame. Without poses each frame stays in its camera's axes
    (y down: ``up_axis`` defaults to ``-y``). ``voxel_size``: one point per voxel (metres; None keeps every pixel)."""
    from spade4d.data.files import load_image
    from spade4d.data.lift import LiftError, lift_rgbd

    folder = Path(path)
    K, scale = read_intrinsics(folder)
    depth_files = sorted(
        (p for p in (folder / "depth").iterdir() if p.suffix.lower() in (".png", ".npy")), key=frame_order
    )
    if not depth_files:
        raise DatasetError(f"{folder / 'depth'}: no depth maps (.png, .npy)")
    posed = any((folder / d).is_dir() for d in POSE_DIRS)
    R = up_rotation(up_axis or ("z" if posed else "-y"))
    xyz, rgb, lost = [], [], []
    for f in depth_files:
        depth = read_depth(f, scale)
        color = _matching(folder, COLOR_DIRS, f.stem, (".jpg", ".png", ".jpeg"))
        if color is None:
            raise DatasetError(f"{f}: no colour image {f.stem}.jpg/.png in {'/, '.join(COLOR_DIRS)}/")
        image = load_image(color, "RGB")
        if image.shape[:2] != depth.shape:
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize(depth.shape[::-1], Image.BILINEAR))
        pose = None
        if posed:
            pose_path = _matching(folder, POSE_DIRS, f.stem, (".txt",))
            if pose_path is None:
                raise DatasetError(f"{f}: no pose {f.stem}.txt (the folder has poses for other frames)")
            pose = read_pose(pose_path)
            if pose is None:  # no camera, so no place in the world: an empty frame keeps the numbering
                lost.append(f.stem)
                xyz.append(np.zeros((0, 3), np.float32))
                rgb.append(np.zeros((0, 3), np.float32))
                continue
        try:
            lifted = lift_rgbd(image, depth, K, pose, max_depth=max_depth, voxel_size=voxel_size)
        except LiftError as e:
            raise DatasetError(f"{f}: {e}") from None
        xyz.append(to_z_up_metres(lifted.xyz, R, 1.0))
        rgb.append(lifted.rgb)
    if len(lost) == len(depth_files):
        raise DatasetError(f"{folder}: every pose is infinite (tracking lost on every frame)")
    if lost:
        warnings.warn(f"{folder}: {len(lost)} frames have an infinite pose (tracking lost) and are left empty, e.g. "
                      f"{lost[0]}", stacklevel=2)  # fmt: skip
    seq = PointSequence.from_frames(xyz, rgb, video_id=video_id or folder.name)
    seq.source = str(folder)
    return seq
