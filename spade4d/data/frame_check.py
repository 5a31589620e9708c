"""Does a point cloud look like the frames a model was trained on? Up axis and length unit, checked from the points.

spade4d's models are trained on z-up frames in metres. A model folder records what its training frames looked like
(``Model4DConfig.frames``, written by ``finetune-4d``); :func:`check_frames` compares a new sequence with that
record and returns one warning per mismatch:

- **up axis**: the floor is taken as the lowest large plane. For each of the six axis directions ``d``, the share of
  points within a thin slab (2 % of the extent) above the lowest points along ``d`` is measured; the direction
  with the largest share is the floor normal. Frames whose floor normal is not +z (by a clear margin over +z) are
  reported with the ``--up-axis`` that would turn them.
- **unit**: the robust extent (2nd to 98th percentile, largest axis) and the median nearest-neighbour spacing are
  compared with the training frames'; a ratio near 100 or 1000 names ``cm`` or ``mm``.

These are heuristics (docs/own-data.md): a scan dominated by one wall can look like another up axis. They warn,
they never change the data.
"""

from __future__ import annotations

import math

import numpy as np

DIRECTIONS = ("+x", "-x", "+y", "-y", "+z", "-z")
SLAB = 0.02  # floor slab thickness, as a share of the extent
MARGIN = 1.25  # another direction must hold this many times +z's floor share to be reported
UNIT_RATIO = 8.0  # extent ratio beyond which the unit is reported
MAX_POINTS = 20000


def _sample(xyz: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    xyz = xyz[np.isfinite(xyz).all(1)]
    if len(xyz) <= n:
        return xyz
    return xyz[np.random.default_rng(seed).choice(len(xyz), n, replace=False)]


def extent(xyz: np.ndarray) -> float:
    """The largest 2nd-98th percentile span over the three axes."""
    lo, hi = np.percentile(xyz, [2, 98], axis=0)
    return float((hi - lo).max())


def floor_shares(xyz: np.ndarray) -> dict[str, float]:
    """Per direction (``+x`` ... ``-z``): the share of points in the slab just above the lowest points along it."""
    tau = SLAB * max(extent(xyz), 1e-9)
    shares = {}
    for name in DIRECTIONS:
        v = xyz[:, "xyz".index(name[1])] * (1.0 if name[0] == "+" else -1.0)
        shares[name] = float(np.mean(v < np.percentile(v, 1) + tau))
    return shares


def spacing(xyz: np.ndarray, n: int = 4000) -> float:
    """The median distance from a point to its nearest neighbour among all the frame's points (asked for up to
    ``n`` of them: thinning the frame itself would widen the spacing)."""
    from scipy.spatial import cKDTree

    xyz = xyz[np.isfinite(xyz).all(1)]
    if len(xyz) < 2:
        return 0.0
    d, _ = cKDTree(xyz).query(_sample(xyz, n, seed=1), k=2)
    return float(np.median(d[:, 1]))


def frame_stats(frames: list[np.ndarray]) -> dict:
    """Statistics of some frames (each ``(N, 3)``), as recorded in a model folder: median extent and spacing, the
    floor shares per direction and the floor normal."""
    frames = [f for f in frames if len(f) >= 10]
    if not frames:
        return {}
    thinned = [_sample(f, MAX_POINTS) for f in frames]
    per_frame = [floor_shares(f) for f in thinned]
    shares = {d: float(np.median([s[d] for s in per_frame])) for d in DIRECTIONS}
    return {
        "up_axis": "z",
        "units": "m",
        "extent": float(np.median([extent(f) for f in thinned])),
        "spacing": float(np.median([spacing(f) for f in frames])),
        "floor_normal": max(shares, key=shares.get),
        "floor_shares": shares,
    }


def sequence_frames(seq, count: int = 3) -> list[np.ndarray]:
    """Up to ``count`` frames of a PointSequence, spread over its length."""
    T = seq.num_frames
    picks = sorted({int(round(i)) for i in np.linspace(0, T - 1, min(count, T))})
    return [seq.frame(t)["xyz"] for t in picks]


def _unit_hint(ratio: float) -> str:
    power = round(math.log10(ratio))
    if power == 2:
        return " (pass --units cm)"
    if power == 3:
        return " (pass --units mm)"
    return ""


def check_frames(frames: list[np.ndarray], trained: dict | None, source: str) -> list[str]:
    """One-line warnings, each naming ``source``, for frames that look like another up axis or unit than the
    training frames (``trained``: a model's ``frames`` record; None: z up in metres, units unchecked)."""
    stats = frame_stats(frames)
    if not stats:
        return []
    warnings = []
    shares = stats["floor_shares"]
    floor = stats["floor_normal"]
    expected = (trained or {}).get("floor_normal", "+z")
    if floor != expected and shares[floor] > MARGIN * shares[expected]:
        axis = floor.lstrip("+")
        warnings.append(
            f"{source}: the floor faces {floor} ({shares[floor]:.0%} of the points lie on it, {shares[expected]:.0%} "
            f"on a {expected} floor); the model was trained {expected.lstrip('+')} up: these frames look like "
            f"{axis} up (pass --up-axis {axis}, or check it)"
        )
    if trained and trained.get("extent"):
        ratio = stats["extent"] / trained["extent"]
        if ratio > UNIT_RATIO or ratio < 1.0 / UNIT_RATIO:
            space = stats["spacing"] / trained["spacing"] if trained.get("spacing") else float("nan")
            warnings.append(
                f"{source}: the points span {stats['extent']:.3g} units and lie {stats['spacing']:.3g} apart, "
                f"{ratio:.3g}x and {space:.3g}x the training frames' {trained['extent']:.3g} m and "
                f"{trained.get('spacing', float('nan')):.3g} m: another length unit?{_unit_hint(ratio)}"
            )
    return warnings
