"""Relations of a scripted scene, derived frame by frame from its geometry and kinematics.

Nothing is hand-typed: each predicate is a test on the posed objects of a frame (contact, vertical order,
footprint containment, distance, facing direction, velocity) plus, for actions, the script's articulation
(``sit``, ``ride``) and attachments (what a hand holds). The per-frame indicators become inclusive spans.

Rules (A is the subject, B the object; "footprint" is an object's local x/y extent, "top" its highest point):

==============  ==========================================================================================
on              A is a small thing, a ball, or a parked vehicle; A's bottom touches B's top (within 3 cm) and
                A's centre lies in B's footprint; A is not carried
over / under    A's bottom is above B's top by more than 5 cm and A's centre lies in B's footprint (over);
                A lies under a table, bench or chair: in its footprint and below its top (under)
beside          two things whose footprints are less than 0.4 m apart and overlap in height, neither on the
                other; the smaller (by footprint area, ties by id) is the subject
in front of     A is a person or dog within 35 degrees of B's facing direction, 0.3-3.5 m away (B: tv, laptop,
                car, cabinet)
sitting on      A is a person in the ``sit`` pose with B as seat and A's pelvis in B's footprint
standing on /   A is a person or dog touching B's top with its feet; walking when faster than 0.25 m/s
walking on
holding /       A's hand carries B (B attached to A); carrying when A moves faster than 0.25 m/s
carrying
looking at      A is a person; B is the thing nearest to A's gaze direction within 25 degrees, 0.5-8 m away
riding          A is a person in the ``ride`` pose attached to B, moving
chasing         A is a dog moving faster than 0.3 m/s, B a ball moving faster than 0.1 m/s, within 30 degrees of
                A's motion and closer than 7 m
pushing         A is a person facing and touching B (a cart or box), both moving the same way
driving on      A is a car moving faster than 0.5 m/s whose wheels touch B's top
pulling /       A is a person moving faster than 0.1 m/s; B (a suitcase: pulling, a horse: leading) follows:
leading         its centre within 40 degrees behind A, moving within 30 degrees of A's direction, its footprint
                closer than 0.5 m (suitcase) or 1.5 m (horse)
==============  ==========================================================================================

Furniture standing on the ground gets no relation (it would tie every scene to its floor and carry no
information); the agents' and small objects' support relations do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spade4d.data.synthetic.world import Actor, Scene

SMALL = {"cup", "bottle", "laptop", "book", "tv", "box", "plant", "ball"}
VEHICLES = {"car", "bicycle"}
AGENTS = {"person", "dog", "horse"}
FOLLOWERS = {"suitcase": ("pulling", 0.5), "horse": ("leading", 1.5)}  # predicate, largest footprint gap (m)
CANOPIES = {"table", "bench", "chair"}
FACING = {"tv", "laptop", "car", "cabinet"}
SEATS = {"chair", "sofa", "bench"}
CONTACT = 0.03
MOVING = 0.25


@dataclass
class Pose:
    """One actor on one frame."""

    actor: Actor
    pos: np.ndarray
    yaw: float
    vel: np.ndarray
    lo: np.ndarray  # local bounds
    hi: np.ndarray
    zmin: float
    zmax: float

    @property
    def speed(self) -> float:
        return float(np.hypot(self.vel[0], self.vel[1]))

    @property
    def facing(self) -> np.ndarray:
        return np.array([np.cos(self.yaw), np.sin(self.yaw)])

    def to_local(self, xy: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        d = np.asarray(xy, dtype=np.float64) - self.pos[:2]
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])

    def contains(self, xy: np.ndarray, margin: float = 0.0) -> bool:
        regions = self.actor.meta.get("regions")
        if regions is not None:  # ground made of several world-aligned rectangles
            x, y = xy
            return any(
                x0 - margin <= x <= x1 + margin and y0 - margin <= y <= y1 + margin for x0, y0, x1, y1 in regions
            )
        p = self.to_local(xy)
        return bool(np.all(p >= self.lo[:2] - margin) and np.all(p <= self.hi[:2] + margin))

    @property
    def center(self) -> np.ndarray:
        """World xy of the footprint centre."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        m = (self.lo[:2] + self.hi[:2]) / 2
        return self.pos[:2] + np.array([c * m[0] - s * m[1], s * m[0] + c * m[1]])

    @property
    def area(self) -> float:
        return float(np.prod(self.hi[:2] - self.lo[:2]))

    def footprint_gap(self, other: Pose) -> float:
        """Distance between the world-aligned bounding rectangles of the two footprints (0 when they overlap)."""
        a0, a1 = self.world_rect()
        b0, b1 = other.world_rect()
        d = np.maximum(0.0, np.maximum(b0 - a1, a0 - b1))
        return float(np.hypot(*d))

    def world_rect(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        corners = np.array([[x, y] for x in (self.lo[0], self.hi[0]) for y in (self.lo[1], self.hi[1])])
        w = corners @ np.array([[c, s], [-s, c]]) + self.pos[:2]
        return w.min(0), w.max(0)


def frame_poses(scene: Scene, t: int) -> list[Pose]:
    out = []
    for a in scene.actors:
        v = a.posed(t).vertices
        lo, hi = a.local_bounds(t)
        vel = scene.velocity(a)[t]
        out.append(Pose(a, a.pos[t], float(a.yaw[t]), vel, lo, hi, float(v[:, 2].min()), float(v[:, 2].max())))
    return out


def _angle(v: np.ndarray, w: np.ndarray) -> float:
    nv, nw = np.linalg.norm(v), np.linalg.norm(w)
    if nv < 1e-9 or nw < 1e-9:
        return np.pi
    return float(np.arccos(np.clip(np.dot(v, w) / (nv * nw), -1.0, 1.0)))


def _supports(a: Pose, b: Pose) -> bool:
    """A rests on B: bottom on top, centre inside B's footprint."""
    return abs(a.zmin - b.zmax) < CONTACT and b.contains(a.center, margin=0.02)


def relations_at(scene: Scene, t: int) -> set[tuple[int, str, int]]:
    """All (subject oid, predicate, object oid) that hold on frame t."""
    poses = frame_poses(scene, t)
    rels: set[tuple[int, str, int]] = set()
    for a in poses:
        A = a.actor
        carried_by = A.attached_to[t]
        for b in poses:
            B = b.actor
            if A.oid == B.oid or not A.is_thing:
                continue
            # -- support: on / standing on / walking on / sitting on / driving on
            if A.label in AGENTS:
                if A.label == "person" and A.pose[t] == "sit" and A.seat[t] == B.oid and b.contains(a.pos[:2]):
                    rels.add((A.oid, "sitting on", B.oid))
                elif A.pose[t] in ("stand", "walk", "run") and _supports(a, b) and B.label not in AGENTS:
                    rels.add((A.oid, "walking on" if a.speed > MOVING else "standing on", B.oid))
            elif A.label == "car" and _supports(a, b):
                rels.add((A.oid, "driving on" if a.speed > 0.5 else "on", B.oid))
            elif (A.label in SMALL or A.label in ("bicycle", "suitcase")) and carried_by is None and _supports(a, b):
                rels.add((A.oid, "on", B.oid))
            if not B.is_thing:
                continue
            # -- vertical order without contact
            free = carried_by is None
            if free and A.label not in AGENTS and a.zmin > b.zmax + 0.05 and b.contains(a.center, margin=0.05):
                rels.add((A.oid, "over", B.oid))
            if B.label in CANOPIES and b.contains(a.center) and a.zmax < b.zmax - 0.05 and A.label not in AGENTS:
                rels.add((A.oid, "under", B.oid))
            # -- carried things
            if B.attached_to[t] == A.oid and A.label == "person" and B.label not in VEHICLES:
                rels.add((A.oid, "carrying" if a.speed > MOVING else "holding", B.oid))
            if A.label == "person" and A.pose[t] == "ride" and carried_by == B.oid and a.speed > MOVING:
                rels.add((A.oid, "riding", B.oid))
            # -- beside
            linked = carried_by == B.oid or B.attached_to[t] == A.oid or A.seat[t] == B.oid
            if free and not linked and not _supports(a, b) and not _supports(b, a):
                overlap_z = min(a.zmax, b.zmax) - max(a.zmin, b.zmin) > 0.05
                if overlap_z and a.footprint_gap(b) < 0.4 and (a.area, A.oid) < (b.area, B.oid):
                    rels.add((A.oid, "beside", B.oid))
            # -- in front of
            if A.label in AGENTS and B.label in FACING and not linked:
                d = a.center - b.center
                dist = float(np.hypot(*d))
                if 0.3 < dist < 3.5 and _angle(b.facing, d) < np.radians(35):
                    rels.add((A.oid, "in front of", B.oid))
            # -- chasing, pushing, pulling and leading
            if A.label == "dog" and B.label == "ball" and a.speed > 0.3 and b.speed > 0.1:
                d = b.center - a.center
                if np.hypot(*d) < 7.0 and _angle(a.vel[:2], d) < np.radians(30):
                    rels.add((A.oid, "chasing", B.oid))
            if A.label == "person" and B.label in ("cart", "box") and a.speed > 0.1 and b.speed > 0.1:
                touching = a.footprint_gap(b) < 0.35
                same_way = _angle(a.facing, b.vel[:2]) < np.radians(30)
                if touching and same_way and _angle(a.facing, b.center - a.center) < np.radians(30):
                    rels.add((A.oid, "pushing", B.oid))
            if A.label == "person" and B.label in FOLLOWERS and a.speed > 0.1 and b.speed > 0.1:
                predicate, reach = FOLLOWERS[B.label]
                behind = _angle(-a.facing, b.center - a.center) < np.radians(40)
                if behind and _angle(a.vel[:2], b.vel[:2]) < np.radians(30) and a.footprint_gap(b) < reach:
                    rels.add((A.oid, predicate, B.oid))
        # -- looking at: the best-aligned thing in the gaze cone
        if A.label == "person":
            best, best_angle = None, np.radians(25)
            for b in poses:
                B = b.actor
                if B.oid == A.oid or not B.is_thing or B.attached_to[t] == A.oid or carried_by == B.oid:
                    continue
                if A.seat[t] == B.oid:
                    continue
                d = b.center - a.pos[:2]
                dist = float(np.hypot(*d))
                ang = _angle(a.facing, d)
                if 0.5 < dist < 8.0 and ang < best_angle:
                    best, best_angle = B.oid, ang
            if best is not None:
                rels.add((A.oid, "looking at", best))
    return rels


def relation_tracks(scene: Scene) -> dict[tuple[int, str, int], np.ndarray]:
    """(subject, predicate, object) -> boolean indicator over the scene's frames."""
    tracks: dict[tuple[int, str, int], np.ndarray] = {}
    for t in range(scene.num_frames):
        for key in relations_at(scene, t):
            tracks.setdefault(key, np.zeros(scene.num_frames, dtype=bool))[t] = True
    return tracks
