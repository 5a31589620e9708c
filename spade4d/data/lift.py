"""RGB-D + camera -> coloured points with per-point labels.

Camera model: pinhole with intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels, OpenCV axes
(x right, y down, z forward). Integer pixel coordinates are pixel centres (the OpenCV/Open3D convention),
so pixel ``(u, v)`` at depth ``z`` lifts to ``z * K^-1 [u, v, 1]``. ``depth`` is the z distance in metres (not
the ray length). ``world_from_camera`` is a 4x4 pose; without it points stay in camera coordinates.

Everything is vectorised over pixels; there is no per-pixel Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LiftedFrame", "lift_rgbd", "lift_points", "backproject", "project", "voxel_downsample", "LiftError"]


class LiftError(ValueError):
    """Inputs to lifting are inconsistent (shapes, camera)."""


@dataclass
class LiftedFrame:
    """Points of one frame. ``pixel`` is the flat pixel index (``v * W + u``) each point came from."""

    xyz: np.ndarray  # (N, 3) float32
    rgb: np.ndarray  # (N, 3) float32 in [0, 1]
    pixel: np.ndarray  # (N,) int64
    instance: np.ndarray | None = None  # (N,) int64
    semantic: np.ndarray | None = None  # (N,) int64
    dropped_invalid: int = 0  # pixels skipped for NaN / non-positive / out-of-range depth

    def __len__(self) -> int:
        return len(self.xyz)


def _check_K(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise LiftError(f"intrinsics must be a 3x3 matrix with positive focal lengths, got {K.tolist()}")
    return K


def backproject(
    depth: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray | None = None, pixels: np.ndarray | None = None
) -> np.ndarray:
    """Lift pixels (flat indices; default: all) of a depth map to 3-D points, ``(M, 3)`` float64."""
    K = _check_K(K)
    h, w = depth.shape
    if pixels is None:
        pixels = np.arange(h * w)
    v, u = np.divmod(pixels, w)
    z = depth.reshape(-1)[pixels].astype(np.float64)
    x = (u - K[0, 2]) * z / K[0, 0]
    y = (v - K[1, 2]) * z / K[1, 1]
    pts = np.stack([x, y, z], axis=1)
    if world_from_camera is not None:
        T = np.asarray(world_from_camera, dtype=np.float64)
        if T.shape == (4, 4) and (not np.isfinite(T).all() or abs(np.linalg.det(T[:3, :3])) < 1e-9):
            raise LiftError(f"world_from_camera must be a finite, invertible pose, got {T.tolist()}")
        if T.shape != (4, 4):
            raise LiftError(f"world_from_camera must be 4x4, got shape {T.shape}")
        pts = pts @ T[:3, :3].T + T[:3, 3]
    return pts


def project(xyz: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`backproject`: world points ``(M, 3)`` -> ``(M, 3)`` array of ``(u, v, z)``."""
    K = _check_K(K)
    pts = np.asarray(xyz, dtype=np.float64)
    if world_from_camera is not None:
        T = np.linalg.inv(np.asarray(world_from_camera, dtype=np.float64))
        pts = pts @ T[:3, :3].T + T[:3, 3]
    z = pts[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * pts[:, 0] / z + K[0, 2]
        v = K[1, 1] * pts[:, 1] / z + K[1, 2]
    return np.stack([u, v, z], axis=1)


def voxel_downsample(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """Indices (sorted) of one point per occupied voxel: the first point of each voxel in input order."""
    if voxel_size <= 0:
        raise LiftError(f"voxel size must be positive, got {voxel_size}")
    keys = np.floor(np.asarray(xyz, dtype=np.float64) / voxel_size).astype(np.int64)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    keys -= keys.min(0)
    if keys.max() < 2**21:  # pack the three indices into one int64: a 1-D unique is much faster than rows
        code = (keys[:, 0] << 42) | (keys[:, 1] << 21) | keys[:, 2]
        _, first = np.unique(code, return_index=True)
    else:
        _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


def lift_rgbd(
    rgb: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    world_from_camera: np.ndarray | None = None,
    instance: np.ndarray | None = None,
    semantic: np.ndarray | None = None,
    min_depth: float = 1e-3,
    max_depth: float = np.inf,
    voxel_size: float | None = None,
    stride: int = 1,
) -> LiftedFrame:
    """Lift one RGB-D frame.

    Args:
        rgb: ``(H, W, 3)`` uint8 or float in ``[0, 1]``.
        depth: ``(H, W)`` metres; NaN, inf, ``<= min_depth`` or ``> max_depth`` pixels are dropped and counted.
        instance / semantic: optional ``(H, W)`` integer maps carried onto the points.
        voxel_size: keep one point per voxel of this size (metres).
        stride: keep every ``stride``-th pixel in each direction before lifting.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise LiftError(f"depth must be (H, W), got shape {depth.shape}")
    h, w = depth.shape
    rgb = np.asarray(rgb)
    if rgb.shape[:2] != (h, w) or rgb.ndim != 3 or rgb.shape[2] < 3:
        raise LiftError(f"rgb has shape {rgb.shape}, expected ({h}, {w}, 3) like the depth map")
    for name, arr in (("instance", instance), ("semantic", semantic)):
        if arr is not None and np.asarray(arr).shape != (h, w):
            raise LiftError(f"{name} map has shape {np.asarray(arr).shape}, expected ({h}, {w})")
    if stride < 1:
        raise LiftError(f"stride must be >= 1, got {stride}")

    flat = depth.reshape(-1).astype(np.float64)
    ok = np.isfinite(flat) & (flat > min_depth) & (flat <= max_depth)
    if stride > 1:
        grid = np.zeros((h, w), dtype=bool)
        grid[::stride, ::stride] = True
        ok &= grid.reshape(-1)
        considered = int(grid.sum())
    else:
        considered = h * w
    pixels = np.flatnonzero(ok)
    xyz = backproject(depth, K, world_from_camera, pixels)
    return _gather(rgb, xyz, pixels, instance, semantic, voxel_size, considered - int(ok.sum()))


def lift_points(
    rgb: np.ndarray,
    points: np.ndarray,
    valid: np.ndarray,
    instance: np.ndarray | None = None,
    semantic: np.ndarray | None = None,
    voxel_size: float | None = None,
) -> LiftedFrame:
    """Like :func:`lift_rgbd` where each pixel's 3-D point is already known (``points`` (H, W, 3), ``valid``
    (H, W)), as PSG4D-GTA's NDC depth and projection matrices give it."""
    points = np.asarray(points)
    h, w = points.shape[:2]
    if points.shape != (h, w, 3) or np.asarray(valid).shape != (h, w) or np.asarray(rgb).shape[:2] != (h, w):
        raise LiftError(f"points {points.shape}, valid {np.shape(valid)} and rgb {np.shape(rgb)} do not agree")
    ok = np.asarray(valid, bool).reshape(-1)
    pixels = np.flatnonzero(ok)
    xyz = points.reshape(-1, 3)[pixels].astype(np.float64)
    return _gather(np.asarray(rgb), xyz, pixels, instance, semantic, voxel_size, h * w - int(ok.sum()))


def _gather(rgb, xyz, pixels, instance, semantic, voxel_size, dropped) -> LiftedFrame:
    """Colours and labels of the kept pixels, then the optional voxel downsampling."""
    colors = rgb.reshape(-1, rgb.shape[2])[pixels, :3]
    colors = colors.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else colors.astype(np.float32)
    inst = None if instance is None else np.asarray(instance).reshape(-1)[pixels].astype(np.int64)
    sem = None if semantic is None else np.asarray(semantic).reshape(-1)[pixels].astype(np.int64)
    if voxel_size:
        keep = voxel_downsample(xyz, voxel_size)
        xyz, colors, pixels = xyz[keep], colors[keep], pixels[keep]
        inst = None if inst is None else inst[keep]
        sem = None if sem is None else sem[keep]
    return LiftedFrame(
        xyz=xyz.astype(np.float32),
        rgb=colors,
        pixel=pixels.astype(np.int64),
        instance=inst,
        semantic=sem,
        dropped_invalid=dropped,
    )
