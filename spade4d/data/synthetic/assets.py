"""Object meshes of the synthetic world, composed from Open3D primitives.

Each builder returns a :class:`Mesh` in the object's local frame: origin on the ground under the object's
centre, +x its front, +z up, metres. Articulated objects (person, dog) take a pose argument so the script can
animate them (walking legs, sitting, riding, an arm held out to carry something).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

Color = tuple[float, float, float]


@dataclass
class Mesh:
    """Triangle soup with one colour per triangle."""

    vertices: np.ndarray  # (V, 3) float64
    triangles: np.ndarray  # (F, 3) int32
    colors: np.ndarray  # (F, 3) float32

    def transformed(self, pos: np.ndarray, yaw: float) -> Mesh:
        c, s = np.cos(yaw), np.sin(yaw)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return Mesh(self.vertices @ R.T + np.asarray(pos, dtype=np.float64), self.triangles, self.colors)


class MeshBuilder:
    """Accumulates coloured primitives into one :class:`Mesh`."""

    def __init__(self) -> None:
        self._v: list[np.ndarray] = []
        self._f: list[np.ndarray] = []
        self._c: list[np.ndarray] = []
        self._n = 0

    def add(self, mesh: o3d.geometry.TriangleMesh, color: Color) -> MeshBuilder:
        v = np.asarray(mesh.vertices)
        f = np.asarray(mesh.triangles)
        self._v.append(v)
        self._f.append(f + self._n)
        self._c.append(np.tile(np.asarray(color, dtype=np.float32), (len(f), 1)))
        self._n += len(v)
        return self

    def box(self, size: tuple[float, float, float], center: tuple[float, float, float], color: Color) -> MeshBuilder:
        sx, sy, sz = size
        m = o3d.geometry.TriangleMesh.create_box(sx, sy, sz)
        m.translate(np.asarray(center) - np.array([sx, sy, sz]) / 2)
        return self.add(m, color)

    def cylinder(
        self, radius: float, height: float, center: tuple[float, float, float], color: Color, axis: str = "z"
    ) -> MeshBuilder:
        m = o3d.geometry.TriangleMesh.create_cylinder(radius=radius, height=height, resolution=14, split=1)
        if axis != "z":
            R = _axis_rotation(axis)
            m.rotate(R, center=(0, 0, 0))
        m.translate(center)
        return self.add(m, color)

    def sphere(self, radius: float, center: tuple[float, float, float], color: Color) -> MeshBuilder:
        m = o3d.geometry.TriangleMesh.create_sphere(radius=radius, resolution=10)
        m.translate(center)
        return self.add(m, color)

    def cone(self, radius: float, height: float, base: tuple[float, float, float], color: Color) -> MeshBuilder:
        m = o3d.geometry.TriangleMesh.create_cone(radius=radius, height=height, resolution=14)
        m.translate(base)
        return self.add(m, color)

    def torus(
        self, radius: float, tube: float, center: tuple[float, float, float], color: Color, axis: str = "y"
    ) -> MeshBuilder:
        m = o3d.geometry.TriangleMesh.create_torus(
            torus_radius=radius, tube_radius=tube, radial_resolution=18, tubular_resolution=6
        )
        if axis != "z":
            m.rotate(_axis_rotation(axis), center=(0, 0, 0))
        m.translate(center)
        return self.add(m, color)

    def build(self) -> Mesh:
        return Mesh(
            np.concatenate(self._v).astype(np.float64),
            np.concatenate(self._f).astype(np.int32),
            np.concatenate(self._c).astype(np.float32),
        )


def _axis_rotation(axis: str) -> np.ndarray:
    """Rotation taking +z to the given axis."""
    if axis == "x":
        return np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    if axis == "y":
        return np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    return np.eye(3)


def _shade(color: Color, k: float) -> Color:
    return tuple(float(np.clip(c * k, 0.0, 1.0)) for c in color)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------------------------
# agents
# ------------------------------------------------------------------------------------------------------------------

SKIN = (0.87, 0.68, 0.55)


def person(
    pose: str = "stand",
    phase: float = 0.0,
    arm: str = "down",
    shirt: Color = (0.2, 0.4, 0.8),
    trousers: Color = (0.15, 0.15, 0.25),
    height: float = 1.75,
) -> Mesh:
    """A person. ``pose``: stand | walk | sit | ride; ``phase`` animates walking legs; ``arm``: down | hold | push.

    Standing, the feet are at z = 0. Sitting and riding, the pelvis is at the origin's xy and at the seat
    height 0.45 m (sit) or 0.85 m (ride), and the feet reach the ground (sit) or the pedals (ride).
    """
    s = height / 1.75
    b = MeshBuilder()
    if pose in ("stand", "walk"):
        swing = 0.25 * np.sin(phase) if pose == "walk" else 0.0
        for side, sgn in ((-0.1, 1.0), (0.1, -1.0)):
            # a leg as a slightly tilted box: shift the foot forward/back with the swing
            b.box((0.13, 0.13, 0.85 * s), (sgn * swing * 0.5, side * s, 0.425 * s), trousers)
        pelvis_z = 0.85 * s
    elif pose == "sit":
        pelvis_z = 0.45
        for side in (-0.1, 0.1):
            b.box((0.45, 0.14, 0.14), (0.22, side * s, pelvis_z + 0.02), trousers)  # thighs
            b.box((0.13, 0.13, pelvis_z), (0.42, side * s, pelvis_z / 2), trousers)  # shins to the floor
    elif pose == "ride":
        pelvis_z = 0.85
        for side, sgn in ((-0.12, 1.0), (0.12, -1.0)):
            b.box((0.35, 0.13, 0.13), (0.15, side * s, pelvis_z - 0.05), trousers)
            b.box((0.12, 0.12, 0.45), (0.3 + 0.05 * sgn * np.sin(phase), side * s, pelvis_z - 0.3), trousers)
    else:
        raise ValueError(f"unknown person pose {pose!r}")
    torso_h = 0.6 * s
    lean = 0.12 if pose == "ride" else 0.0
    b.box((0.24, 0.42 * s, torso_h), (lean, 0.0, pelvis_z + torso_h / 2), shirt)
    b.sphere(0.11 * s, (lean + 0.02, 0.0, pelvis_z + torso_h + 0.14 * s), SKIN)
    shoulder_z = pelvis_z + torso_h - 0.05
    for side in (-0.27, 0.27):
        if arm == "hold" and side < 0 or arm == "push" or pose == "ride":
            reach = 0.45 if pose != "ride" else 0.5
            b.box((reach, 0.1, 0.1), (lean + reach / 2, side * s, shoulder_z - 0.12), shirt)
        else:
            b.box((0.1, 0.1, 0.62 * s), (0.0, side * s, shoulder_z - 0.31 * s), shirt)
    return b.build()


def person_hand(pose: str = "stand", height: float = 1.75) -> np.ndarray:
    """Local position of the right hand of :func:`person` with ``arm='hold'`` (where a carried thing sits)."""
    s = height / 1.75
    pelvis_z = 0.85 * s if pose in ("stand", "walk") else 0.45
    return np.array([0.42, -0.27 * s, pelvis_z + 0.6 * s - 0.17 - 0.05])


def dog(pose: str = "stand", phase: float = 0.0, fur: Color = (0.55, 0.38, 0.2)) -> Mesh:
    b = MeshBuilder()
    swing = 0.06 * np.sin(phase) if pose == "run" else 0.0
    for dx, dy, sgn in ((0.22, 0.08, 1), (0.22, -0.08, -1), (-0.22, 0.08, -1), (-0.22, -0.08, 1)):
        b.box((0.07, 0.07, 0.3), (dx + sgn * swing, dy, 0.15), _shade(fur, 0.8))
    b.box((0.62, 0.22, 0.22), (0.0, 0.0, 0.4), fur)
    b.box((0.2, 0.16, 0.17), (0.38, 0.0, 0.56), fur)
    b.box((0.1, 0.09, 0.08), (0.51, 0.0, 0.52), _shade(fur, 0.6))
    b.box((0.05, 0.04, 0.08), (0.35, 0.06, 0.68), _shade(fur, 0.5))
    b.box((0.05, 0.04, 0.08), (0.35, -0.06, 0.68), _shade(fur, 0.5))
    b.box((0.22, 0.04, 0.04), (-0.38, 0.0, 0.52), fur)
    return b.build()


def horse(pose: str = "stand", phase: float = 0.0, coat: Color = (0.45, 0.3, 0.18)) -> Mesh:
    """A horse facing +x, 1.9 m to the top of its head; ``pose`` walk swings the legs with ``phase``."""
    b = MeshBuilder()
    swing = 0.1 * np.sin(phase) if pose == "walk" else 0.0
    for dx, dy, sgn in ((0.5, 0.17, 1), (0.5, -0.17, -1), (-0.5, 0.17, -1), (-0.5, -0.17, 1)):
        b.box((0.11, 0.11, 0.85), (dx + sgn * swing, dy, 0.425), _shade(coat, 0.75))
    b.box((1.35, 0.48, 0.5), (0.0, 0.0, 1.1), coat)
    b.box((0.28, 0.22, 0.62), (0.7, 0.0, 1.48), coat)  # neck
    b.box((0.5, 0.2, 0.22), (0.93, 0.0, 1.78), _shade(coat, 0.9))  # head
    b.box((0.06, 0.05, 0.12), (0.78, 0.07, 1.94), _shade(coat, 0.6))  # ears
    b.box((0.06, 0.05, 0.12), (0.78, -0.07, 1.94), _shade(coat, 0.6))
    b.box((0.08, 0.08, 0.55), (-0.72, 0.0, 0.95), _shade(coat, 0.4))  # tail
    return b.build()


# ------------------------------------------------------------------------------------------------------------------
# furniture and small things
# ------------------------------------------------------------------------------------------------------------------


def chair(color: Color = (0.55, 0.35, 0.2)) -> Mesh:
    b = MeshBuilder()
    for dx in (-0.19, 0.19):
        for dy in (-0.19, 0.19):
            b.box((0.04, 0.04, 0.42), (dx, dy, 0.21), _shade(color, 0.8))
    b.box((0.46, 0.46, 0.04), (0.0, 0.0, 0.43), color)
    b.box((0.04, 0.46, 0.48), (-0.21, 0.0, 0.69), color)
    return b.build()


def table(color: Color = (0.6, 0.45, 0.3), size: tuple[float, float] = (1.2, 0.8), height: float = 0.75) -> Mesh:
    b = MeshBuilder()
    sx, sy = size
    for dx in (-sx / 2 + 0.05, sx / 2 - 0.05):
        for dy in (-sy / 2 + 0.05, sy / 2 - 0.05):
            b.box((0.06, 0.06, height - 0.04), (dx, dy, (height - 0.04) / 2), _shade(color, 0.75))
    b.box((sx, sy, 0.04), (0.0, 0.0, height - 0.02), color)
    return b.build()


def cup(color: Color = (0.9, 0.9, 0.85)) -> Mesh:
    b = MeshBuilder()
    b.cylinder(0.045, 0.11, (0.0, 0.0, 0.055), color)
    b.torus(0.03, 0.008, (0.05, 0.0, 0.06), color, axis="y")
    return b.build()


def bottle(color: Color = (0.2, 0.6, 0.3)) -> Mesh:
    b = MeshBuilder()
    b.cylinder(0.04, 0.2, (0.0, 0.0, 0.1), color)
    b.cylinder(0.015, 0.08, (0.0, 0.0, 0.24), _shade(color, 0.7))
    return b.build()


def ball(color: Color = (0.9, 0.2, 0.15)) -> Mesh:
    return MeshBuilder().sphere(0.11, (0.0, 0.0, 0.11), color).build()


def laptop(color: Color = (0.3, 0.3, 0.33)) -> Mesh:
    b = MeshBuilder()
    b.box((0.26, 0.34, 0.02), (0.0, 0.0, 0.01), color)
    screen = o3d.geometry.TriangleMesh.create_box(0.015, 0.34, 0.24)
    screen.translate((-0.0075, -0.17, 0.0))
    screen.rotate(o3d.geometry.get_rotation_matrix_from_xyz((0.0, -0.3, 0.0)), center=(0, 0, 0))
    screen.translate((-0.13, 0.0, 0.02))
    b.add(screen, _shade(color, 0.6))
    return b.build()


def box(color: Color = (0.7, 0.55, 0.35), size: float = 0.45) -> Mesh:
    return MeshBuilder().box((size, size, size), (0.0, 0.0, size / 2), color).build()


def cart(color: Color = (0.3, 0.5, 0.7)) -> Mesh:
    """A shopping cart; its handle is at -x, so a person pushing it stands behind it, facing +x."""
    b = MeshBuilder()
    b.box((0.7, 0.5, 0.4), (0.0, 0.0, 0.55), color)
    b.box((0.04, 0.5, 0.04), (-0.45, 0.0, 0.95), _shade(color, 0.5))
    for dy in (-0.24, 0.24):
        b.box((0.2, 0.03, 0.03), (-0.36, dy, 0.88), _shade(color, 0.5))
    for dx in (-0.28, 0.28):
        for dy in (-0.2, 0.2):
            b.cylinder(0.07, 0.04, (dx, dy, 0.07), (0.1, 0.1, 0.1), axis="y")
        b.box((0.04, 0.04, 0.3), (dx, 0.0, 0.2), _shade(color, 0.5))
    return b.build()


def suitcase(color: Color = (0.2, 0.25, 0.35)) -> Mesh:
    """A wheeled suitcase, upright, narrow side forward (+x); its pulled-out handle rises at +x to 0.95 m."""
    b = MeshBuilder()
    b.box((0.26, 0.42, 0.6), (0.0, 0.0, 0.36), color)
    for dy in (-0.15, 0.15):
        b.box((0.03, 0.03, 0.3), (0.11, dy, 0.8), (0.15, 0.15, 0.15))
        b.cylinder(0.03, 0.03, (-0.08, dy, 0.03), (0.1, 0.1, 0.1), axis="y")
    b.box((0.04, 0.33, 0.04), (0.11, 0.0, 0.95), (0.15, 0.15, 0.15))
    return b.build()


def sofa(color: Color = (0.45, 0.25, 0.35)) -> Mesh:
    b = MeshBuilder()
    b.box((0.8, 1.8, 0.42), (0.0, 0.0, 0.21), color)
    b.box((0.2, 1.8, 0.45), (-0.3, 0.0, 0.645), _shade(color, 0.85))
    for dy in (-0.85, 0.85):
        b.box((0.8, 0.15, 0.2), (0.0, dy, 0.52), _shade(color, 0.9))
    return b.build()


def lamp(color: Color = (0.95, 0.85, 0.5), cord: float = 0.8) -> Mesh:
    """A hanging lamp: its shade's bottom at z = 0 of the local frame (place it at the hanging height)."""
    b = MeshBuilder()
    b.cone(0.22, 0.22, (0.0, 0.0, 0.0), color)
    b.cylinder(0.01, cord, (0.0, 0.0, 0.22 + cord / 2), (0.2, 0.2, 0.2))
    return b.build()


