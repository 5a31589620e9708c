"""The RGB frames and cameras behind point-cloud sequences, for lifting 2D features onto points.

Layout (the PSG4D-GTA one, docs/formats.md): ``<root>/images/<video_id>/%06d.<ext>`` and
``<root>/camera/<video_id>/%06d.yaml`` with ``K`` (principal point relative to the image centre) and ``Rt``
(world -> camera, OpenGL axes). The synthetic world writes exactly this beside its point clouds
(``<root>/psg4d_gta``). A point's pixel is found by projecting it with its frame's camera.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spade4d.data.files import DatasetError, load_image
from spade4d.data.lift import project


def _yaml_matrix(cam: dict, key: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    try:
        m = np.asarray(cam[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{path}: camera file lacks a numeric {key!r} ({shape[0]}x{shape[1]})") from None
    if m.shape != shape or not np.isfinite(m).all():
        raise DatasetError(f"{path}: {key} has shape {m.shape} or non-finite values, expected a finite {shape}")
    return m


GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes (y up, looking down -z) <-> OpenCV (y down, +z)


def load_camera_yaml(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(K in pixels, 4x4 world_from_camera in OpenCV axes) of a camera file.

    PSG4D-GTA / SAIL-VOS 3D files hold ``K`` (3x3, principal point relative to the image centre) and ``Rt`` (3x4
    world -> camera in OpenGL axes). Files of spade4d's earlier synthetic world (``fx fy cx cy`` and an OpenCV
    ``world_from_camera``) are still read."""
    import yaml

    if not path.is_file():
        raise DatasetError(f"{path}: camera file not found")
    try:
        cam = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    if not isinstance(cam, dict):
        raise DatasetError(f"{path}: camera file is not a YAML mapping")
    if "K" in cam or "Rt" in cam:
        K = _yaml_matrix(cam, "K", (3, 3), path).copy()
        K[0, 2] += width / 2.0
        K[1, 2] += height / 2.0
        camera_from_world = np.eye(4)
        camera_from_world[:3] = _yaml_matrix(cam, "Rt", (3, 4), path)
        try:
            pose = np.linalg.inv(GL_TO_CV @ camera_from_world)
        except np.linalg.LinAlgError:
            raise DatasetError(f"{path}: Rt is singular") from None
        return K, pose
    try:
        K = np.array([[cam["fx"], 0.0, cam["cx"]], [0.0, cam["fy"], cam["cy"]], [0.0, 0.0, 1.0]], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{path}: camera file lacks K and Rt (PSG4D-GTA camera)") from None
    pose = cam.get("world_from_camera")
    return K, None if pose is None else _yaml_matrix(cam, "world_from_camera", (4, 4), path)


class CameraFrames:
    def __init__(self, root: str | os.PathLike, image_ext: str = "bmp"):
        self.root = Path(root)
        self.image_ext = image_ext
        if not (self.root / "images").is_dir() or not (self.root / "camera").is_dir():
            raise DatasetError(f"{self.root}: no images/ and camera/ folders (the RGB frames to lift from)")

    def has(self, video_id: str) -> bool:
        return (self.root / "images" / video_id).is_dir()

    def get(self, video_id: str, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(rgb (H, W, 3) uint8, K (3, 3), world_from_camera (4, 4) or None) of frame ``t``."""
        name = f"{t:06d}"
        rgb = load_image(self.root / "images" / video_id / f"{name}.{self.image_ext}", "RGB")
        K, pose = load_camera_yaml(self.root / "camera" / video_id / f"{name}.yaml", rgb.shape[1], rgb.shape[0])
        return rgb, K, pose


def point_uv(xyz: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray | None, height: int, width: int):
    """(N, 2) float32 positions of points in their image in ``grid_sample`` units (align_corners=False: -1 and
    1 are the outer pixel edges); NaN for points behind the camera."""
    uvz = project(xyz, K, world_from_camera)
    u = (2 * uvz[:, 0] + 1) / width - 1
    v = (2 * uvz[:, 1] + 1) / height - 1
    out = np.stack([u, v], 1).astype(np.float32)
    out[~(uvz[:, 2] > 0)] = np.nan
    return out
