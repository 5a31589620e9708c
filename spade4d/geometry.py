"""Camera geometry shared by the data, the synthetic world and the renderers: pinhole intrinsics and look-at poses
(OpenCV axes: x right, y down, z forward)."""

from __future__ import annotations

import numpy as np


def intrinsics(width: int, height: int, fov_deg: float = 65.0) -> np.ndarray:
    """Pinhole K for a horizontal field of view, principal point at the image centre."""
    f = width / (2.0 * np.tan(np.radians(fov_deg) / 2.0))
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 world_from_camera pose of a camera at ``eye`` looking at ``target`` (OpenCV axes)."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T
