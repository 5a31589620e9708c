"""4D R@K / mR@K (PROTOCOLS.md §3.2: the OpenPVSG protocol ported to point clouds).

Per sequence:

1. the ranked list is every predicted relation by score (stable: ties keep file order); by default no graph
   constraint; only entries whose (subject, object) pair is among the first ``top_pairs`` distinct pairs;
2. a predicted object's class is its label;
3. each GT relation walks the ranked list; among entries with the same (class(s), predicate, class(o)) the first
   with vIoU >= threshold is a hit at every K greater than its 0-based rank; a GT with several spans is one GT;
4. vIoU = |hit_frames| / |gt_frames|, where ``gt_frames`` are the GT span frames on which both GT masks are
   non-empty and ``hit_frames`` those of them covered by the predicted span with per-frame point-mask IoU >= 0.5
   for the subject and, separately, the object. ``penalize_extra_frames`` divides by
   |gt_frames ∪ predicted frames| instead;
5. R@K is micro-averaged over the split; mR@K averages per-predicate recall over predicates with a GT relation.

Also reported: weak recall (vIoU >= 0.1) ``wR@K``, and pair recall ``PR@K``: a GT relation's (subject, object)
pair counts as found when some top-K entry with the same subject and object classes, any predicate, reaches
vIoU >= threshold (it measures localisation and naming of the pair apart from the predicate).

Choices (documented options): a GT relation whose ``gt_frames`` is empty (its objects are never both visible in
its span) still counts in the denominator and can never be recalled; predicted frames and GT frames are
intersected over the sequence's frames only.

The fast path below computes, once per sequence, the point-mask IoU of every (predicted object, GT object) pair
on every frame with one matrix product per frame, then scores all candidates of a GT relation at once.
:mod:`spade4d.evaluation.reference` keeps the plain loop it must equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spade4d.structures import Relation4D, SceneGraph4D, spans_to_frames


@dataclass(frozen=True)
class Options4D:
    ks: tuple[int, ...] = (20, 50, 100)
    viou_threshold: float = 0.5
    weak_viou_threshold: float = 0.1
    mask_iou_threshold: float = 0.5
    top_pairs: int | None = 100
    graph_constraint: bool = False
    penalize_extra_frames: bool = False

    def __post_init__(self) -> None:
        if not self.ks or any(k <= 0 for k in self.ks):
            raise ValueError(f"K values must be positive, got {self.ks}")
        for name in ("viou_threshold", "weak_viou_threshold", "mask_iou_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        if self.top_pairs is not None and self.top_pairs <= 0:
            raise ValueError(f"top_pairs must be positive or None, got {self.top_pairs}")


@dataclass
class GTOutcome:
    """The fate of one GT relation: the 0-based rank of the first qualifying prediction (None: never)."""

    video_id: str
    subject: int
    object: int
    predicate: str
    rank: int | None
    weak_rank: int | None
    pair_rank: int | None


def rank_relations(pred: SceneGraph4D, options: Options4D) -> list[Relation4D]:
    """The ranked list of step 1 (graph constraint and top-pair cut applied)."""
    ranked = pred.sorted_relations()
    if options.graph_constraint:
        seen: set[tuple[int, int]] = set()
        kept = []
        for r in ranked:
            if (r.subject, r.object) not in seen:
                seen.add((r.subject, r.object))
                kept.append(r)
        ranked = kept
    if options.top_pairs is not None:
        pairs: set[tuple[int, int]] = set()
        kept = []
        for r in ranked:
            pair = (r.subject, r.object)
            if pair not in pairs:
                if len(pairs) >= options.top_pairs:
                    continue
                pairs.add(pair)
            kept.append(r)
        ranked = kept
    return ranked


def iou_tensor(
    gt: SceneGraph4D, pred: SceneGraph4D, gt_ids: Sequence[int], pred_ids: Sequence[int], num_points: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(T, P, G)`` point-mask IoU of predicted vs GT objects, and ``(T, G)`` GT non-emptiness.

    Each frame's masks are stacked once and intersected with one matrix product (float32 BLAS); objects absent
    from a frame are skipped, so the cost follows the masks that exist.
    """
    T = gt.num_frames
    P, G = len(pred_ids), len(gt_ids)
    iou = np.zeros((T, P, G), dtype=np.float32)
    gt_nonempty = np.zeros((T, G), dtype=bool)
    gobj, pobj = gt.object_by_id(), pred.object_by_id()
    for t in range(T):
        gi = [k for k, i in enumerate(gt_ids) if t in gobj[i].masks]
        pi = [k for k, i in enumerate(pred_ids) if t in pobj[i].masks]
        if not gi:
            continue
        gm = np.stack([gobj[gt_ids[k]].masks[t] for k in gi]).astype(np.float32)  # (g, N)
        ga = gm.sum(1)
        gt_nonempty[t, gi] = ga > 0
        if not pi:
            continue
        pm = np.stack([pobj[pred_ids[k]].masks[t] for k in pi]).astype(np.float32)  # (p, N)
        inter = pm @ gm.T  # (p, g)
        union = pm.sum(1)[:, None] + ga[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            frame_iou = np.where(union > 0, inter / union, 0.0)
        iou[t][np.ix_(pi, gi)] = frame_iou
    return iou, gt_nonempty


def match_sequence(gt: SceneGraph4D, pred: SceneGraph4D | None, options: Options4D = Options4D()) -> list[GTOutcome]:
    """Outcomes of every GT relation of one sequence (fast path)."""
    if gt.num_points is None:
        raise ValueError(f"sequence {gt.video_id!r}: ground truth needs num_points to be evaluated")
    T = gt.num_frames
    if pred is None or not pred.relations:
        return [GTOutcome(gt.video_id, r.subject, r.object, r.predicate, None, None, None) for r in gt.relations]
    if pred.num_frames != T:
        raise ValueError(f"sequence {gt.video_id!r}: prediction has {pred.num_frames} frames, ground truth {T}")
    ranked = rank_relations(pred, options)
    glabel = {o.id: o.label for o in gt.objects}
    plabel = {o.id: o.label for o in pred.objects}
    gt_ids = sorted({i for r in gt.relations for i in (r.subject, r.object)})
    pred_ids = sorted({i for r in ranked for i in (r.subject, r.object)})
    gidx = {i: k for k, i in enumerate(gt_ids)}
    pidx = {i: k for k, i in enumerate(pred_ids)}
    iou, gt_nonempty = iou_tensor(gt, pred, gt_ids, pred_ids, gt.num_points)
    R = len(ranked)
    pred_on = np.zeros((R, T), dtype=bool)
    ps = np.zeros(R, dtype=np.int64)
    po = np.zeros(R, dtype=np.int64)
    by_triplet: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k, r in enumerate(ranked):
        pred_on[k] = spans_to_frames(r.spans, T)
        ps[k], po[k] = pidx[r.subject], pidx[r.object]
        by_triplet[(plabel[r.subject], r.predicate, plabel[r.object])].append(k)
        by_pair[(plabel[r.subject], plabel[r.object])].append(k)
    good = iou >= options.mask_iou_threshold  # (T, P, G)

    def first_rank(
        cands: list[int], gt_on: np.ndarray, gs: int, go: int, thresholds: Sequence[float]
    ) -> list[int | None]:
        if not cands or not gt_on.any():
            return [None] * len(thresholds)
        c = np.asarray(cands)
        hit = gt_on[None, :] & pred_on[c] & good[:, ps[c], gs].T & good[:, po[c], go].T  # (C, T)
        denom = (gt_on[None, :] | pred_on[c]).sum(1) if options.penalize_extra_frames else np.full(len(c), gt_on.sum())
        viou = hit.sum(1) / np.maximum(denom, 1)
        out = []
        for thr in thresholds:
            ok = np.flatnonzero(viou >= thr)
            out.append(int(c[ok[0]]) if ok.size else None)
        return out

    outcomes = []
    for r in gt.relations:
        gs, go = gidx[r.subject], gidx[r.object]
        gt_on = spans_to_frames(r.spans, T) & gt_nonempty[:, gs] & gt_nonempty[:, go]
        cs, co = glabel[r.subject], glabel[r.object]
        rank, weak = first_rank(
            by_triplet.get((cs, r.predicate, co), []),
            gt_on,
            gs,
            go,
            (options.viou_threshold, options.weak_viou_threshold),
        )
        (pair,) = first_rank(by_pair.get((cs, co), []), gt_on, gs, go, (options.viou_threshold,))
        outcomes.append(GTOutcome(gt.video_id, r.subject, r.object, r.predicate, rank, weak, pair))
    return outcomes


@dataclass
class Evaluator4D:
    """Streams sequences: ``reset()``, ``process(gt, pred)`` per sequence, then ``evaluate()``.

    Only one small record per GT relation is kept, so memory does not grow with the masks of the split.
    ``predicates`` (optional) fixes the order of the per-predicate table.
    """

    options: Options4D = field(default_factory=Options4D)
    predicates: Sequence[str] | None = None
    outcomes: list[GTOutcome] = field(default_factory=list)
    sequences: int = 0

    def reset(self) -> None:
        self.outcomes = []
        self.sequences = 0

    def process(self, gt: SceneGraph4D, pred: SceneGraph4D | None) -> list[GTOutcome]:
        out = match_sequence(gt, pred, self.options)
        self.outcomes.extend(out)
        self.sequences += 1
        return out

    def evaluate(self) -> dict[str, Any]:
        return summarise_4d(self.outcomes, self.options, self.predicates, self.sequences)


def _recall(outcomes: Sequence[GTOutcome], attr: str, k: int) -> float:
    if not outcomes:
        return 0.0
    return sum(1 for o in outcomes if getattr(o, attr) is not None and getattr(o, attr) < k) / len(outcomes)


def summarise_4d(
    outcomes: Sequence[GTOutcome],
    options: Options4D,
    predicates: Sequence[str] | None = None,
    sequences: int | None = None,
) -> dict[str, Any]:
    """Metrics in percent from GT outcomes: ``R@K mR@K wR@K PR@K`` plus per-predicate recall and the options."""
    by_pred: dict[str, list[GTOutcome]] = defaultdict(list)
    for o in outcomes:
        by_pred[o.predicate].append(o)
    names = list(predicates) if predicates is not None else sorted(by_pred)
    names += sorted(p for p in by_pred if p not in names)
    m: dict[str, Any] = {}
    for k in options.ks:
        m[f"R@{k}"] = 100.0 * _recall(outcomes, "rank", k)
    for k in options.ks:
        with_gt = [p for p in names if by_pred.get(p)]
        m[f"mR@{k}"] = 100.0 * float(np.mean([_recall(by_pred[p], "rank", k) for p in with_gt])) if with_gt else 0.0
    for k in options.ks:
        m[f"wR@{k}"] = 100.0 * _recall(outcomes, "weak_rank", k)
    for k in options.ks:
        m[f"PR@{k}"] = 100.0 * _recall(outcomes, "pair_rank", k)
    m["per_predicate"] = {
        p: {
            "gt": len(by_pred.get(p, [])),
            **{f"R@{k}": 100.0 * _recall(by_pred.get(p, []), "rank", k) for k in options.ks},
        }
        for p in names
    }
    m["num_gt_relations"] = len(outcomes)
    if sequences is not None:
        m["num_sequences"] = sequences
    opts = asdict(options)
    opts["ks"] = list(options.ks)
    m["options"] = opts
    return m
