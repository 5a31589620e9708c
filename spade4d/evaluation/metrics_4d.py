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

The fast path below packs each needed object's tube once into a bitset, computes the per-frame IoU of exactly
the (predicted, GT) object pairs that class-matching candidates need with one batched AND + popcount, and then
scores all candidates of a GT relation at once.
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


def pack_tube(
    masks: dict[int, np.ndarray], num_frames: int, width: int, frames: np.ndarray | None = None
) -> np.ndarray:
    """An object's per-frame point masks as a ``(T, W)`` uint64 bitset; frames absent (or not in ``frames``, a
    boolean ``(T,)`` selection) stay zero."""
    out = np.zeros((num_frames, width * 8), dtype=np.uint8)
    for t, m in masks.items():
        if frames is None or frames[t]:
            packed = np.packbits(m)
            out[t, : len(packed)] = packed
    return out.view(np.uint64)


def pair_ious(
    pairs: Sequence[tuple[int, int]],
    pred_bits: dict[int, np.ndarray],
    gt_bits: dict[int, np.ndarray],
    active: np.ndarray | None = None,
    chunk: int = 512,
) -> np.ndarray:
    """``(K, T)`` per-frame IoU of the (predicted id, GT id) ``pairs`` from bitsets: one AND + popcount per
    (pair, frame) item. ``active`` (K, T) restricts the work to the items that can matter; others are 0."""
    if not pairs:
        return np.zeros((0, 0), dtype=np.float32)
    p_ids = sorted({p for p, _ in pairs})
    g_ids = sorted({g for _, g in pairs})
    P = np.stack([pred_bits[i] for i in p_ids])  # (P, T, W)
    G = np.stack([gt_bits[i] for i in g_ids])  # (G, T, W)
    pk = np.searchsorted(p_ids, [p for p, _ in pairs])  # (K,)
    gk = np.searchsorted(g_ids, [g for _, g in pairs])
    K, T = len(pairs), P.shape[1]
    if active is None:
        active = np.ones((K, T), dtype=bool)
    ki, ti = np.nonzero(active)  # (M,) items
    iou = np.zeros((K, T), dtype=np.float32)
    for a in range(0, len(ki), chunk):  # chunk x W words at a time: bounded memory, stays in cache
        k, t = ki[a : a + chunk], ti[a : a + chunk]
        pw, gw = P[pk[k], t], G[gk[k], t]  # (m, W)
        inter = np.bitwise_count(pw & gw).sum(-1, dtype=np.int64)
        union = np.bitwise_count(pw).sum(-1, dtype=np.int64) + np.bitwise_count(gw).sum(-1, dtype=np.int64) - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou[k, t] = np.where(union > 0, inter / union, 0.0)
    return iou