def bench(color: Color = (0.5, 0.35, 0.25)) -> Mesh:
    b = MeshBuilder()
    for dx in (-0.65, 0.65):
        for dy in (-0.17, 0.17):
            b.box((0.06, 0.06, 0.43), (dx, dy, 0.215), (0.2, 0.2, 0.2))
    b.box((1.5, 0.42, 0.05), (0.0, 0.0, 0.455), color)
    b.box((1.5, 0.05, 0.35), (0.0, -0.2, 0.7), color)
    return b.build()


def tree(trunk: Color = (0.4, 0.28, 0.15), crown: Color = (0.2, 0.5, 0.2), height: float = 3.0) -> Mesh:
    b = MeshBuilder()
    b.cylinder(0.12, height * 0.55, (0.0, 0.0, height * 0.275), trunk)
    b.sphere(height * 0.25, (0.0, 0.0, height * 0.72), crown)
    return b.build()


def tv(color: Color = (0.08, 0.08, 0.1)) -> Mesh:
    """A television facing +x, standing on its foot at z = 0."""
    b = MeshBuilder()
    b.box((0.2, 0.3, 0.03), (0.0, 0.0, 0.015), (0.2, 0.2, 0.2))
    b.box((0.05, 0.05, 0.12), (0.0, 0.0, 0.09), (0.2, 0.2, 0.2))
    b.box((0.06, 1.0, 0.6), (0.0, 0.0, 0.45), color)
    b.box((0.01, 0.92, 0.52), (0.031, 0.0, 0.45), (0.15, 0.25, 0.45))
    return b.build()


