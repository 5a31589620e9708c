"""What a scene-graph figure shows, decided before anything is drawn: which relations (the top K by score above a
minimum, one tag per predicate), which colour and number each predicted object takes (the ground-truth object it
matches, so a prediction and its ground truth can be compared side by side), where the camera looks from, and a
relation timeline chart (one row per relation, its spans as bars, ground truth and prediction in two colours)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from spade4d.io import atomic_path
from spade4d.structures import ObjectTube, Relation4D, SceneGraph4D

VIEWS = {"front": (-0.55, -0.8, 0.75), "top": (0.0, -0.08, 1.0), "side": (-1.0, 0.0, 0.35)}
UNMATCHED_OFFSET = 10_000  # a predicted object no GT object matches is numbered from here ("#?")


@dataclass(frozen=True)
class FigureOptions:
    top_k: int = 10  # relations drawn per frame, highest score first
    min_score: float = 0.0  # relations scored below this are left out
    view: str = "front"  # front | top | side | orbit (the camera turns about the up axis over the frames)
    show_scores: bool = True

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if not np.isfinite(self.min_score):
            raise ValueError(f"min_score must be a finite number, got {self.min_score}")
        if self.view not in (*VIEWS, "orbit"):
            raise ValueError(f"view must be one of {', '.join((*VIEWS, 'orbit'))}, got {self.view!r}")


def frame_relations(graph: SceneGraph4D, t: int, options: FigureOptions) -> list[Relation4D]:
    """The relations drawn on frame ``t``: those holding there, scored at least ``min_score``, the ``top_k`` best
    (ties in their order); a (subject, object) pair with several predicates keeps one entry per predicate."""
    on = [r for r in graph.sorted_relations() if r.score >= options.min_score and any(s <= t <= e for s, e in r.spans)]
    return on[: options.top_k]


def relation_tag(r: Relation4D, options: FigureOptions, scored: bool) -> str:
    """The text of one relation's tag: its predicate, with its score for a prediction."""
    return f"{r.predicate} {r.score:.2f}" if scored and options.show_scores else r.predicate


def mean_tube_iou(a: ObjectTube, b: ObjectTube) -> float:
    """Mean per-frame mask IoU over the frames where either tube has points."""
    frames = set(a.frames()) | set(b.frames())
    if not frames:
        return 0.0
    total = 0.0
    for t in frames:
        ma, mb = a.masks.get(t), b.masks.get(t)
        if ma is None or mb is None or len(ma) != len(mb):
            continue
        union = np.count_nonzero(ma | mb)
        total += np.count_nonzero(ma & mb) / union if union else 0.0
    return total / len(frames)


def match_to_ground_truth(pred: SceneGraph4D, gt: SceneGraph4D, threshold: float = 0.5) -> dict[int, int | None]:
    """Predicted object id -> the GT object id it matches (one to one, by mean tube IoU >= ``threshold``, best
    pairs first), or None."""
    pairs = sorted(
        ((mean_tube_iou(p, g), p.id, g.id) for p in pred.objects for g in gt.objects),
        key=lambda x: (-x[0], x[1], x[2]),
    )
    out: dict[int, int | None] = {p.id: None for p in pred.objects}
    used = set()
    for iou, pid, gid in pairs:
        if iou < threshold:
            break
        if out[pid] is None and gid not in used:
            out[pid] = gid
            used.add(gid)
    return out


def in_ground_truth_ids(pred: SceneGraph4D, gt: SceneGraph4D, threshold: float = 0.5) -> SceneGraph4D:
    """``pred`` renumbered for drawing beside ``gt``: a matched object takes its GT object's id (so its colour and
    number), an unmatched one an id from ``UNMATCHED_OFFSET`` and a label ending in "?"."""
    match = match_to_ground_truth(pred, gt, threshold)
    new_id = {pid: gid if gid is not None else UNMATCHED_OFFSET + pid for pid, gid in match.items()}
    objects = [
        replace(o, id=new_id[o.id], label=o.label if match[o.id] is not None else f"{o.label}?") for o in pred.objects
    ]
    relations = [replace(r, subject=new_id[r.subject], object=new_id[r.object]) for r in pred.relations]
    return replace(pred, objects=objects, relations=relations)


def view_direction(view: str, t: int, num_frames: int) -> tuple[float, float, float]:
    """The camera's direction from the scene centre on frame ``t`` (z up)."""
    if view != "orbit":
        return VIEWS[view]
    a = 2 * np.pi * t / max(num_frames, 1) - 2.17  # starts near the front view
    return (float(np.cos(a)), float(np.sin(a)), 0.75)


def relation_timeline(
    path: str | os.PathLike, gt: SceneGraph4D | None, pred: SceneGraph4D | None, options: FigureOptions
) -> Path:
    """A PNG chart with one row per relation (``subject#id predicate object#id``), its spans as bars: ground truth
    and prediction in two colours (a prediction's relations as the top ``top_k`` by score over the sequence,
    above ``min_score``; its objects best drawn in ground-truth ids, :func:`in_ground_truth_ids`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[str, list[tuple[str, list[tuple[int, int]]]]] = {}
    graphs = [(g, kind) for g, kind in ((gt, "ground truth"), (pred, "prediction")) if g is not None]
    for g, kind in graphs:
        names = {o.id: f"{o.label}#{o.id}" for o in g.objects}
        rels = g.sorted_relations()
        if kind == "prediction":
            rels = [r for r in rels if r.score >= options.min_score][: options.top_k]
        for r in rels:
            key = f"{names.get(r.subject, r.subject)} {r.predicate} {names.get(r.object, r.object)}"
            rows.setdefault(key, []).append((kind, r.spans))
    T = max(g.num_frames for g, _ in graphs) if graphs else 1
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.32 * max(len(rows), 1)))
    colours = {"ground truth": "#4c72b0", "prediction": "#dd8452"}
    for i, entries in enumerate(rows.values()):
        for kind, spans in entries:
            dy = -0.18 if kind == "ground truth" else 0.18
            for s, e in spans:
                ax.barh(i + dy, e - s + 1, left=s - 0.5, height=0.34, color=colours[kind])
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_xlabel("frame")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()], labels=list(colours))
    ax.set_title((gt or pred).video_id if graphs else "no relations")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
