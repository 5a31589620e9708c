"""Scoring a prediction file against a dataset split and writing the report (``evaluate-4d`` / ``evaluate-2d``
and the demo call these)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)


@dataclass
class Report:
    """The metrics, the files written (``json``, ``png``), the table to print and what the user should know."""

    metrics: dict
    paths: dict[str, Path]
    table: str
    notes: list[str] = field(default_factory=list)
    predictions: object = None  # the opened prediction file (4D: a PredictionFile4D), for figures of the same run

    def text(self, more_notes=()) -> str:
        """What a command prints: the table, every note (``more_notes``: the dataset's own), the files written."""
        notes = [f"note: {n}" for n in [*self.notes, *more_notes]]
        return "\n".join([self.table, *notes, f"wrote {self.paths['json']} and {self.paths['png']}"])


class OutsideVocabulary:
    """Predicted object labels and predicates the evaluation vocabulary lacks: they can match no ground truth, so
    they score 0; counted (and warned about) rather than passed over in silence."""

    def __init__(self, classes, predicates):
        self.classes, self.predicates = set(classes), set(predicates)
        self.objects = self.relations = 0
        self.names: dict[str, int] = {}

    def count(self, graph) -> None:
        for o in graph.objects:
            if o.label not in self.classes:
                self.objects += 1
                self.names[o.label] = self.names.get(o.label, 0) + 1
        for r in graph.relations:
            if r.predicate not in self.predicates:
                self.relations += 1
                self.names[r.predicate] = self.names.get(r.predicate, 0) + 1

    def ranked(self) -> list[tuple[str, int]]:
        """The names and their counts, most frequent first."""
        return sorted(self.names.items(), key=lambda kv: (-kv[1], kv[0]))

    def as_dict(self) -> dict:
        return {"objects": self.objects, "relations": self.relations, "names": dict(self.ranked()[:20])}

    def describe(self) -> str:
        names = ", ".join(repr(n) for n, _ in self.ranked()[:5])
        return (
            f"{self.objects} predicted objects and {self.relations} relations carry names outside the evaluation "
            f"vocabulary ({names}); they match no ground truth and score 0 (labels_outside_vocabulary in the metrics)"
        )


def relations_with_names(graph, classes, predicates, touching: bool = True):
    """``graph`` keeping only the relations whose subject class, object class or predicate is among ``classes`` /
    ``predicates`` (``touching=False``: only those with none of them). Objects stay, so masks still match."""
    from dataclasses import replace

    classes, predicates = set(classes), set(predicates)
    label = {o.id: o.label for o in graph.objects}

    def touches(r) -> bool:
        return r.predicate in predicates or label.get(r.subject) in classes or label.get(r.object) in classes

    return replace(graph, relations=[r for r in graph.relations if touches(r) == touching])


def unseen_recall(evaluators: dict, ks) -> dict:
    """``{"oov": {...}, "in_vocabulary": {...}}``: R@K and the GT relation count of each part."""
    out = {}
    for part, ev in evaluators.items():
        m = ev.evaluate()
        out[part] = {**{f"R@{k}": m[f"R@{k}"] for k in ks}, "num_gt_relations": m["num_gt_relations"]}
    return out


def evaluate_4d_split(
    ds,
    pred: str | os.PathLike,
    out: str | os.PathLike,
    options=None,
    label: dict | None = None,
    progress=True,
    unseen: tuple[list[str], list[str]] | None = None,
) -> Report:
    """4D R@K / mR@K (docs/metrics.md) of the prediction file ``pred`` on the dataset split ``ds`` (an opened
    point-cloud dataset), streaming sequence by sequence; ``label`` (format, split) is recorded in the metrics.
    Writes ``out`` (JSON) and the per-predicate chart beside it. (What the dataset itself should tell the user,
    :func:`spade4d.data.datasets.dataset_notes`, is the caller's to add.) ``unseen``: (classes, predicates) the
    training never showed; the metrics then also hold the recall of the GT relations that involve one of them
    (``oov``) and of the others (``in_vocabulary``)."""
    from spade4d.evaluation import Evaluator4D, Options4D, PredictionFile4D
    from spade4d.evaluation.report import format_table, write_report

    label = label or {}
    split = label.get("split", "")
    preds = PredictionFile4D(pred)
    missing = [v for v in ds.video_ids() if v not in preds]
    options = options or Options4D()
    ev = Evaluator4D(options, predicates=ds.predicates)
    parts = {p: Evaluator4D(options, predicates=ds.predicates) for p in ("oov", "in_vocabulary")} if unseen else {}
    outside = OutsideVocabulary(ds.classes, ds.predicates)
    for points, gt in tqdm(ds, total=len(ds), desc="evaluate-4d", disable=not progress):
        graph = preds.get(gt.video_id, points.counts.tolist()) if gt.video_id in preds else None
        if graph is not None:
            outside.count(graph)
        ev.process(gt, graph)
        for part, part_ev in parts.items():
            part_ev.process(relations_with_names(gt, *unseen, touching=part == "oov"), graph)
    metrics = ev.evaluate()
    metrics["labels_outside_vocabulary"] = outside.as_dict()
    if unseen:
        metrics.update(
            unseen_recall(parts, options.ks), unseen={"classes": list(unseen[0]), "predicates": list(unseen[1])}
        )
    if outside.objects or outside.relations:
        logger.warning(f"{pred}: {outside.describe()}")
    metrics.update(
        **label,
        prediction_file=str(pred),
        sequences_without_predictions=len(missing),
        missing_frames=ds.stats["missing_frames"],
        unrecallable_gt_relations=ds.stats["unrecallable_relations"],
    )
    paths = write_report(metrics, out, title=f"4D recall per predicate ({split})")
    n = metrics["num_gt_relations"]
    table = format_table(metrics, f"4D scene graph recall, {split} split ({len(ds)} sequences, {n} GT relations)")
    notes = [f"{len(missing)} sequences have no predictions and score 0"] if missing else []
    if unseen:
        o, i = metrics["oov"], metrics["in_vocabulary"]
        k = 50 if 50 in options.ks else options.ks[0]
        notes.append(
            f"R@{k} {o[f'R@{k}']:.2f} on the {o['num_gt_relations']} GT relations with a name training never showed "
            f"(OOV: {', '.join([*unseen[0], *unseen[1]])}), {i[f'R@{k}']:.2f} on the other {i['num_gt_relations']}"
        )
    extra = set(preds.video_ids()) - set(ds.video_ids())
    if extra:
        notes.append(f"{len(extra)} sequences of {pred} are not in split {split!r} and were not scored")
    return Report(metrics, paths, table, notes, preds)


def evaluate_2d_split(ds, pred: str | os.PathLike, out: str | os.PathLike, options, progress=True) -> Report:
    """2D PSG R@K / mR@K (docs/metrics.md) of the prediction file ``pred`` on ``ds`` (a PSG split); with
    ``options.single_mask_per_object`` off, a relation's own subject/object masks are used where it has them."""
    from spade4d.evaluation import Evaluator2D, PredictionFile2D
    from spade4d.evaluation.predictions import triplet_masks_2d
    from spade4d.evaluation.report import format_table, write_report

    preds = PredictionFile2D(pred)
    ev = Evaluator2D(ds.predicates, options)
    per_triplet = not options.single_mask_per_object
    with_triplets = 0
    for gt in tqdm(ds, total=len(ds), desc="evaluate-2d", disable=not progress):
        p = preds.get(gt.image_id, (gt.height, gt.width)) if gt.image_id in preds else None
        triplets = None
        if p is not None and per_triplet:
            triplets = triplet_masks_2d(preds, gt.image_id, (gt.height, gt.width))
            with_triplets += len(triplets)
        ev.process(gt, p, triplets)
    metrics = ev.evaluate()
    metrics.update(split=ds.split, prediction_file=str(pred))
    notes = []
    if per_triplet:
        metrics["relations_with_triplet_masks"] = with_triplets
        if not with_triplets:
            notes.append("--per-triplet-masks: no relation carries subject_mask / object_mask; object masks used")
    paths = write_report(metrics, out, title=f"2D recall per predicate ({ds.split})")
    table = format_table(metrics, f"2D scene graph recall, {ds.split} split ({metrics['num_images']} images)")
    return Report(metrics, paths, table, notes, preds)