def match_sequence(gt: SceneGraph4D, pred: SceneGraph4D | None, options: Options4D = Options4D()) -> list[GTOutcome]:
    """Outcomes of every GT relation of one sequence (fast path).

    Only the (predicted object, GT object) pairs that some class-matching candidate needs are intersected; each
    object's tube is packed once into a bitset and all pairs are scored in one batched AND + popcount.
    """
    if gt.num_points is None:
        raise ValueError(f"sequence {gt.video_id!r}: ground truth needs num_points to be evaluated")
    T = gt.num_frames
    if pred is None or not pred.relations:
        return [GTOutcome(gt.video_id, r.subject, r.object, r.predicate, None, None, None) for r in gt.relations]
    if pred.num_frames != T:
        raise ValueError(f"sequence {gt.video_id!r}: prediction has {pred.num_frames} frames, ground truth {T}")
    ranked = rank_relations(pred, options)
    gobj, pobj = gt.object_by_id(), pred.object_by_id()
    R = len(ranked)
    pred_on = np.zeros((R, T), dtype=bool)
    by_triplet: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k, r in enumerate(ranked):
        pred_on[k] = spans_to_frames(r.spans, T)
        ls, lo = pobj[r.subject].label, pobj[r.object].label
        by_triplet[(ls, r.predicate, lo)].append(k)
        by_pair[(ls, lo)].append(k)

    # the candidates of every GT relation, the object pairs they need, and the frames on which each object can
    # matter (inside a GT span and, for predicted objects, inside a candidate's predicted span): only those
    # frames are read and packed
    subj = np.array([r.subject for r in ranked])
    obj = np.array([r.object for r in ranked])
    plan = []
    needed: set[tuple[int, int]] = set()
    gt_frames: dict[int, np.ndarray] = {}
    use_p, use_g, use_rows = [], [], []  # (predicted id, GT id) -> the frames a candidate may test the pair on
    for r in gt.relations:
        cs, co = gobj[r.subject].label, gobj[r.object].label
        trip = by_triplet.get((cs, r.predicate, co), [])
        pair = by_pair.get((cs, co), [])  # the triplet candidates are a subset of these
        span = spans_to_frames(r.spans, T)
        plan.append((r, trip, pair, span))
        for g in (r.subject, r.object):
            gt_frames[g] = gt_frames.get(g, np.zeros(T, dtype=bool)) | span
        if pair:
            c = np.asarray(pair)
            needed.update(zip(subj[c].tolist(), [r.subject] * len(c)))
            needed.update(zip(obj[c].tolist(), [r.object] * len(c)))
            rows = span[None, :] & pred_on[c]
            use_p += [subj[c], obj[c]]
            use_g += [np.full(len(c), r.subject), np.full(len(c), r.object)]
            use_rows += [rows, rows]
    pair_frames: dict[tuple[int, int], np.ndarray] = {}
    pred_frames: dict[int, np.ndarray] = {}
    if use_p:
        ps_, gs_, rows = np.concatenate(use_p), np.concatenate(use_g), np.concatenate(use_rows)
        key = ps_.astype(np.int64) * (max(gobj) + 1) + gs_  # one key per (predicted, GT) pair
        order = np.argsort(key, kind="stable")
        _, first = np.unique(key[order], return_index=True)
        merged = np.logical_or.reduceat(rows[order], first, axis=0)
        for k, f in zip(first, merged):
            pg = (int(ps_[order[k]]), int(gs_[order[k]]))
            pair_frames[pg] = f
            pred_frames[pg[0]] = pred_frames.get(pg[0], np.zeros(T, dtype=bool)) | f
    width = (max(gt.num_points) + 63) // 64 if gt.num_points else 1
    gt_bits = {i: pack_tube(gobj[i].masks, T, width, f) for i, f in gt_frames.items()}
    pred_bits = {i: pack_tube(pobj[i].masks, T, width, pred_frames[i]) for i in {p for p, _ in needed}}
    pairs = sorted(needed)
    index = {pg: k for k, pg in enumerate(pairs)}
    active = np.stack([pair_frames[pg] for pg in pairs]) if pairs else None  # (K, T)
    good = pair_ious(pairs, pred_bits, gt_bits, active) >= options.mask_iou_threshold  # (K, T)
    gt_nonempty = {i: np.bitwise_count(b).sum(-1) > 0 for i, b in gt_bits.items()}  # (T,) each

    def first_rank(cands: list[int], gt_on: np.ndarray, g_rel: Relation4D, thresholds) -> list[int | None]:
        if not cands or not gt_on.any():
            return [None] * len(thresholds)
        c = np.asarray(cands)
        ks = [index[(ranked[k].subject, g_rel.subject)] for k in cands]
        ko = [index[(ranked[k].object, g_rel.object)] for k in cands]
        hit = gt_on[None, :] & pred_on[c] & good[ks] & good[ko]  # (C, T)
        if options.penalize_extra_frames:
            denom = (gt_on[None, :] | pred_on[c]).sum(1)
        else:
            denom = np.full(len(c), gt_on.sum())
        viou = hit.sum(1) / np.maximum(denom, 1)
        out = []
        for thr in thresholds:
            ok = np.flatnonzero(viou >= thr)
            out.append(int(c[ok[0]]) if ok.size else None)
        return out

    outcomes = []
    for r, trip, pair, span in plan:
        gt_on = span & gt_nonempty[r.subject] & gt_nonempty[r.object]
        rank, weak = first_rank(trip, gt_on, r, (options.viou_threshold, options.weak_viou_threshold))
        (pair_rank,) = first_rank(pair, gt_on, r, (options.viou_threshold,))
        outcomes.append(GTOutcome(gt.video_id, r.subject, r.object, r.predicate, rank, weak, pair_rank))
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
