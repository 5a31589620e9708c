"""Plain, loop-by-loop implementation of the 4D metric of docs/metrics.md.

Slow on purpose: one GT relation, one ranked entry, one frame at a time, IoUs recomputed from the masks each
time. It is the oracle the fast path in :mod:`spade4d.evaluation.metrics_4d` is tested against, and the
baseline of ``scripts/bench_evaluator.py``. Not for use on real splits.
"""

from __future__ import annotations

import numpy as np

from spade4d.evaluation.metrics_4d import GTOutcome, Options4D, rank_relations
from spade4d.structures import SceneGraph4D


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _in_spans(t: int, spans) -> bool:
    return any(s <= t <= e for s, e in spans)


def _viou(gt: SceneGraph4D, pred: SceneGraph4D, g_rel, p_rel, options: Options4D, span_free=False) -> float:
    """vIoU of one (GT, predicted) relation pair; ``span_free``: as if the prediction spanned every frame."""
    gobj, pobj = gt.object_by_id(), pred.object_by_id()
    gt_frames, hit_frames, pred_frames = set(), set(), set()
    for t in range(gt.num_frames):
        n = gt.num_points[t]
        if span_free or _in_spans(t, p_rel.spans):
            pred_frames.add(t)
        if not _in_spans(t, g_rel.spans):
            continue
        gs, go = gobj[g_rel.subject].mask(t, n), gobj[g_rel.object].mask(t, n)
        if not gs.any() or not go.any():
            continue
        gt_frames.add(t)
        if t not in pred_frames:
            continue
        ps, po = pobj[p_rel.subject].mask(t, n), pobj[p_rel.object].mask(t, n)
        if _iou(ps, gs) >= options.mask_iou_threshold and _iou(po, go) >= options.mask_iou_threshold:
            hit_frames.add(t)
    extra = options.penalize_extra_frames and not span_free
    denom = len(gt_frames | pred_frames) if extra else len(gt_frames)
    if not gt_frames or denom == 0:
        return 0.0
    return len(hit_frames) / denom


def match_sequence_reference(
    gt: SceneGraph4D, pred: SceneGraph4D | None, options: Options4D = Options4D()
) -> list[GTOutcome]:
    out = []
    ranked = [] if pred is None else rank_relations(pred, options)
    glabel = {o.id: o.label for o in gt.objects}
    plabel = {} if pred is None else {o.id: o.label for o in pred.objects}
    for g in gt.relations:
        rank = weak = pair = free = None
        hits = []
        for k, p in enumerate(ranked):
            same_pair = plabel[p.subject] == glabel[g.subject] and plabel[p.object] == glabel[g.object]
            if not same_pair:
                continue
            if None not in (rank, weak, pair, free):
                break
            v = _viou(gt, pred, g, p, options)
            if p.predicate == g.predicate:
                if rank is None and v >= options.viou_threshold:
                    rank = k
                if v >= options.weak_viou_threshold:
                    weak = k if weak is None else weak
                    hits += [k] if rank is None or k <= rank else []  # OpenPVSG stops at the first strong hit
                if free is None and _viou(gt, pred, g, p, options, span_free=True) >= options.viou_threshold:
                    free = k
            if pair is None and v >= options.viou_threshold:
                pair = k
        out.append(GTOutcome(gt.video_id, g.subject, g.object, g.predicate, rank, weak, pair, free, tuple(hits)))
    return out
