"""Video scene graphs on pixel masks: the ``spade4d-predictions-video`` file and video R@K / mR@K.

A video prediction is a :class:`~spade4d.structures.SceneGraph4D` whose frame ``t`` holds ``height * width``
"points", the pixels in row-major order, so the 4D matcher of :mod:`spade4d.evaluation.metrics_4d` scores it
unchanged (docs/metrics.md, "Video"). Nothing is decoded up front: ground-truth masks are read from PVSG's P-mode
PNGs and predicted masks from their RLEs only for the (object, frame) items the matcher asks for, each once, so
memory stays bounded by one video's packed candidate masks whatever the video's length.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from spade4d import rle
from spade4d.evaluation.predictions import PredictionFileError, _check_scores, _read
from spade4d.io import write_json
from spade4d.structures import PRED_VERSION, ObjectTube, SceneGraph4D, StructureError

PRED_FORMAT_VIDEO = "spade4d-predictions-video"


class LazyMasks(Mapping):
    """Frame -> flattened boolean pixel mask, computed by ``read(t)`` when asked (``None``: empty on that frame).

    ``frames`` are the frames that may hold a mask; ``nonempty(t)``, when given, answers "has the mask a pixel on
    frame t" without building the mask (the matcher uses it to find the GT frames).
    """

    def __init__(
        self,
        frames: Iterable[int],
        read: Callable[[int], np.ndarray | None],
        nonempty: Callable[[int], bool] | None = None,
    ):
        self._frames = sorted(set(frames))
        self._set = set(self._frames)
        self._read = read
        if nonempty is not None:
            self.nonempty = nonempty

    def get(self, t, default=None):
        m = self._read(t) if t in self._set else None
        return default if m is None else m

    def __getitem__(self, t) -> np.ndarray:
        m = self.get(t)
        if m is None:
            raise KeyError(t)
        return m

    def __iter__(self) -> Iterator[int]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)


class PaletteFrames:
    """One video's ground-truth mask frames (``read(t)`` -> ``(H, W)`` object ids), read on demand; the last
    ``keep`` frames and every frame's set of ids are kept. A frame of another size is refused with its path."""

    def __init__(self, read: Callable[[int], np.ndarray], size: tuple[int, int], where: Callable[[int], str], keep=4):
        self.read, self.size, self.where, self.keep = read, tuple(size), where, keep
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._ids: dict[int, frozenset[int]] = {}

    def frame(self, t: int) -> np.ndarray:
        f = self._frames.get(t)
        if f is None:
            f = np.asarray(self.read(t))
            if f.shape != self.size:
                raise ValueError(f"{self.where(t)}: mask is {f.shape[1::-1]} (W, H), the video is {self.size[::-1]}")
            f = f.reshape(-1)
            self._frames[t] = f
            if len(self._frames) > self.keep:
                self._frames.popitem(last=False)
            if t not in self._ids:  # a frame read again (after leaving the cache) keeps its id set
                self._ids[t] = frozenset(np.unique(f).tolist())
        else:
            self._frames.move_to_end(t)
        return f

    def ids(self, t: int) -> frozenset[int]:
        if t not in self._ids:
            self.frame(t)
        return self._ids[t]

    def masks(self, object_id: int, num_frames: int) -> LazyMasks:
        def read(t):
            return self.frame(t) == object_id if object_id in self.ids(t) else None

        return LazyMasks(range(num_frames), read, lambda t: object_id in self.ids(t))


def ground_truth_graph(video_id: str, num_frames: int, size, labels: Mapping[int, str], relations, frames):
    """The GT of one video as a :class:`SceneGraph4D` of pixel masks read lazily from ``frames``
    (:class:`PaletteFrames`)."""
    h, w = size
    objects = [ObjectTube(int(i), name) for i, name in labels.items()]
    g = SceneGraph4D(video_id, num_frames, objects, list(relations), num_points=[h * w] * num_frames)
    for o in g.objects:
        o.masks = frames.masks(o.id, num_frames)
    return g


