"""A 4D scene graph as a rerun recording (``.rrd``): open it in the rerun viewer and scrub the frames.

The recording has one timeline, ``frame`` (numbered from 0, as the frame files are), and for each graph shown
(``ground_truth`` and, with a prediction, ``prediction``, side by side in two 3D views) three entities per frame:

- ``<graph>/points``: the frame's points coloured by object (things saturated, stuff muted, unlabelled grey);
- ``<graph>/objects``: a point at each object's centroid (the median of its points) labelled ``label#id``;
- ``<graph>/relations``: an arrow from subject to object for each relation holding on the frame (the best
  ``top_k`` over ``min_score``), labelled with the predicate and, for a prediction, its score.

A relation can hold on a frame where one of its objects has no points (hidden behind another, or out of view). Its
arrow then ends at that object's centroid on the nearest frame where it was seen (the earlier one on a tie), and
the object is drawn there labelled ``label#id (hidden)``. An object never seen has no place, so its relations are
left out.

A prediction drawn beside its ground truth takes the ids and colours of the GT objects it matches (unmatched ones
end in "?"), as in the rendered figures. Empty frames are logged as empty, so nothing stale stays on screen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from spade4d.io import atomic_path
from spade4d.structures import PointSequence, SceneGraph4D
from spade4d.viz.figures import FigureOptions, frame_relations, in_ground_truth_ids, relation_tag
from spade4d.viz.render import STUFF_NAMES, object_color

TIMELINE = "frame"


class ViewerError(RuntimeError):
    pass


def _rerun():
    try:
        import rerun
    except ImportError:
        raise ViewerError("the viewer needs rerun-sdk: pip install 'spade4d[viz]' (or pip install rerun-sdk)") from None
    return rerun


def _shown(points: PointSequence, graph: SceneGraph4D, t: int):
    """Frame ``t``'s xyz and the (object, mask) pairs of the objects with points on it."""
    xyz = points.frame(t)["xyz"]
    pairs = [(o, o.masks.get(t)) for o in graph.objects]
    return xyz, [(o, m) for o, m in pairs if m is not None and len(m) == len(xyz) and m.any()]


def frame_colors(points: PointSequence, graph: SceneGraph4D, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t``: (xyz (n, 3), colours (n, 3) uint8: by object, things saturated, stuff muted, the rest grey)."""
    xyz, shown = _shown(points, graph, t)
    colors = np.full((len(xyz), 3), 0.72)
    for obj, m in shown:
        colors[m] = object_color(obj.id, obj.label in STUFF_NAMES)
    return xyz, (colors * 255).round().astype(np.uint8)


def object_anchors(points: PointSequence, graph: SceneGraph4D) -> list[tuple[dict, dict]]:
    """Per frame, (the centroids (median of its points) of the objects with points on it, where every object is
    drawn): an object's centroid where it has points, else its centroid on the nearest frame where it has (the
    earlier on a tie); an object with no points on any frame is left out."""
    seen = []
    for t in range(points.num_frames):
        xyz, shown = _shown(points, graph, t)
        seen.append({obj.id: np.median(xyz[m], axis=0) for obj, m in shown})
    anchors: list[dict[int, np.ndarray]] = [dict(c) for c in seen]
    for obj in graph.objects:
        frames = np.array([t for t, c in enumerate(seen) if obj.id in c])
        if not len(frames):
            continue
        for t, here in enumerate(anchors):
            if obj.id not in here:
                here[obj.id] = seen[int(frames[np.argmin(np.abs(frames - t))])][obj.id]
    return list(zip(seen, anchors))


def log_frame(rec, root: str, points, graph, t: int, options: FigureOptions, scored: bool, places) -> None:
    """Log frame ``t`` of ``graph`` under ``root``; ``places``: :func:`object_anchors`'s pair for the frame."""
    rr = _rerun()
    centroids, anchors = places
    xyz, colors = frame_colors(points, graph, t)
    rec.log(f"{root}/points", rr.Points3D(xyz, colors=colors, radii=0.015))
    rels = [r for r in frame_relations(graph, t, options) if r.subject in anchors and r.object in anchors]
    hidden = {i for r in rels for i in (r.subject, r.object) if i not in centroids}
    centroids = {**centroids, **{i: anchors[i] for i in hidden}}
    labels = {o.id: f"{o.label}#{o.id}" + (" (hidden)" if o.id in hidden else "") for o in graph.objects}
    ids = sorted(centroids)
    rec.log(
        f"{root}/objects",
        rr.Points3D(
            np.array([centroids[i] for i in ids]).reshape(-1, 3),
            colors=np.array([[round(255 * c) for c in object_color(i)] for i in ids], np.uint8).reshape(-1, 3),
            labels=[labels[i] for i in ids],
            radii=0.06,
        ),
    )
    origins = np.array([centroids[r.subject] for r in rels]).reshape(-1, 3)
    ends = np.array([centroids[r.object] for r in rels]).reshape(-1, 3)
    rec.log(
        f"{root}/relations",
        rr.Arrows3D(
            origins=origins,
            vectors=ends - origins,
            labels=[relation_tag(r, options, scored) for r in rels],
            colors=np.array([[round(255 * c) for c in object_color(r.subject)] for r in rels], np.uint8).reshape(-1, 3),
        ),
    )


