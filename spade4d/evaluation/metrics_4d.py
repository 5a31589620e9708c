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

The fast path below packs only the (object, frame) masks that some class-matching candidate can test into one
bitset table (popcounting each row once), computes the per-frame IoU of exactly the (predicted, GT) object pairs
those candidates need with one batched AND + popcount, and then scores all candidates of a GT relation at once.
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


class PackedMasks:
    """The point masks of chosen (object, frame) items packed into one ``(M + 1, W)`` uint64 bitset table.

    Row 0 is all zeros and stands for every item that was not packed (absent mask, or a frame that cannot
    matter). ``rows(key)`` gives an object's ``(T,)`` row indices; ``counts`` holds each row's popcount, computed
    once and reused by every pair that reads the row.
    """

    def __init__(self, items: dict[Any, tuple[dict[int, np.ndarray], np.ndarray]], num_frames: int, width: int):
        # items: key -> (masks by frame, boolean (T,) frames to pack)
        self.index: dict[Any, np.ndarray] = {}
        chosen: list[np.ndarray] = []
        for key, (masks, frames) in items.items():
            idx = np.zeros(num_frames, dtype=np.int64)
            for t in np.flatnonzero(frames).tolist():
                m = masks.get(t)
                if m is not None:
                    chosen.append(m)
                    idx[t] = len(chosen)
            self.index[key] = idx
        packed = np.zeros((len(chosen) + 1, width * 8), dtype=np.uint8)
        for r, m in enumerate(chosen, start=1):  # packing row by row reads each bool mask once, without a copy
            b = np.packbits(m)
            packed[r, : len(b)] = b
        self.words = packed.view(np.uint64)  # (M + 1, W)
        self.counts = np.bitwise_count(self.words).sum(-1, dtype=np.int64)

    def rows(self, key: Any) -> np.ndarray:
        return self.index[key]

    def nonempty(self, key: Any) -> np.ndarray:
        return self.counts[self.index[key]] > 0


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
    only the frames where it can matter; the masks are packed once into a bitset table and all pairs are scored
    in one batched AND + popcount.
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
    pred_on = _frames_matrix([r.spans for r in ranked], T)  # (R, T)
    by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k, r in enumerate(ranked):
        by_pair[(pobj[r.subject].label, pobj[r.object].label)].append(k)
    codes: dict[str, int] = {}
    pred_code = np.array([codes.setdefault(r.predicate, len(codes)) for r in ranked])

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
        pair = by_pair.get((cs, co), [])  # the triplet candidates are those of these with the GT predicate
        span = spans_to_frames(r.spans, T)
        plan.append((r, pair, span))
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
    gt_tested: dict[int, np.ndarray] = {}
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
            gt_tested[pg[1]] = gt_tested.get(pg[1], np.zeros(T, dtype=bool)) | f
    width = (max(gt.num_points) + 63) // 64 if gt.num_points else 1
    # GT masks are packed only where some candidate tests them; elsewhere in a span only emptiness matters
    gt_packed = PackedMasks({i: (gobj[i].masks, gt_tested[i]) for i in gt_tested}, T, width)
    pred_packed = PackedMasks({i: (pobj[i].masks, pred_frames[i]) for i in {p for p, _ in needed}}, T, width)
    pairs = sorted(needed)
    if pairs:
        active = np.stack([pair_frames[pg] for pg in pairs])  # (K, T)
        p_rows = np.stack([pred_packed.rows(p) for p, _ in pairs])
        g_rows = np.stack([gt_packed.rows(g) for _, g in pairs])
        good = pair_ious(p_rows, g_rows, pred_packed, gt_packed, active) >= options.mask_iou_threshold  # (K, T)
    else:
        good = np.zeros((0, T), dtype=bool)
    base = max(gobj) + 1
    pair_keys = np.array([p * base + g for p, g in pairs], dtype=np.int64)  # sorted, as ``pairs`` is
    gt_nonempty = {}  # (T,) each, on the frames of the GT object's spans
    for i, f in gt_frames.items():
        tested = gt_tested.get(i)
        ne = gt_packed.nonempty(i) if tested is not None else np.zeros(T, dtype=bool)
        masks = gobj[i].masks
        for t in np.flatnonzero(f if tested is None else f & ~tested).tolist():
            m = masks.get(t)
            ne[t] = m is not None and bool(m.any())
        gt_nonempty[i] = ne

    outcomes = []
    for r, pair, span in plan:
        gt_on = span & gt_nonempty[r.subject] & gt_nonempty[r.object]
        rank = weak = pair_rank = None
        if pair and gt_on.any():
            c = np.asarray(pair)
            ks = np.searchsorted(pair_keys, subj[c] * base + r.subject)
            ko = np.searchsorted(pair_keys, obj[c] * base + r.object)
            hit = gt_on[None, :] & pred_on[c] & good[ks] & good[ko]  # (C, T)
            if options.penalize_extra_frames:
                denom = (gt_on[None, :] | pred_on[c]).sum(1)
            else:
                denom = np.full(len(c), gt_on.sum())
            viou = hit.sum(1) / np.maximum(denom, 1)
            same = pred_code[c] == codes.get(r.predicate, -1)
            rank = _first(c, same & (viou >= options.viou_threshold))
            weak = _first(c, same & (viou >= options.weak_viou_threshold))
            pair_rank = _first(c, viou >= options.viou_threshold)
        outcomes.append(GTOutcome(gt.video_id, r.subject, r.object, r.predicate, rank, weak, pair_rank))
    return outcomes


def _first(cands: np.ndarray, ok: np.ndarray) -> int | None:
    i = np.flatnonzero(ok)
    return int(cands[i[0]]) if i.size else None


def _frames_matrix(span_lists: Sequence[Sequence[tuple[int, int]]], num_frames: int) -> np.ndarray:
    """``(R, T)`` boolean frame indicators of R span lists (inclusive spans, clipped to the sequence)."""
    rows = [k for k, spans in enumerate(span_lists) for _ in spans]
    flat = np.array([se for spans in span_lists for se in spans], dtype=np.int64).reshape(-1, 2)
    edges = np.zeros((len(span_lists), num_frames + 1), dtype=np.int32)
    if len(flat):
        s = np.clip(flat[:, 0], 0, num_frames)
        e = np.clip(flat[:, 1] + 1, 0, num_frames)
        keep = e > s
        np.add.at(edges, (np.asarray(rows)[keep], s[keep]), 1)
        np.add.at(edges, (np.asarray(rows)[keep], e[keep]), -1)
    return np.cumsum(edges, axis=1)[:, :num_frames] > 0


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
