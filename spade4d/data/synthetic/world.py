"""Scripted scenes of the synthetic world.

A :class:`Scene` is a set of :class:`Actor` s, each with a pose per frame (position of its local origin, yaw,
an articulation such as ``walk``/``sit``, and what it is attached to), plus a camera path. Templates build
scenes from a random generator: the layout varies, the behaviour follows a script (a person walks to a chair
and sits down; picks up a cup, carries it and puts it down; a dog chases a rolling ball; ...). Relations are
not written here: :mod:`spade4d.data.synthetic.relations` derives them from the resulting geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spade4d.data.synthetic import assets
from spade4d.data.synthetic.assets import Mesh

THING_CLASSES = [
    "person", "chair", "table", "cup", "bottle", "ball", "dog", "car", "bicycle", "laptop",
    "box", "cart", "sofa", "lamp", "bench", "tree", "tv", "cabinet", "plant", "book",
]  # fmt: skip
STUFF_CLASSES = ["floor", "wall", "grass", "road"]
PREDICATES = [
    "on", "beside", "in front of", "over", "under",
    "sitting on", "standing on", "walking on", "holding", "carrying",
    "looking at", "riding", "chasing", "pushing", "driving on",
]  # fmt: skip

# Templates whose classes/predicates are held out of the 4D training split (the out-of-vocabulary case).
OOV_TEMPLATES = ("ride", "push")
OOV_CLASSES = ("bicycle", "cart")
OOV_PREDICATES = ("riding", "pushing")

# The scripts every preset plays. Scripts beyond them bring class and predicate names of their own; a dataset
# holds them (and their names) only when its preset lists them, so the datasets of the other presets keep the
# vocabulary above. All of them are out-of-vocabulary scripts: (script, its new thing classes, its new predicates)
BASE_SCRIPTS = ("sit", "carry", "tv", "dog_ball", "drive", "ride", "push")
EXTRA_SCRIPTS = {
    "luggage": (("suitcase",), ("pulling",)),
    "horse": (("horse",), ("leading",)),
}
OOV_SCRIPTS = {
    "ride": (("bicycle",), ("riding",)),
    "push": (("cart",), ("pushing",)),
    **EXTRA_SCRIPTS,
}


def vocabulary(scripts) -> tuple[list[str], list[str], list[str]]:
    """(thing classes, stuff classes, predicates) of a dataset playing ``scripts``: the base lists, then the names
    of the extra scripts in the order they are listed."""
    things, predicates = list(THING_CLASSES), list(PREDICATES)
    for name in scripts:
        classes, preds = EXTRA_SCRIPTS.get(name, ((), ()))
        things += [c for c in classes if c not in things]
        predicates += [p for p in preds if p not in predicates]
    return things, list(STUFF_CLASSES), predicates


def unseen(scripts) -> tuple[list[str], list[str], list[str]]:
    """(scripts, classes, predicates) held out of 4D training among ``scripts``."""
    held = [s for s in scripts if s in OOV_SCRIPTS]
    return held, [c for s in held for c in OOV_SCRIPTS[s][0]], [p for s in held for p in OOV_SCRIPTS[s][1]]


SEQUENCE_SECONDS = 8.0  # every script lasts this long, whatever the frame count


@dataclass
class Actor:
    oid: int
    label: str
    is_thing: bool
    pos: np.ndarray  # (T, 3) world position of the local origin
    yaw: np.ndarray  # (T,) radians, local +x is the front
    mesh_at: Callable[[int], Mesh]  # local mesh on frame t
    pose: list[str]  # (T,) static | stand | walk | sit | ride | run | drive
    attached_to: list[int | None]  # (T,) oid of the actor carrying / carried by this one
    seat: list[int | None]  # (T,) oid of the seat a person sits on
    meta: dict = field(default_factory=dict)
    _bounds: dict = field(default_factory=dict, repr=False)

    def posed(self, t: int) -> Mesh:
        return self.mesh_at(t).transformed(self.pos[t], float(self.yaw[t]))

    def local_bounds(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Min and max corner of the local mesh on frame t (cached per pose)."""
        key = self.pose[t] if self.label in ("person", "dog") else ""
        if key not in self._bounds:
            v = self.mesh_at(t).vertices
            self._bounds[key] = (v.min(0), v.max(0))
        return self._bounds[key]


