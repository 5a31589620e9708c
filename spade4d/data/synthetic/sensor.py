"""A simulated RGB-D camera: Open3D raycasting of a scene's posed meshes.

Camera axes follow OpenCV (x right, y down, z forward). Rays are built with a camera-space direction whose z
component is 1, so the hit distance Open3D returns (in units of the direction's length) *is* the z-depth.

Noise model (``noise`` > 0): axial depth noise with the standard deviation Nguyen et al. measured for the
Kinect v1, sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2 metres ("Modeling Kinect Sensor Noise for Improved 3D
Reconstruction and Tracking", 3DIMPVT 2012), scaled by ``noise``; and a dropout of ``0.02 * noise`` of the
returns. ``noise = 0`` gives exact depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from spade4d.data.synthetic.world import Scene
from spade4d.geometry import intrinsics, look_at  # noqa: F401 - part of this module's interface

LIGHT = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])


@dataclass
class RGBDFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, 0 where nothing was hit
    instance: np.ndarray  # (H, W) int32 actor oid, 0 where nothing was hit
    K: np.ndarray  # (3, 3)
    world_from_camera: np.ndarray  # (4, 4)


def render_rgbd(
    scene: Scene,
    t: int,
    width: int,
    height: int,
    fov_deg: float = 65.0,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
    pose: np.ndarray | None = None,
) -> RGBDFrame:
    """Raycast frame ``t`` of ``scene`` from its camera (or from ``pose``)."""
    rng = rng or np.random.default_rng(0)
    K = intrinsics(width, height, fov_deg)
    pose = look_at(scene.eye[t], scene.target[t]) if pose is None else pose
    rs = o3d.t.geometry.RaycastingScene()
    colors, offsets, oids = [], [0], []
    for a in scene.actors:
        m = a.posed(t)
        rs.add_triangles(o3d.core.Tensor(m.vertices.astype(np.float32)), o3d.core.Tensor(m.triangles.astype(np.uint32)))
        colors.append(m.colors)
        offsets.append(offsets[-1] + len(m.triangles))
        oids.append(a.oid)
    colors_all = np.concatenate(colors)
    offsets_arr = np.asarray(offsets[:-1])
    oids_arr = np.asarray(oids, dtype=np.int32)

    u, v = np.meshgrid(np.arange(width), np.arange(height))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, dtype=np.float64)], -1)
    d_world = d_cam @ pose[:3, :3].T  # (H, W, 3)
    rays = np.concatenate([np.broadcast_to(pose[:3, 3], d_world.shape), d_world], -1).astype(np.float32)
    ans = rs.cast_rays(o3d.core.Tensor(rays))
    t_hit = ans["t_hit"].numpy()
    gid = ans["geometry_ids"].numpy().astype(np.int64)
    prim = ans["primitive_ids"].numpy().astype(np.int64)
    normals = ans["primitive_normals"].numpy().astype(np.float64)
    hit = np.isfinite(t_hit) & (gid < len(oids))

    depth = np.where(hit, t_hit, 0.0).astype(np.float32)
    instance = np.zeros((height, width), dtype=np.int32)
    instance[hit] = oids_arr[gid[hit]]

    base = np.zeros((height, width, 3), dtype=np.float64)
    base[hit] = colors_all[offsets_arr[gid[hit]] + prim[hit]]
    n = normals
    flip = np.sum(n * d_world, -1) > 0  # make normals face the camera
    n[flip] *= -1
    lambert = np.clip(n @ LIGHT, 0.0, 1.0)
    shade = 0.5 + 0.5 * lambert
    texture = 1.0 + rng.normal(0.0, 0.025, size=(height, width))
    rgb = base * (shade * texture)[..., None]
    sky = np.stack([0.62 + 0.25 * (v / height), 0.75 + 0.15 * (v / height), np.full(v.shape, 0.95)], -1)
    rgb[~hit] = sky[~hit]
    rgb8 = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    if noise > 0:
        z = depth[hit].astype(np.float64)
        depth[hit] = (z + rng.normal(0.0, 1.0, z.shape) * noise * (0.0012 + 0.0019 * (z - 0.4) ** 2)).astype(np.float32)
        drop = hit & (rng.random((height, width)) < 0.02 * noise)
        depth[drop] = 0.0
    return RGBDFrame(rgb=rgb8, depth=depth, instance=instance, K=K, world_from_camera=pose)