def video_entry(graph: SceneGraph4D, height: int, width: int) -> dict[str, Any]:
    """The per-video entry of a ``spade4d-predictions-video`` file: the 4D entry with ``height`` and ``width``
    and one RLE of ``[height, width]`` per (object, frame)."""
    entry = replace(graph, objects=[replace(o, masks={}) for o in graph.objects], num_points=None).to_json()
    for o, out in zip(graph.objects, entry["objects"]):
        out["masks"] = {
            str(t): rle.encode_mask(np.asarray(m, dtype=bool).reshape(height, width))
            for t, m in sorted(o.masks.items())
            if np.any(m)
        }
    return {"num_frames": entry["num_frames"], "height": int(height), "width": int(width), **entry}


def write_predictions_video(path: str | os.PathLike, videos: Iterable[tuple[SceneGraph4D, int, int]]) -> Path:
    """Write ``(graph, height, width)`` triples as a ``spade4d-predictions-video`` file (atomically); a graph's
    masks are boolean ``(height, width)`` arrays or their row-major flattening."""
    seqs = {g.video_id: video_entry(g, h, w) for g, h, w in videos}
    return write_json(path, {"format": PRED_FORMAT_VIDEO, "version": PRED_VERSION, "sequences": seqs})


class PredictionFileVideo:
    """A ``spade4d-predictions-video`` file. ``get(video_id, num_frames, (height, width))`` validates one video
    (sizes checked without decoding) and returns its graph with masks decoded when the matcher reads them."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.sequences: dict[str, Any] = _read(self.path, PRED_FORMAT_VIDEO, "sequences")["sequences"]
        for vid, entry in self.sequences.items():
            if not isinstance(entry, Mapping):
                raise PredictionFileError(f"{self.path}: video {vid!r}: entry is a {type(entry).__name__}")

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.sequences

    def video_ids(self) -> list[str]:
        return list(self.sequences)

    def get(self, video_id: str, num_frames: int | None = None, size: tuple[int, int] | None = None) -> SceneGraph4D:
        where = f"{self.path}: video {video_id!r}"
        entry = dict(self.sequences[video_id])
        _check_scores(self.path, f"video {video_id!r}", entry)
        expected = dict(zip(("num_frames", "height", "width"), (num_frames, *(size or (None, None)))))
        for field, value in expected.items():
            got = entry.get(field)
            if isinstance(got, bool) or not isinstance(got, int) or got <= 0:
                raise PredictionFileError(f"{where}: field {field!r} is {got!r}, expected a positive integer")
            if value is not None and got != value:
                raise PredictionFileError(f"{where}: field {field!r} is {got}, the video's is {value}")
        h, w = entry.pop("height"), entry.pop("width")  # the rest is a 4D entry
        rles = {}
        objects = entry.get("objects")
        if isinstance(objects, list):
            stripped = []
            for k, o in enumerate(objects):
                if isinstance(o, Mapping) and isinstance(o.get("masks", {}), Mapping):
                    rles[k] = _checked_rles(o.get("masks", {}), (h, w), f"{where}: objects[{k}]")
                    o = {**o, "masks": {}}
                stripped.append(o)
            entry["objects"] = stripped
        try:
            g = SceneGraph4D.from_json(video_id, entry, context=f"video {video_id!r}")
        except (StructureError, rle.RLEError) as e:
            raise PredictionFileError(f"{self.path}: {e}") from None
        g.num_points = [h * w] * g.num_frames
        for k, o in enumerate(g.objects):
            o.masks = _lazy_rles(rles.get(k, {}), g.num_frames, f"{where}: object {o.id}")
        return g


def _checked_rles(masks: Mapping[str, Any], size: tuple[int, int], where: str) -> dict[int, Mapping]:
    """Frame index -> RLE dict, each checked for its frame key and ``size`` without decoding."""
    out = {}
    for key, r in masks.items():
        try:
            t = int(key)
        except ValueError:
            raise PredictionFileError(f"{where}: masks key {key!r} is not a frame index") from None
        if not isinstance(r, Mapping) or list(r.get("size", ())) != list(size):
            got = r.get("size") if isinstance(r, Mapping) else type(r).__name__
            raise PredictionFileError(f"{where}: mask of frame {t} has size {got!r}, the video is {list(size)}")
        out[t] = r
    return out


def _lazy_rles(rles: dict[int, Mapping], num_frames: int, where: str) -> LazyMasks:
    bad = [t for t in rles if not 0 <= t < num_frames]
    if bad:
        raise PredictionFileError(f"{where}: has a mask on frame {bad[0]}, outside 0..{num_frames - 1}")

    def read(t):
        try:
            return rle.decode_mask(rles[t], context=f"{where} frame {t}").reshape(-1)
        except rle.RLEError as e:
            raise PredictionFileError(str(e)) from None

    return LazyMasks(rles, read)


def evaluate_video_split(ds, pred: str | os.PathLike, out: str | os.PathLike, options=None, progress=True, unseen=None):
    """Video R@K / mR@K (docs/metrics.md, "Video") of the prediction file ``pred`` on ``ds`` (a
    :class:`~spade4d.data.pvsg.PVSG` split), streaming video by video; writes ``out`` (JSON) and the per-predicate
    chart beside it and returns a :class:`~spade4d.evaluation.run.Report`. ``unseen``: (classes, predicates) the
    training never showed, for the OOV / in-vocabulary split of the recall."""
    from tqdm import tqdm

    from spade4d.evaluation.metrics_4d import Evaluator4D, Options4D
    from spade4d.evaluation.report import format_table, write_report
    from spade4d.evaluation.run import OutsideVocabulary, Report, relations_with_names, unseen_recall

    preds = PredictionFileVideo(pred)
    options = options or Options4D()
    ev = Evaluator4D(options, predicates=ds.predicates)
    parts = {p: Evaluator4D(options, predicates=ds.predicates) for p in ("oov", "in_vocabulary")} if unseen else {}
    outside = OutsideVocabulary(ds.classes, ds.predicates)
    for i in tqdm(range(len(ds)), desc="evaluate-video", disable=not progress):
        ann, size = ds.annotation(i), ds.size(i)
        vid = ann.video_id
        frames = PaletteFrames(
            lambda t, vid=vid: ds.read_mask(vid, t), size, lambda t, vid=vid: str(ds.mask_path(vid, t))
        )
        graph = preds.get(vid, ann.num_frames, size) if vid in preds else None
        if graph is not None:
            outside.count(graph)
        ev.process(ground_truth_graph(vid, ann.num_frames, size, ann.labels, ann.relations, frames), graph)
        bare = SceneGraph4D(vid, ann.num_frames, [ObjectTube(i, n) for i, n in ann.labels.items()], ann.relations)
        for part, part_ev in parts.items():  # the same frames (and their cache), a part of the relations
            rels = relations_with_names(bare, *unseen, touching=part == "oov").relations
            part_ev.process(ground_truth_graph(vid, ann.num_frames, size, ann.labels, rels, frames), graph)
    metrics = ev.evaluate()
    metrics["labels_outside_vocabulary"] = outside.as_dict()
    if unseen:
        metrics.update(unseen_recall(parts, options.ks), unseen={"classes": unseen[0], "predicates": unseen[1]})
    missing = [v for v in ds.video_ids() if v not in preds]
    metrics.update(split=ds.split, prediction_file=str(pred), videos_without_predictions=len(missing))
    paths = write_report(metrics, out, title=f"video recall per predicate ({ds.split})")
    n = metrics["num_gt_relations"]
    table = format_table(metrics, f"video scene graph recall, {ds.split} split ({len(ds)} videos, {n} GT relations)")
    notes = [f"{len(missing)} videos have no predictions and score 0"] if missing else []
    if outside.objects or outside.relations:
        notes.append(outside.describe())
    extra = set(preds.video_ids()) - set(ds.video_ids())
    if extra:
        notes.append(f"{len(extra)} videos of {pred} are not in split {ds.split!r} and were not scored")
    return Report(metrics, paths, table, notes, preds)
