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

from spade4d.data.lift import project
from spade4d.data.psg4d import DatasetError, _load_camera_yaml, _load_image


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
        rgb = _load_image(self.root / "images" / video_id / f"{name}.{self.image_ext}", "RGB")
        K, pose = _load_camera_yaml(self.root / "camera" / video_id / f"{name}.yaml", rgb.shape[1], rgb.shape[0])
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