@dataclass
class Scene:
    template: str
    indoor: bool
    num_frames: int
    actors: list[Actor]
    eye: np.ndarray  # (T, 3) camera positions
    target: np.ndarray  # (T, 3) points the camera looks at

    @property
    def dt(self) -> float:
        return SEQUENCE_SECONDS / max(self.num_frames - 1, 1)

    def actor(self, oid: int) -> Actor:
        return next(a for a in self.actors if a.oid == oid)

    def velocity(self, a: Actor) -> np.ndarray:
        """(T, 3) velocity in m/s by central differences."""
        if self.num_frames < 2:
            return np.zeros_like(a.pos)
        return np.gradient(a.pos, self.dt, axis=0)


# ------------------------------------------------------------------------------------------------------------------
# script helpers
# ------------------------------------------------------------------------------------------------------------------


def keyframes(T: int, keys: list[tuple[float, tuple[float, ...]]]) -> np.ndarray:
    """Piecewise-linear track through ``(fraction of the sequence, value)`` keys, sampled at T frames."""
    fr = np.array([k for k, _ in keys], dtype=np.float64)
    vals = np.array([v for _, v in keys], dtype=np.float64)
    s = np.linspace(0.0, 1.0, T)
    return np.stack([np.interp(s, fr, vals[:, d]) for d in range(vals.shape[1])], axis=1)


def heading(pos: np.ndarray, initial: float, min_step: float = 1e-4) -> np.ndarray:
    """Yaw that follows the direction of motion, kept while the actor stands still."""
    yaw = np.empty(len(pos))
    cur = initial
    for t in range(len(pos)):
        nxt = pos[min(t + 1, len(pos) - 1)] - pos[max(t - 1, 0)]
        if np.hypot(nxt[0], nxt[1]) > min_step:
            cur = float(np.arctan2(nxt[1], nxt[0]))
        yaw[t] = cur
    return yaw


def rot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _color(rng: np.random.Generator, base: tuple[float, float, float], jitter: float = 0.08) -> tuple:
    return tuple(float(np.clip(c + rng.uniform(-jitter, jitter), 0, 1)) for c in base)


SMALL_THINGS: dict[str, Callable[[], Mesh]] = {
    "bottle": assets.bottle, "cup": assets.cup, "book": assets.book, "laptop": assets.laptop,
}  # fmt: skip

SHIRTS = [(0.2, 0.4, 0.8), (0.8, 0.3, 0.2), (0.25, 0.6, 0.3), (0.85, 0.7, 0.2), (0.55, 0.3, 0.6)]