def cabinet(color: Color = (0.75, 0.72, 0.65)) -> Mesh:
    b = MeshBuilder()
    b.box((0.45, 1.4, 0.55), (0.0, 0.0, 0.275), color)
    for dy in (-0.35, 0.35):
        b.box((0.01, 0.6, 0.45), (0.226, dy, 0.275), _shade(color, 0.85))
    return b.build()


def plant(pot: Color = (0.65, 0.35, 0.25), leaves: Color = (0.25, 0.6, 0.25)) -> Mesh:
    b = MeshBuilder()
    b.cylinder(0.14, 0.3, (0.0, 0.0, 0.15), pot)
    b.sphere(0.3, (0.0, 0.0, 0.55), leaves)
    return b.build()


def book(color: Color = (0.7, 0.2, 0.25)) -> Mesh:
    return MeshBuilder().box((0.22, 0.16, 0.04), (0.0, 0.0, 0.02), color).build()


def car(color: Color = (0.75, 0.1, 0.1)) -> Mesh:
    """A car facing +x."""
    b = MeshBuilder()
    b.box((4.0, 1.7, 0.65), (0.0, 0.0, 0.62), color)
    b.box((2.1, 1.5, 0.5), (-0.2, 0.0, 1.19), _shade(color, 0.9))
    b.box((0.02, 1.3, 0.38), (0.86, 0.0, 1.19), (0.55, 0.7, 0.85))  # windscreen
    for dx in (-1.3, 1.3):
        for dy in (-0.8, 0.8):
            b.cylinder(0.33, 0.2, (dx, dy, 0.33), (0.08, 0.08, 0.08), axis="y")
    return b.build()


