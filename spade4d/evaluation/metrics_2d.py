"""2D PSG R@K / mR@K (docs/metrics.md, the OpenPSG SGDet protocol).

* the top-K are the first K relations by score (stable order);
* graph constraint (default on): one predicate per (subject, object) pair, the highest-scoring, applied before
  the cut;
* a GT triplet is recalled when a top-K prediction has the same (subject class, predicate, object class) and
  subject and object IoU >= 0.5 (mask IoU; box IoU for box-only data such as VG);
* R@K: mean over images of recalled / GT; mR@K: per predicate, the mean over the images that contain it of that
  image's recall for it, then the mean over *all* predicates of the vocabulary (absent ones count 0, as OpenPSG
  divides by 56);
* an image without predictions scores 0, unless ``skip_empty`` (OpenPSG's behaviour: such images are skipped);
* ``single_mask_per_object`` (default on): each predicted object has one mask. Off: a relation may carry its own
  ``subject_mask`` / ``object_mask`` (the per-triplet setting several papers report, which inflates recall).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spade4d.structures import SceneGraph2D


@dataclass(frozen=True)
class Options2D:
    ks: tuple[int, ...] = (20, 50, 100)
    iou_threshold: float = 0.5
    graph_constraint: bool = True
    skip_empty: bool = False
    single_mask_per_object: bool = True
    iou_type: str = "mask"  # mask | box

    def __post_init__(self) -> None:
        if self.iou_type not in ("mask", "box"):
            raise ValueError(f"iou_type must be 'mask' or 'box', got {self.iou_type!r}")
        if not self.ks or any(k <= 0 for k in self.ks):
            raise ValueError(f"K values must be positive, got {self.ks}")


def _boxes(masks: np.ndarray) -> np.ndarray:
    """(K, 4) xyxy boxes (exclusive max) of (K, H, W) masks; empty masks give zero boxes."""
    out = np.zeros((len(masks), 4))
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


def pairwise_iou(a: np.ndarray, b: np.ndarray, iou_type: str = "mask") -> np.ndarray:
    """(A, B) IoU between two stacks of (H, W) masks (or of their bounding boxes)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    if iou_type == "box":
        ba, bb = _boxes(a), _boxes(b)
        lt = np.maximum(ba[:, None, :2], bb[None, :, :2])
        rb = np.minimum(ba[:, None, 2:], bb[None, :, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
        area_a = np.prod(ba[:, 2:] - ba[:, :2], axis=1)
        area_b = np.prod(bb[:, 2:] - bb[:, :2], axis=1)
        union = area_a[:, None] + area_b[None, :] - inter
    else:
        fa = a.reshape(len(a), -1).astype(np.float32)
        fb = b.reshape(len(b), -1).astype(np.float32)
        inter = fa @ fb.T
        union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class ImageOutcome:
    image_id: str
    predicates: list[str]  # of the GT relations
    ranks: list[int | None]  # best (lowest) rank of a matching prediction per GT relation
    has_predictions: bool


def match_image(
    gt: SceneGraph2D,
    pred: SceneGraph2D | None,
    options: Options2D = Options2D(),
    triplet_masks: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> ImageOutcome:
    """Outcome of one image. ``triplet_masks`` (relation index -> subject and object masks) is used when
    ``single_mask_per_object`` is off."""
    preds = [r.predicate for r in gt.relations]
    if pred is None or not pred.relations:
        return ImageOutcome(gt.image_id, preds, [None] * len(preds), pred is not None and bool(pred.relations))
    order = sorted(range(len(pred.relations)), key=lambda i: -pred.relations[i].score)
    if options.graph_constraint:
        seen, kept = set(), []
        for i in order:
            pair = (pred.relations[i].subject, pred.relations[i].object)
            if pair not in seen:
                seen.add(pair)
                kept.append(i)
        order = kept
    order = order[: max(options.ks)]
    gmasks = gt.masks()
    per_triplet = not options.single_mask_per_object and triplet_masks
    if per_triplet:
        sub = np.stack(
            [triplet_masks[i][0] if i in triplet_masks else pred.objects[pred.relations[i].subject].mask for i in order]
        )
        obj = np.stack(
            [triplet_masks[i][1] if i in triplet_masks else pred.objects[pred.relations[i].object].mask for i in order]
        )
        iou_s = pairwise_iou(sub, gmasks, options.iou_type)  # (R, G)
        iou_o = pairwise_iou(obj, gmasks, options.iou_type)
    else:
        obj_iou = pairwise_iou(pred.masks(), gmasks, options.iou_type)  # (P, G)
        iou_s = obj_iou[[pred.relations[i].subject for i in order]]
        iou_o = obj_iou[[pred.relations[i].object for i in order]]
    ranks: list[int | None] = []
    for g in gt.relations:
        key = (gt.objects[g.subject].label, g.predicate, gt.objects[g.object].label)
        best = None
        for rank, i in enumerate(order):
            r = pred.relations[i]
            if (pred.objects[r.subject].label, r.predicate, pred.objects[r.object].label) != key:
                continue
            if iou_s[rank, g.subject] >= options.iou_threshold and iou_o[rank, g.object] >= options.iou_threshold:
                best = rank
                break
        ranks.append(best)
    return ImageOutcome(gt.image_id, preds, ranks, True)


@dataclass
class Evaluator2D:
    """``reset / process(gt, pred) / evaluate``; ``predicates`` is the vocabulary mR@K averages over."""

    predicates: Sequence[str]
    options: Options2D = field(default_factory=Options2D)
    outcomes: list[ImageOutcome] = field(default_factory=list)

    def reset(self) -> None:
        self.outcomes = []

    def process(self, gt: SceneGraph2D, pred: SceneGraph2D | None, triplet_masks=None) -> ImageOutcome:
        out = match_image(gt, pred, self.options, triplet_masks)
        self.outcomes.append(out)
        return out

    def evaluate(self) -> dict[str, Any]:
        return summarise_2d(self.outcomes, self.predicates, self.options)


def summarise_2d(outcomes: Sequence[ImageOutcome], predicates: Sequence[str], options: Options2D) -> dict[str, Any]:
    used = [o for o in outcomes if o.predicates and (o.has_predictions or not options.skip_empty)]
    m: dict[str, Any] = {}
    per_pred: dict[str, dict[int, list[float]]] = {p: defaultdict(list) for p in predicates}
    for k in options.ks:
        recalls = []
        for o in used:
            hit = [r is not None and r < k for r in o.ranks]
            recalls.append(float(np.mean(hit)))
            by_p: dict[str, list[bool]] = defaultdict(list)
            for p, h in zip(o.predicates, hit):
                by_p[p].append(h)
            for p, hs in by_p.items():
                per_pred.setdefault(p, defaultdict(list))[k].append(float(np.mean(hs)))
        m[f"R@{k}"] = 100.0 * float(np.mean(recalls)) if recalls else 0.0
    vocab = list(predicates) + [p for p in per_pred if p not in predicates]
    for k in options.ks:
        vals = [float(np.mean(per_pred[p][k])) if per_pred[p][k] else 0.0 for p in vocab]
        m[f"mR@{k}"] = 100.0 * float(np.mean(vals)) if vals else 0.0
    m["per_predicate"] = {
        p: {
            "images": len(per_pred[p][options.ks[0]]),
            **{f"R@{k}": 100.0 * float(np.mean(per_pred[p][k])) if per_pred[p][k] else 0.0 for k in options.ks},
        }
        for p in vocab
    }
    m["num_images"] = len(used)
    m["num_images_without_predictions"] = sum(1 for o in outcomes if o.predicates and not o.has_predictions)
    m["num_gt_relations"] = sum(len(o.predicates) for o in used)
    opts = asdict(options)
    opts["ks"] = list(options.ks)
    m["options"] = opts
    return m