class _Builder:
    """Collects actors of one scene and hands out object ids (stuff first, then things)."""

    def __init__(self, T: int, rng: np.random.Generator):
        self.T, self.rng, self.actors = T, rng, []

    def static(
        self, label: str, mesh: Mesh, pos: tuple[float, float, float], yaw: float = 0.0, is_thing: bool = True
    ) -> Actor:
        T = self.T
        a = Actor(
            oid=len(self.actors) + 1,
            label=label,
            is_thing=is_thing,
            pos=np.tile(np.asarray(pos, dtype=np.float64), (T, 1)),
            yaw=np.full(T, float(yaw)),
            mesh_at=lambda t, m=mesh: m,
            pose=["static"] * T,
            attached_to=[None] * T,
            seat=[None] * T,
        )
        self.actors.append(a)
        return a

    def person(self, pos: np.ndarray, yaw: np.ndarray, pose: list[str], arm: list[str] | None = None) -> Actor:
        rng, T = self.rng, self.T
        shirt = _color(rng, SHIRTS[int(rng.integers(len(SHIRTS)))])
        trousers = _color(rng, (0.15, 0.15, 0.28))
        height = float(rng.uniform(1.62, 1.85))
        arm = arm or ["down"] * T
        steps = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pos[:, :2], axis=0), axis=1))])
        phase = steps / 0.35 * np.pi  # a stride every 0.7 m
        cache: dict = {}

        def mesh_at(t: int) -> Mesh:
            key = (pose[t], arm[t], round(float(np.sin(phase[t])), 1) if pose[t] in ("walk", "ride") else 0)
            if key not in cache:
                cache[key] = assets.person(pose[t], float(np.arcsin(key[2])), arm[t], shirt, trousers, height)
            return cache[key]

        a = Actor(len(self.actors) + 1, "person", True, pos, yaw, mesh_at, list(pose), [None] * T, [None] * T)
        a.meta["height"] = height
        self.actors.append(a)
        return a

    def mover(
        self, label: str, mesh_fn: Callable[..., Mesh], pos: np.ndarray, yaw: np.ndarray, pose: list[str], **kw
    ) -> Actor:
        cache: dict = {}

        def mesh_at(t: int) -> Mesh:
            if label in ("dog", "horse"):
                key = (pose[t], round(float(np.sin(t * 1.7)), 1) if pose[t] in ("run", "walk") else 0)
                if key not in cache:
                    cache[key] = mesh_fn(pose=key[0], phase=float(np.arcsin(key[1])), **kw)
                return cache[key]
            if "m" not in cache:
                cache["m"] = mesh_fn(**kw)
            return cache["m"]

        T = self.T
        a = Actor(len(self.actors) + 1, label, True, pos, yaw, mesh_at, list(pose), [None] * T, [None] * T)
        self.actors.append(a)
        return a