def bicycle(color: Color = (0.1, 0.6, 0.7), phase: float = 0.0) -> Mesh:
    """A bicycle facing +x; the saddle is at (0, 0, 0.85) where a riding person's pelvis sits."""
    b = MeshBuilder()
    for dx in (-0.5, 0.5):
        b.torus(0.33, 0.025, (dx, 0.0, 0.35), (0.08, 0.08, 0.08), axis="y")
    b.box((1.0, 0.04, 0.04), (0.0, 0.0, 0.55), color)
    b.box((0.04, 0.04, 0.45), (-0.05, 0.0, 0.6), color)
    b.box((0.04, 0.04, 0.5), (0.45, 0.0, 0.65), color)
    b.box((0.22, 0.1, 0.04), (0.0, 0.0, 0.83), (0.1, 0.1, 0.1))  # saddle
    b.box((0.04, 0.5, 0.04), (0.45, 0.0, 0.9), (0.1, 0.1, 0.1))  # handlebar
    return b.build()


# ------------------------------------------------------------------------------------------------------------------
# stuff
# ------------------------------------------------------------------------------------------------------------------


def slab(
    size: tuple[float, float], color: Color, center_xy: tuple[float, float] = (0.0, 0.0), thickness: float = 0.05
) -> Mesh:
    """A ground slab whose top face is at z = 0."""
    return MeshBuilder().box((size[0], size[1], thickness), (center_xy[0], center_xy[1], -thickness / 2), color).build()


def walls(room: tuple[float, float], color: Color, height: float = 2.6) -> Mesh:
    """Back (y = D) and left (x = 0) walls of a room spanning [0, W] x [0, D]."""
    w, d = room
    b = MeshBuilder()
    b.box((w, 0.1, height), (w / 2, d + 0.05, height / 2), color)
    b.box((0.1, d, height), (-0.05, d / 2, height / 2), _shade(color, 0.92))
    return b.build()