def write_recording(
    out: str | os.PathLike,
    points: PointSequence,
    ground_truth: SceneGraph4D | None = None,
    prediction: SceneGraph4D | None = None,
    options: FigureOptions = FigureOptions(),
    progress: bool = False,
) -> Path:
    """Write the recording of ``points`` with its ground truth and/or a prediction to ``out`` (atomically)."""
    from tqdm import tqdm

    rr = _rerun()
    import rerun.blueprint as rrb

    graphs = {"ground_truth": ground_truth, "prediction": prediction}
    graphs = {k: g for k, g in graphs.items() if g is not None}
    if not graphs:
        raise ViewerError("nothing to show: pass a ground truth, a prediction or both")
    for g in graphs.values():
        if g.num_frames != points.num_frames:
            raise ViewerError(f"sequence {g.video_id!r}: the points have {points.num_frames} frames, the graph "
                              f"{g.num_frames}")  # fmt: skip
    if ground_truth is not None and prediction is not None:
        graphs["prediction"] = in_ground_truth_ids(prediction, ground_truth)
    vid = next(iter(graphs.values())).video_id
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    views = [rrb.Spatial3DView(origin=k, name=f"{vid}: {k.replace('_', ' ')}") for k in graphs]
    rec = rr.RecordingStream("spade4d", recording_id=f"spade4d-{vid}")
    with atomic_path(out) as tmp:
        rec.save(str(tmp), default_blueprint=rrb.Blueprint(rrb.Horizontal(*views), collapse_panels=True))
        for root in graphs:
            rec.log(root, rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        anchors = {root: object_anchors(points, g) for root, g in graphs.items()}
        for t in tqdm(range(points.num_frames), desc=f"record {vid}", disable=not progress):
            rec.set_time(TIMELINE, sequence=t)
            for root, g in graphs.items():
                log_frame(rec, root, points, g, t, options, root == "prediction", anchors[root][t])
        rec.flush()
        rec.disconnect()
    return out


def read_recording(path: str | os.PathLike) -> dict[str, dict[int, list[str]]]:
    """What a recording holds: entity path -> {frame: the labels logged on it (empty for unlabelled entities)}."""
    _rerun()
    from rerun.chunk import RrdReader

    found: dict[str, dict[int, list[str]]] = {}
    for chunk in RrdReader(str(path)).stream().to_chunks():
        batch = chunk.to_record_batch()
        if TIMELINE not in batch.schema.names:
            continue
        frames = batch.column(TIMELINE).to_pylist()
        label_cols = [n for n in batch.schema.names if n.endswith(":labels")]
        labels = batch.column(label_cols[0]).to_pylist() if label_cols else [None] * len(frames)
        entity = found.setdefault(chunk.entity_path, {})
        for t, row in zip(frames, labels):
            entity.setdefault(int(t), []).extend(row or [])
    return found


def open_viewer(path: Path) -> str:
    """Open the rerun viewer on ``path`` when there is a display; otherwise say how to open the file."""
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    exe = shutil.which("rerun")
    if display and exe:
        subprocess.Popen([exe, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return f"opened the rerun viewer on {path}"
    return f"no display here: open the recording with `rerun {path}` (pip install rerun-sdk) on a machine with one"