def _camera(
    T: int, rng: np.random.Generator, center: np.ndarray, radius: float, height: float, az_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A camera sweeping an arc around ``center`` (azimuth in degrees), looking slightly below the eye."""
    a0 = rng.uniform(*az_range)
    sweep = rng.uniform(20.0, 40.0) * rng.choice([-1.0, 1.0])
    az = np.radians(np.clip(a0 + np.linspace(0.0, sweep, T), *az_range))
    h = height + 0.15 * np.sin(np.linspace(0, np.pi, T))
    eye = np.stack([center[0] + radius * np.cos(az), center[1] + radius * np.sin(az), h], axis=1)
    target = np.tile(np.array([center[0], center[1], 0.6]), (T, 1))
    return eye, target


def _walk_pose(pos: np.ndarray, still: float = 1e-3) -> list[str]:
    speed = np.linalg.norm(np.gradient(pos[:, :2], axis=0), axis=1) if len(pos) > 1 else np.zeros(len(pos))
    return ["walk" if s > still else "stand" for s in speed]


# ------------------------------------------------------------------------------------------------------------------
# templates
# ------------------------------------------------------------------------------------------------------------------


def _room(b: _Builder, rng: np.random.Generator) -> tuple[float, float]:
    W, D = float(rng.uniform(5.0, 6.5)), float(rng.uniform(4.5, 5.5))
    b.static("floor", assets.slab((W, D), _color(rng, (0.62, 0.5, 0.36)), (W / 2, D / 2)), (0, 0, 0), is_thing=False)
    b.static("wall", assets.walls((W, D), _color(rng, (0.85, 0.82, 0.74), 0.05)), (0, 0, 0), is_thing=False)
    return W, D


def _indoor_camera(T, rng, W, D, focus):
    center = np.array([focus[0], focus[1]])
    return _camera(
        T,
        rng,
        center,
        radius=float(rng.uniform(3.0, 3.6)),
        height=float(rng.uniform(1.9, 2.3)),
        az_range=(-80.0, -15.0),
    )


def template_sit(T: int, rng: np.random.Generator) -> Scene:
    """A person walks to a chair at a table and sits down, facing a laptop; a lamp hangs over the table."""
    b = _Builder(T, rng)
    W, D = _room(b, rng)
    tx, ty = W * rng.uniform(0.45, 0.6), D * rng.uniform(0.5, 0.62)
    b.static("table", assets.table(_color(rng, (0.6, 0.45, 0.3))), (tx, ty, 0))
    chair = b.static("chair", assets.chair(_color(rng, (0.5, 0.32, 0.2))), (tx - 0.85, ty, 0), 0.0)
    b.static("laptop", assets.laptop(), (tx - 0.3, ty + rng.uniform(-0.15, 0.15), 0.75), np.pi)
    b.static("cup", assets.cup(_color(rng, (0.9, 0.9, 0.85))), (tx + 0.25, ty - 0.2, 0.75))
    if rng.random() < 0.6:
        b.static(
            "book", assets.book(_color(rng, (0.7, 0.2, 0.25), 0.2)), (tx + 0.3, ty + 0.2, 0.75), rng.uniform(0, np.pi)
        )
    b.static("lamp", assets.lamp(), (tx, ty, float(rng.uniform(1.65, 1.85))))
    b.static("plant", assets.plant(), (rng.uniform(0.4, 0.8), D - 0.45, 0))
    start = (W - 0.5, rng.uniform(0.5, 1.2))
    near = (tx - 0.85, ty - 0.6)
    seat = (tx - 0.85, ty)
    t_sit = rng.uniform(0.55, 0.65)
    pos = keyframes(
        T,
        [
            (0.0, (*start, 0)),
            (t_sit - 0.12, (*near, 0)),
            (t_sit - 0.02, (*near, 0)),
            (t_sit, (*seat, 0)),
            (1.0, (*seat, 0)),
        ],
    )
    yaw = heading(pos, initial=np.pi)
    s = np.linspace(0, 1, T)
    pose = ["sit" if si >= t_sit else p for si, p in zip(s, _walk_pose(pos))]
    yaw[s >= t_sit - 0.05] = 0.0
    p = b.person(pos, yaw, pose)
    p.seat = [chair.oid if ps == "sit" else None for ps in pose]
    eye, target = _indoor_camera(T, rng, W, D, (tx - 0.4, ty - 0.2))
    return Scene("sit", True, T, b.actors, eye, target)


def template_carry(T: int, rng: np.random.Generator) -> Scene:
    """A person walks to a table, picks up a cup, carries it to a box and puts it down there."""
    b = _Builder(T, rng)
    W, D = _room(b, rng)
    tx, ty = rng.uniform(1.8, 2.4), D * rng.uniform(0.55, 0.7)
    bx, by = W - rng.uniform(1.0, 1.5), D * rng.uniform(0.3, 0.45)
    b.static("table", assets.table(_color(rng, (0.55, 0.42, 0.3))), (tx, ty, 0))
    b.static("box", assets.box(_color(rng, (0.7, 0.55, 0.35))), (bx, by, 0), 0.0)
    if rng.random() < 0.7:
        b.static("bottle", assets.bottle(_color(rng, (0.2, 0.6, 0.3), 0.15)), (tx + 0.3, ty + 0.15, 0.75))
    b.static("chair", assets.chair(), (tx + 0.9, ty, 0), np.pi)
    height_guess = 1.75
    hand = assets.person_hand("stand", height_guess)
    stand_table = np.array([tx - 0.45 - hand[0], ty - 0.1 - hand[1], 0])
    stand_box = np.array([bx - 0.05 - hand[0], by - hand[1], 0])
    start = np.array([0.6, rng.uniform(0.5, 1.0), 0])
    t_pick, t_leave, t_arrive, t_drop = 0.24, 0.42, 0.66, 0.84
    pos = keyframes(
        T, [(0.0, start), (t_pick, stand_table), (t_leave, stand_table), (t_arrive, stand_box), (1.0, stand_box)]
    )
    yaw = heading(pos, initial=0.0)
    s = np.linspace(0, 1, T)
    yaw[(s >= t_pick - 0.02) & (s < t_leave)] = 0.0
    yaw[s >= t_arrive - 0.02] = 0.0
    pose = _walk_pose(pos)
    holding = (s >= t_pick + 0.03) & (s < t_drop)
    arm = ["hold" if h else "down" for h in holding]
    p = b.person(pos, yaw, pose, arm)
    cup = b.mover("cup", assets.cup, np.zeros((T, 3)), np.zeros(T), ["static"] * T, color=_color(rng, (0.9, 0.9, 0.85)))
    hand = assets.person_hand("stand", p.meta["height"])
    on_table = np.array([tx - 0.45, ty - 0.1, 0.75])
    for t in range(T):
        if holding[t]:
            cup.pos[t] = pos[t] + rot(yaw[t]) @ hand - np.array([0, 0, 0.06])
            cup.attached_to[t] = p.oid
            p.attached_to[t] = None
        elif s[t] < t_pick + 0.03:
            cup.pos[t] = on_table
        else:
            cup.pos[t] = np.array([cup.pos[t - 1][0], cup.pos[t - 1][1], 0.45]) if t else on_table
        cup.yaw[t] = yaw[t]
    eye, target = _indoor_camera(T, rng, W, D, ((tx + bx) / 2, (ty + by) / 2))
    return Scene("carry", True, T, b.actors, eye, target)


def template_tv(T: int, rng: np.random.Generator) -> Scene:
    """One person watches television from the sofa while another walks across the room."""
    b = _Builder(T, rng)
    W, D = _room(b, rng)
    cx = W * rng.uniform(0.4, 0.6)
    b.static("cabinet", assets.cabinet(_color(rng, (0.75, 0.72, 0.65))), (cx, D - 0.3, 0), -np.pi / 2)
    b.static("tv", assets.tv(), (cx, D - 0.3, 0.55), -np.pi / 2)
    sy = D - rng.uniform(2.8, 3.2)
    sofa = b.static("sofa", assets.sofa(_color(rng, (0.45, 0.25, 0.35))), (cx, sy, 0), np.pi / 2)
    ctab_y = (sy + D - 0.3) / 2 - 0.2
    b.static("table", assets.table(_color(rng, (0.5, 0.4, 0.3)), size=(0.9, 0.5), height=0.45), (cx, ctab_y, 0))
    small = str(rng.choice(["bottle", "cup", "book"]))
    b.static(small, SMALL_THINGS[small](), (cx + 0.2, ctab_y, 0.45), rng.uniform(0, np.pi))
    sit_x = cx + rng.uniform(-0.5, 0.5)
    watcher = b.person(np.tile([sit_x, sy, 0.0], (T, 1)), np.full(T, np.pi / 2), ["sit"] * T)
    watcher.seat = [sofa.oid] * T
    wy = D - rng.uniform(1.3, 1.6)
    x0, x1 = (0.5, W - 0.5) if rng.random() < 0.5 else (W - 0.5, 0.5)
    t0, t1 = rng.uniform(0.1, 0.25), rng.uniform(0.75, 0.9)
    pos = keyframes(T, [(0.0, (x0, wy, 0)), (t0, (x0, wy, 0)), (t1, (x1, wy, 0)), (1.0, (x1, wy, 0))])
    b.person(pos, heading(pos, initial=0.0 if x1 > x0 else np.pi), _walk_pose(pos))
    if rng.random() < 0.5:
        b.static("plant", assets.plant(), (W - 0.5, D - 0.5, 0))
    eye, target = _indoor_camera(T, rng, W, D, (cx, sy + 1.0))
    return Scene("tv", True, T, b.actors, eye, target)


def _outdoor_ground(b: _Builder, rng: np.random.Generator, road: bool) -> None:
    if road:
        b.static("road", assets.slab((18.0, 3.6), _color(rng, (0.35, 0.35, 0.37), 0.04)), (0, 0, 0), is_thing=False)
        grass = assets.MeshBuilder()
        g = _color(rng, (0.3, 0.55, 0.25), 0.05)
        for y in (-4.3, 4.3):
            grass.box((18.0, 5.0, 0.05), (0.0, y, -0.025), g)
        g = b.static("grass", grass.build(), (0, 0, 0), is_thing=False)
        g.meta["regions"] = [(-9.0, -6.8, 9.0, -1.8), (-9.0, 1.8, 9.0, 6.8)]
    else:
        b.static("grass", assets.slab((14.0, 12.0), _color(rng, (0.3, 0.55, 0.25), 0.05)), (0, 0, 0), is_thing=False)


def _outdoor_camera(T, rng, focus, radius):
    return _camera(
        T,
        rng,
        np.asarray(focus, dtype=np.float64),
        radius=radius,
        height=float(rng.uniform(2.6, 3.4)),
        az_range=(-120.0, -60.0),
    )


def template_dog_ball(T: int, rng: np.random.Generator) -> Scene:
    """A ball rolls across the grass and under a bench; a dog chases it; a person watches the dog."""
    b = _Builder(T, rng)
    _outdoor_ground(b, rng, road=False)
    bx, by = rng.uniform(-1.0, 1.0), rng.uniform(0.5, 1.5)
    b.static("bench", assets.bench(), (bx, by, 0), 0.0)
    b.static("tree", assets.tree(height=float(rng.uniform(2.6, 3.4))), (bx + rng.choice([-3.0, 3.0]), by + 1.5, 0))
    under = rng.random() < 0.7
    end_ball = (bx + rng.uniform(-0.3, 0.3), by if under else by - 1.2, 0)
    start_ball = (end_ball[0] + rng.uniform(-1.0, 1.0), by - 4.5, 0)
    t_stop = rng.uniform(0.55, 0.7)
    bpos = keyframes(T, [(0.0, start_ball), (t_stop, end_ball), (1.0, end_ball)])
    b.mover("ball", assets.ball, bpos, np.zeros(T), ["static"] * T, color=_color(rng, (0.9, 0.2, 0.15)))
    dog_end = np.array([end_ball[0], end_ball[1] - (0.75 if under else 0.6), 0])
    dog_start = np.array([start_ball[0] + rng.uniform(-1.5, 1.5), start_ball[1] - 1.5, 0])
    t_go = rng.uniform(0.05, 0.15)
    dpos = keyframes(T, [(0.0, dog_start), (t_go, dog_start), (min(t_stop + 0.12, 0.9), dog_end), (1.0, dog_end)])
    dyaw = heading(dpos, initial=np.pi / 2)
    dpose = ["run" if p == "walk" else "stand" for p in _walk_pose(dpos)]
    dog = b.mover("dog", assets.dog, dpos, dyaw, dpose, fur=_color(rng, (0.55, 0.38, 0.2), 0.15))
    px, py = bx + rng.choice([-2.5, 2.5]), by - rng.uniform(1.5, 2.5)
    ppos = np.tile([px, py, 0.0], (T, 1))
    pyaw = np.arctan2(dog.pos[:, 1] - py, dog.pos[:, 0] - px)
    b.person(ppos, pyaw, ["stand"] * T)
    eye, target = _outdoor_camera(T, rng, (bx, by - 1.8), radius=float(rng.uniform(4.2, 5.0)))
    return Scene("dog_ball", False, T, b.actors, eye, target)


def template_ride(T: int, rng: np.random.Generator) -> Scene:
    """A person rides a bicycle along the road; a pedestrian walks on the grass; a car is parked."""
    b = _Builder(T, rng)
    _outdoor_ground(b, rng, road=True)
    lane = rng.uniform(-1.0, -0.4)
    d = rng.choice([-1.0, 1.0])
    bpos = keyframes(T, [(0.0, (-5.5 * d, lane, 0)), (1.0, (5.5 * d, lane, 0))])
    yaw = np.full(T, 0.0 if d > 0 else np.pi)
    bike = b.mover("bicycle", assets.bicycle, bpos, yaw, ["static"] * T, color=_color(rng, (0.1, 0.6, 0.7), 0.2))
    rider = b.person(bpos.copy(), yaw.copy(), ["ride"] * T)
    rider.attached_to = [bike.oid] * T
    if rng.random() < 0.6:
        b.static("car", assets.car(_color(rng, (0.2, 0.3, 0.7), 0.2)), (rng.uniform(-3, 3), 1.0, 0), 0.0)
    b.static("tree", assets.tree(), (rng.uniform(-4, 4), 3.3, 0))
    wy = -rng.uniform(2.6, 3.2)
    wpos = keyframes(T, [(0.0, (2.5 * d, wy, 0)), (1.0, (-1.0 * d, wy, 0))])
    b.person(wpos, heading(wpos, 0.0), _walk_pose(wpos))
    eye, target = _outdoor_camera(T, rng, (0.0, -0.5), radius=float(rng.uniform(6.0, 7.0)))
    return Scene("ride", False, T, b.actors, eye, target)


def template_drive(T: int, rng: np.random.Generator) -> Scene:
    """A car waits, then drives off along the road while a person on the grass looks at it."""
    b = _Builder(T, rng)
    _outdoor_ground(b, rng, road=True)
    lane = rng.uniform(0.5, 0.9)
    d = rng.choice([-1.0, 1.0])
    t_go = rng.uniform(0.15, 0.35)
    cpos = keyframes(T, [(0.0, (-4.5 * d, lane, 0)), (t_go, (-4.5 * d, lane, 0)), (1.0, (5.0 * d, lane, 0))])
    car = b.mover(
        "car",
        assets.car,
        cpos,
        np.full(T, 0.0 if d > 0 else np.pi),
        ["static"] * T,
        color=_color(rng, (0.75, 0.1, 0.1), 0.2),
    )
    px, py = rng.uniform(-1.5, 1.5), -rng.uniform(2.5, 3.0)
    b.person(np.tile([px, py, 0.0], (T, 1)), np.arctan2(car.pos[:, 1] - py, car.pos[:, 0] - px), ["stand"] * T)
    b.static("bench", assets.bench(), (px + rng.choice([-2.0, 2.0]), -3.6, 0), np.pi)
    b.static("tree", assets.tree(), (rng.uniform(-5, 5), 3.5, 0))
    if rng.random() < 0.5:
        dpos = np.tile([px + 0.8, py + 0.3, 0.0], (T, 1))
        b.mover("dog", assets.dog, dpos, np.full(T, np.pi / 2), ["stand"] * T)
    eye, target = _outdoor_camera(T, rng, (0.0, -0.5), radius=float(rng.uniform(6.5, 7.5)))
    return Scene("drive", False, T, b.actors, eye, target)


def template_push(T: int, rng: np.random.Generator) -> Scene:
    """A person pushes a cart across the room, past a table."""
    b = _Builder(T, rng)
    W, D = _room(b, rng)
    cy = D * rng.uniform(0.35, 0.5)
    t0, t1 = rng.uniform(0.05, 0.2), rng.uniform(0.8, 0.95)
    cpos = keyframes(T, [(0.0, (1.2, cy, 0)), (t0, (1.2, cy, 0)), (t1, (W - 1.4, cy, 0)), (1.0, (W - 1.4, cy, 0))])
    b.mover("cart", assets.cart, cpos, np.zeros(T), ["static"] * T, color=_color(rng, (0.3, 0.5, 0.7), 0.2))
    ppos = cpos - np.array([0.85, 0.0, 0.0])
    b.person(ppos, np.zeros(T), _walk_pose(ppos), ["push"] * T)
    tx = W * rng.uniform(0.35, 0.65)
    b.static("table", assets.table(), (tx, D - 1.0, 0))
    small = str(rng.choice(["bottle", "book", "laptop"]))
    b.static(small, SMALL_THINGS[small](), (tx + 0.2, D - 1.0, 0.75), np.pi)
    if rng.random() < 0.6:
        b.static("chair", assets.chair(), (tx - 0.9, D - 1.0, 0), 0.0)
    eye, target = _indoor_camera(T, rng, W, D, (W / 2, cy + 0.4))
    return Scene("push", True, T, b.actors, eye, target)


def template_luggage(T: int, rng: np.random.Generator) -> Scene:
    """A person crosses a hall pulling a wheeled suitcase behind them; another sits at a table with a laptop."""
    b = _Builder(T, rng)
    W, D = _room(b, rng)
    py = D * rng.uniform(0.45, 0.55)
    x0, x1 = (W / 2 - 1.8, W / 2 + 1.8) if rng.random() < 0.5 else (W / 2 + 1.8, W / 2 - 1.8)
    t0, t1 = rng.uniform(0.05, 0.2), rng.uniform(0.8, 0.95)
    pos = keyframes(T, [(0.0, (x0, py, 0)), (t0, (x0, py, 0)), (t1, (x1, py, 0)), (1.0, (x1, py, 0))])
    yaw = np.full(T, 0.0 if x1 > x0 else np.pi)
    b.person(pos, yaw, _walk_pose(pos))
    # the suitcase trails 0.55 m behind, 0.2 m to the right (the hand that pulls it)
    back = np.stack([0.55 * np.cos(yaw) - 0.2 * np.sin(yaw), 0.55 * np.sin(yaw) + 0.2 * np.cos(yaw), np.zeros(T)], 1)
    color = _color(rng, SUITCASES[int(rng.integers(len(SUITCASES)))], 0.1)
    b.mover("suitcase", assets.suitcase, pos - back, yaw.copy(), ["static"] * T, color=color)
    tx = W * rng.uniform(0.35, 0.65)
    b.static("table", assets.table(), (tx, D - 1.0, 0))
    b.static("laptop", assets.laptop(), (tx + 0.1, D - 1.0, 0.75), np.pi / 2)  # facing the sitter
    chair = b.static("chair", assets.chair(), (tx + 0.1, D - 0.3, 0), -np.pi / 2)
    sitter = b.person(np.tile([tx + 0.1, D - 0.3, 0.0], (T, 1)), np.full(T, -np.pi / 2), ["sit"] * T)
    sitter.seat = [chair.oid] * T
    eye, target = _indoor_camera(T, rng, W, D, (W / 2, py + 0.3))
    return Scene("luggage", True, T, b.actors, eye, target)


def template_horse(T: int, rng: np.random.Generator) -> Scene:
    """A person walks across a meadow leading a horse; a second person on a bench watches; a tree."""
    b = _Builder(T, rng)
    _outdoor_ground(b, rng, road=False)
    d = rng.choice([-1.0, 1.0])
    py = rng.uniform(-0.5, 0.5)
    t0 = rng.uniform(0.05, 0.2)
    pos = keyframes(T, [(0.0, (-3.0 * d, py, 0)), (t0, (-3.0 * d, py, 0)), (1.0, (3.5 * d, py, 0))])
    yaw = np.full(T, 0.0 if d > 0 else np.pi)
    pose = _walk_pose(pos)
    b.person(pos, yaw, pose)
    side = rng.choice([-1.0, 1.0]) * 0.35
    trail = np.stack([np.cos(yaw) * 1.6 + np.sin(yaw) * side, np.sin(yaw) * 1.6 - np.cos(yaw) * side, np.zeros(T)], 1)
    coat = _color(rng, (0.45, 0.3, 0.18), 0.15)
    b.mover("horse", assets.horse, pos - trail, yaw.copy(), pose, coat=coat)
    bx, by = rng.uniform(-1.5, 1.5), py + rng.uniform(2.2, 2.8)
    bench = b.static("bench", assets.bench(), (bx, by, 0), np.pi)
    watcher = b.person(np.tile([bx, by, 0.0], (T, 1)), np.full(T, -np.pi / 2), ["sit"] * T)
    watcher.seat = [bench.oid] * T
    b.static("tree", assets.tree(height=float(rng.uniform(2.6, 3.4))), (rng.uniform(-4, 4), py + 4.0, 0))
    eye, target = _outdoor_camera(T, rng, (0.0, py + 0.5), radius=float(rng.uniform(6.0, 7.0)))
    return Scene("horse", False, T, b.actors, eye, target)


SUITCASES = [(0.2, 0.25, 0.35), (0.6, 0.15, 0.15), (0.15, 0.4, 0.3), (0.3, 0.3, 0.3)]

TEMPLATES: dict[str, Callable[[int, np.random.Generator], Scene]] = {
    "sit": template_sit,
    "carry": template_carry,
    "tv": template_tv,
    "dog_ball": template_dog_ball,
    "drive": template_drive,
    "ride": template_ride,
    "push": template_push,
    "luggage": template_luggage,
    "horse": template_horse,
}
