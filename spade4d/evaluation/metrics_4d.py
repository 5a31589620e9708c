"""4D R@K / mR@K (docs/metrics.md: the OpenPVSG protocol ported to point clouds).

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

Also reported: weak recall (vIoU >= 0.1) ``wR@K``; span-free recall ``sfR@K``, the "weak" measure of OpenPVSG's
``utils/rel_metrics.py`` (``iou_weak``): the vIoU computed as if the predicted span covered the whole sequence, so
a frame counts when both masks match whatever the span says (threshold as the strong vIoU); and pair recall
``PR@K``: a GT relation's (subject, object) pair counts as found when some top-K entry with the same subject and
object classes, any predicate, reaches vIoU >= threshold (it measures localisation and naming of the pair apart
from the predicate).

Choices (documented options): a GT relation whose ``gt_frames`` is empty (its objects are never both visible in
its span) still counts in the denominator and can never be recalled; predicted frames and GT frames are
intersected over the sequence's frames only.

The fast path below works on flat arrays: every GT relation's candidates (the ranked entries with its class
pair) as one (relation, candidate) table. A candidate whose predicted frames cannot cover enough of the GT
relation's frames to reach the lower vIoU threshold even with perfect masks is dropped before any mask is read.
Mask IoUs are computed per distinct (predicted, GT) object pair, subjects first: objects are then tested only for
the candidates whose subject can still reach that bound, on the frames where the subject matched. Each boolean mask
that some test needs is read once, packed into a bitset table (:class:`PackedMasks`), and every (pair, frame) item
is one AND + popcount. The first qualifying candidate of every GT relation is found for all relations at once.
:mod:`spade4d.evaluation.reference` keeps the plain loop it must equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spade4d.structures import Relation4D, SceneGraph4D


@dataclass(frozen=True)
class Options4D:
    ks: tuple[int, ...] = (20, 50, 100)
    viou_threshold: float = 0.5
    weak_viou_threshold: float = 0.1
    mask_iou_threshold: float = 0.5
    top_pairs: int | None = 100
    graph_constraint: bool = False
    penalize_extra_frames: bool = False
    # wR@K as OpenPVSG's tools/rel_test_full.py counts it: every class-matching prediction with vIoU >= the weak
    # threshold up to the first strong hit, so one GT relation can count several times (it can pass 100); also
    # reports the weak mean recall wmR@K. Off: each GT relation counts once (docs/metrics.md)
    openpvsg_weak: bool = False

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
    span_free_rank: int | None = None
    # the ranks of every class-matching prediction with vIoU >= the weak threshold, up to ``rank`` (all without
    # one): what OpenPVSG's weak recall counts
    weak_hits: tuple[int, ...] = ()


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


class PackedMasks:
    """Point masks of (object, frame) items packed on demand into one growing ``(M + 1, W)`` uint64 bitset table.

    ``masks`` maps an object key to its masks by frame. ``pack({key: frames})`` packs the frames not yet packed
    (each boolean mask is read once, whatever the number of stages that ask for it); ``rows_for`` gives objects'
    ``(T,)`` row indices, 0 for an item not packed (absent mask, or a frame that cannot matter); row 0 is all
    zeros. ``words`` and ``counts`` (each row's popcount, computed once) cover every row packed so far.
    """

    def __init__(self, masks: dict[Any, dict[int, np.ndarray]], num_frames: int, width: int):
        self.masks = masks
        self.num_frames = num_frames
        self.index: dict[Any, np.ndarray] = {}
        self.words = np.zeros((1, width), dtype=np.uint64)
        self.counts = np.zeros(1, dtype=np.int64)

    def pack(self, frames: dict[Any, np.ndarray]) -> None:
        """Pack, for each object key, the mask of every frame in its ``(T,)`` boolean ``frames`` not yet packed."""
        asked = []
        for key, f in frames.items():
            idx = self.index.get(key)
            if idx is None:
                idx = self.index[key] = np.zeros(self.num_frames, dtype=np.int64)
            asked += [(t, idx, self.masks[key]) for t in np.flatnonzero(f & (idx == 0)).tolist()]
        asked.sort(key=lambda item: item[0])  # frame by frame: a lazy source decodes each of its frames once
        todo = [(idx, t, m) for t, idx, masks in asked if (m := masks.get(t)) is not None]
        if not todo:
            return
        new = np.zeros((len(todo), self.words.shape[1] * 8), dtype=np.uint8)
        n = len(self.words)
        for r, (idx, t, m) in enumerate(todo):
            b = np.packbits(m)  # the one read of the boolean mask
            new[r, : len(b)] = b
            idx[t] = n + r
        new_words = new.view(np.uint64)
        self.words = np.concatenate([self.words, new_words])
        self.counts = np.concatenate([self.counts, np.bitwise_count(new_words).sum(-1, dtype=np.int64)])

    def rows_for(self, keys: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """``(K, T)`` row indices of K object keys (repeats allowed), packing first what ``frames`` (K, T) asks."""
        uniq, need, inverse = _union_by(keys, frames)
        self.pack(dict(zip(uniq.tolist(), need)))
        return np.stack([self.index[k] for k in uniq.tolist()])[inverse]


def pair_ious(
    pred_rows: np.ndarray,
    gt_rows: np.ndarray,
    pred: PackedMasks,
    gt: PackedMasks,
    active: np.ndarray | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """``(K, T)`` per-frame IoU of K (predicted, GT) object pairs given as ``(K, T)`` row indices into two
    :class:`PackedMasks`: one AND + popcount per (pair, frame) item. ``active`` (K, T) restricts the work to the
    items that can matter; the others are 0."""
    iou = np.zeros(pred_rows.shape, dtype=np.float32)
    if active is None:
        active = np.ones(pred_rows.shape, dtype=bool)
    ki, ti = np.nonzero(active & (pred_rows > 0) & (gt_rows > 0))  # a zero row never reaches IoU > 0
    for a in range(0, len(ki), chunk):  # chunk x W words at a time: bounded memory, stays in cache
        k, t = ki[a : a + chunk], ti[a : a + chunk]
        rp, rg = pred_rows[k, t], gt_rows[k, t]
        inter = np.bitwise_count(pred.words[rp] & gt.words[rg]).sum(-1, dtype=np.int64)
        union = pred.counts[rp] + gt.counts[rg] - inter
        iou[k, t] = inter / np.maximum(union, 1)
    return iou


def match_sequence(gt: SceneGraph4D, pred: SceneGraph4D | None, options: Options4D = Options4D()) -> list[GTOutcome]:
    """Outcomes of every GT relation of one sequence (fast path).

    Only the (predicted object, GT object) pairs that some class-matching candidate needs are intersected, on
    only the frames where they can still matter; see the module docstring.
    """
    if gt.num_points is None:
        raise ValueError(f"sequence {gt.video_id!r}: ground truth needs num_points to be evaluated")
    T = gt.num_frames
    if pred is None or not pred.relations or not gt.relations:
        return [GTOutcome(gt.video_id, r.subject, r.object, r.predicate, None, None, None) for r in gt.relations]
    if pred.num_frames != T:
        raise ValueError(f"sequence {gt.video_id!r}: prediction has {pred.num_frames} frames, ground truth {T}")
    # object ids are keys, never array offsets: both sides' ids become dense indices 0..n-1 here, so ids of any
    # size or sign (0 and 2**40, -5) can neither collide nor overflow the packed (predicted, GT) pair keys below
    gobj, pobj = list(gt.objects), list(pred.objects)
    g_index = {o.id: k for k, o in enumerate(gobj)}
    p_index = {o.id: k for k, o in enumerate(pobj)}
    G = len(gt.relations)
    rels = pred.relations
    subj = np.fromiter((p_index[r.subject] for r in rels), dtype=np.int64, count=len(rels))
    obj = np.fromiter((p_index[r.object] for r in rels), dtype=np.int64, count=len(rels))
    ranked = _rank_order(np.fromiter((r.score for r in rels), dtype=np.float64, count=len(rels)), subj, obj, options)
    subj, obj = subj[ranked], obj[ranked]
    pred_on = _frames_matrix([rels[i].spans for i in ranked.tolist()], T)  # (R, T)
    pc, pair_values, pred_code, g_subj, g_obj, g_pc, g_code = _class_codes(gt, pobj, g_index, subj, obj, rels, ranked)

    gt_on = _recallable_frames(gt, gobj, g_subj, g_obj, g_pc, T)  # 1. (G, T)
    n_on = gt_on.sum(1)

    # 2. the candidates of every GT relation: the ranked entries with its class pair (in rank order), flattened
    #    into (relation J, candidate C) rows. A candidate whose predicted frames cannot cover enough of the GT
    #    frames to reach the lower vIoU threshold even with perfect masks is dropped, unless it has the GT
    #    predicate (then the span-free recall, which ignores its span, still needs it)
    by_code = np.argsort(pc, kind="stable")
    seg_start = np.searchsorted(pc[by_code], np.arange(len(pair_values)))
    seg_len = np.bincount(pc, minlength=len(pair_values))
    n_cand = np.where((g_pc >= 0) & (n_on > 0), seg_len[np.maximum(g_pc, 0)], 0)
    J = np.repeat(np.arange(G), n_cand)
    offset = np.arange(len(J)) - np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
    C = by_code[seg_start[g_pc[J]] + offset]
    same = pred_code[C] == g_code[J]
    in_span = gt_on[J] & pred_on[C]  # (N, T) the frames on which a candidate can score
    bound = min(options.viou_threshold, options.weak_viou_threshold)
    keep = (in_span.sum(1) / n_on[J] >= bound) | same  # an upper bound of the vIoU, computed as the vIoU is
    J, C, same = J[keep], C[keep], same[keep]
    rows = np.where(same[:, None], gt_on[J], in_span[keep])

    # 3. per-frame mask IoUs of the (predicted, GT) object pairs those candidates test, subjects first: the
    #    objects are then tested only for the candidates whose subject can still reach a bound, and only on the
    #    frames where their subject is good. Masks are packed once, on the frames where they can matter.
    base = len(gobj)
    width = (max(gt.num_points) + 63) // 64 if gt.num_points else 1
    gt_packed = PackedMasks({k: o.masks for k, o in enumerate(gobj)}, T, width)
    pred_packed = PackedMasks({k: o.masks for k, o in enumerate(pobj)}, T, width)
    hit_s = _side_hits(subj[C] * base + g_subj[J], rows, base, pred_packed, gt_packed, options.mask_iou_threshold)
    keep = ((hit_s & pred_on[C]).sum(1) / n_on[J] >= bound) | (same & (hit_s.sum(1) / n_on[J] >= bound))
    J, C, same, hit_s = J[keep], C[keep], same[keep], hit_s[keep]
    hit = hit_s & _side_hits(obj[C] * base + g_obj[J], hit_s, base, pred_packed, gt_packed, options.mask_iou_threshold)

    # 4. every candidate's vIoU at once, then the first qualifying candidate of each GT relation
    span_free = hit.sum(1) / n_on[J] >= options.viou_threshold
    hit &= pred_on[C]
    if options.penalize_extra_frames:
        denom = (gt_on[J] | pred_on[C]).sum(1)
    else:
        denom = n_on[J]
    viou = hit.sum(1) / np.maximum(denom, 1)
    strong = viou >= options.viou_threshold
    rank = _first_per(J, C, same & strong, G)
    weak = _first_per(J, C, same & (viou >= options.weak_viou_threshold), G)
    pair_rank = _first_per(J, C, strong, G)
    free = _first_per(J, C, same & span_free, G)
    hits = _weak_hits(J, C, same & (viou >= options.weak_viou_threshold), rank, G)
    return [
        GTOutcome(gt.video_id, r.subject, r.object, r.predicate, a, b, c, d, e)
        for r, a, b, c, d, e in zip(gt.relations, rank, weak, pair_rank, free, hits)
    ]


def _class_codes(gt: SceneGraph4D, pobj, g_index, subj, obj, rels, ranked):
    """Class pairs and predicates as integer codes shared by the ranked predictions and the GT (-1: no prediction
    has it): each ranked entry's class-pair code, the pair values, each entry's predicate code, the GT relations'
    subject and object indices, class-pair codes and predicate codes."""
    gobj = gt.objects
    labels: dict[str, int] = {}
    label_of = [labels.setdefault(o.label, len(labels)) for o in pobj]
    L = len(labels)
    pc_raw = np.fromiter((label_of[i] for i in subj.tolist()), dtype=np.int64, count=len(subj)) * L
    pc_raw += np.fromiter((label_of[i] for i in obj.tolist()), dtype=np.int64, count=len(obj))
    pair_values, pc = np.unique(pc_raw, return_inverse=True)  # dense class-pair codes
    codes: dict[str, int] = {}
    pred_code = np.array([codes.setdefault(rels[i].predicate, len(codes)) for i in ranked.tolist()])
    g_subj = np.array([g_index[r.subject] for r in gt.relations], dtype=np.int64)
    g_obj = np.array([g_index[r.object] for r in gt.relations], dtype=np.int64)
    gl_s = np.array([labels.get(gobj[i].label, -1) for i in g_subj.tolist()])
    gl_o = np.array([labels.get(gobj[i].label, -1) for i in g_obj.tolist()])
    pos = np.searchsorted(pair_values, gl_s * L + gl_o).clip(max=len(pair_values) - 1)
    g_pc = np.where((gl_s >= 0) & (gl_o >= 0) & (pair_values[pos] == gl_s * L + gl_o), pos, -1)
    g_code = np.array([codes.get(r.predicate, -1) for r in gt.relations])
    return pc, pair_values, pred_code, g_subj, g_obj, g_pc, g_code


def _recallable_frames(gt: SceneGraph4D, gobj, g_subj, g_obj, g_pc, T: int) -> np.ndarray:
    """(G, T) where each GT relation can be recalled at all: the frames of its spans on which both GT masks are
    non-empty (a short-circuiting ``any`` per GT object and span frame, cheap next to packing; only for the
    relations whose class pair some prediction has)."""
    spans = _frames_matrix([r.spans for r in gt.relations], T) & (g_pc >= 0)[:, None]  # (G, T)
    gt_ids, gt_frames, _ = _union_by(np.concatenate([g_subj, g_obj]), np.concatenate([spans, spans]))
    gt_nonempty = {i: _nonempty(gobj[i].masks, f) for i, f in zip(gt_ids.tolist(), gt_frames)}
    gt_on = (
        spans & np.stack([gt_nonempty[g] for g in g_subj.tolist()]) & np.stack([gt_nonempty[g] for g in g_obj.tolist()])
    )
    return gt_on


def _rank_order(scores: np.ndarray, subj: np.ndarray, obj: np.ndarray, options: Options4D) -> np.ndarray:
    """Indices of the relations in the ranked list of step 1 (:func:`rank_relations`, vectorised)."""
    order = np.argsort(-scores, kind="stable")
    if not (options.graph_constraint or options.top_pairs is not None):
        return order
    s, o = subj[order], obj[order]
    key = (s - s.min()) * (int(o.max() - o.min()) + 1) + (o - o.min())
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)  # first: a pair's first position
    if options.graph_constraint:  # each pair once, at its best-scored entry
        order = order[np.sort(first)]
        return order if options.top_pairs is None else order[: options.top_pairs]
    pair_rank = np.empty(len(first), dtype=np.int64)
    pair_rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # pairs by first appearance
    return order[pair_rank[inverse] < options.top_pairs]


def _side_hits(
    keys: np.ndarray, frames: np.ndarray, base: int, pred: PackedMasks, gt: PackedMasks, iou_threshold: float
) -> np.ndarray:
    """``(N, T)``: for N candidates, each testing the (predicted, GT) object pair ``key = predicted * base + GT``
    on ``frames`` (N, T), the frames on which that pair's mask IoU reaches the threshold. Each distinct pair is
    intersected once, on the union of the frames its candidates test."""
    if not len(keys):
        return np.zeros(frames.shape, dtype=bool)
    pair_keys, active, inverse = _union_by(keys, frames)  # (K,), (K, T) frames each distinct pair is tested on
    good = pair_ious(pred.rows_for(pair_keys // base, active), gt.rows_for(pair_keys % base, active), pred, gt, active)
    return frames & (good >= iou_threshold)[inverse]


def _union_by(keys: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct ``keys``, the union of the ``frames`` rows (N, T) of each, and each row's distinct-key index."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    first = np.searchsorted(inverse[order], np.arange(len(uniq)))
    return uniq, np.logical_or.reduceat(frames[order], first, axis=0), inverse


def _first_per(J: np.ndarray, C: np.ndarray, ok: np.ndarray, n: int) -> list[int | None]:
    """For each of ``n`` groups, the smallest candidate ``C`` of group ``J`` with ``ok`` (None when none)."""
    best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, J[ok], C[ok])
    return [None if b == np.iinfo(np.int64).max else b for b in best.tolist()]


def _weak_hits(J: np.ndarray, C: np.ndarray, ok: np.ndarray, rank: list[int | None], n: int) -> list[tuple[int, ...]]:
    """For each of ``n`` groups, the candidates ``C`` of group ``J`` with ``ok`` up to the group's ``rank``."""
    limit = np.array([np.iinfo(np.int64).max if r is None else r for r in rank], dtype=np.int64)
    sel = ok & (C <= limit[J]) if len(J) else ok
    out: list[list[int]] = [[] for _ in range(n)]
    for j, c in zip(J[sel].tolist(), C[sel].tolist()):
        out[j].append(c)
    return [tuple(sorted(h)) for h in out]


def _nonempty(masks: dict[int, np.ndarray], frames: np.ndarray) -> np.ndarray:
    """``(T,)``: the frames among ``frames`` on which the mask exists and has a point (a lazy mask source may
    answer through its own ``nonempty(t)`` without building the mask)."""
    ne = np.zeros(len(frames), dtype=bool)
    nonempty = getattr(masks, "nonempty", None)
    for t in np.flatnonzero(frames).tolist():
        if nonempty is not None:
            ne[t] = nonempty(t)
            continue
        m = masks.get(t)
        ne[t] = m is not None and len(m) > 0 and bool(m[m.argmax()])  # argmax stops at the first point
    return ne


def _frames_matrix(span_lists: Sequence[Sequence[tuple[int, int]]], num_frames: int) -> np.ndarray:
    """``(R, T)`` boolean frame indicators of R span lists (inclusive spans, clipped to the sequence)."""
    n = np.fromiter((len(spans) for spans in span_lists), dtype=np.int64, count=len(span_lists))
    flat = np.array([se for spans in span_lists for se in spans], dtype=np.int64).reshape(-1, 2)
    t = np.arange(num_frames)
    on = (t >= flat[:, :1]) & (t <= flat[:, 1:])  # (S, T), one row per span
    if len(flat) == len(span_lists) and (n == 1).all():
        return on
    out = np.zeros((len(span_lists), num_frames), dtype=bool)
    has = n > 0
    if has.any():
        out[has] = np.logical_or.reduceat(on, (np.cumsum(n) - n)[has], axis=0)
    return out


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


def _weak_count(outcomes: Sequence[GTOutcome], k: int) -> float:
    return sum(sum(1 for h in o.weak_hits if h < k) for o in outcomes) / len(outcomes) if outcomes else 0.0


def summarise_4d(
    outcomes: Sequence[GTOutcome],
    options: Options4D,
    predicates: Sequence[str] | None = None,
    sequences: int | None = None,
) -> dict[str, Any]:
    """Metrics in percent from GT outcomes: ``R@K mR@K wR@K sfR@K PR@K`` plus per-predicate recall and the options."""
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
        if options.openpvsg_weak:  # every weak hit counts (OpenPVSG); the mean over predicates too
            m[f"wR@{k}"] = 100.0 * _weak_count(outcomes, k)
            means = [_weak_count(by_pred[p], k) for p in names if by_pred.get(p)]
            m[f"wmR@{k}"] = 100.0 * float(np.mean(means)) if means else 0.0
    for k in options.ks:
        m[f"sfR@{k}"] = 100.0 * _recall(outcomes, "span_free_rank", k)
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


def evaluate_4d(predictions, ground_truth, predicates: Sequence[str] | None = None, **options) -> dict[str, Any]:
    """4D R@K / mR@K (docs/metrics.md) of ``predictions`` against ``ground_truth``, in percent.

    ``predictions``: a mapping ``video_id -> SceneGraph4D``, a list of predicted graphs, or a prediction file path.
    ``ground_truth``: GT graphs carrying ``num_points`` (as the readers make them), or ``(PointSequence, graph)``
    pairs such as a dataset of :func:`spade4d.data.psg4d.open_point_clouds`. ``options``: :class:`Options4D`
    fields (``ks``, ``graph_constraint``, ``top_pairs``, ``penalize_extra_frames``, thresholds). A GT sequence
    without a prediction scores 0."""
    import os

    from spade4d.evaluation.predictions import PredictionFile4D

    file = PredictionFile4D(predictions) if isinstance(predictions, (str, os.PathLike)) else None
    if file is None and not isinstance(predictions, dict):
        predictions = {g.video_id: g for g in predictions}
    ev = Evaluator4D(Options4D(**options), predicates=predicates or getattr(ground_truth, "predicates", None))
    for item in ground_truth:
        gt = item[1] if isinstance(item, tuple) else item
        if file is not None:
            pred = file.get(gt.video_id, gt.num_points) if gt.video_id in file else None
        else:
            pred = predictions.get(gt.video_id)
        ev.process(gt, pred)
    return ev.evaluate()
