"""The Python entry point for inference: a trained 4D model folder in, a :class:`SceneGraph4D` per sequence out.

    import spade4d

    pipe = spade4d.Pipeline4D.from_pretrained("outputs/demo/finetune_4d/model")
    graph = pipe(points)                     # a PointSequence, or a list of per-frame (N, 3) xyz arrays
    graph.objects[0].label, graph.relations[0].predicate, graph.relations[0].spans

A model answers through its relation head; one trained with a SceneLLM answers through the chain (objects first,
then relations) with ``use_llm=True``. The head is the default: on the benchmark no chain (tiny or SmolLM2 LLM,
two turns or one) beat it, and it is several times faster (docs/experiments.md). ``spade4d infer`` is this pipeline
over a dataset split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from spade4d.inference.options import InferenceOptions
from spade4d.structures import PointSequence, SceneGraph4D

__all__ = ["InferenceOptions", "Pipeline4D", "as_point_sequence"]

log = logging.getLogger(__name__)


def as_point_sequence(points, video_id: str = "sequence") -> PointSequence:
    """A :class:`PointSequence` from itself, or from per-frame arrays: ``[xyz, ...]`` (grey colour) or
    ``[(xyz, rgb), ...]`` with rgb in [0, 1]."""
    if isinstance(points, PointSequence):
        return points
    if not isinstance(points, Sequence) or not len(points):
        raise ValueError("points must be a PointSequence or a non-empty list of per-frame (N, 3) arrays")
    xyz, rgb = [], []
    for t, f in enumerate(points):
        x, c = (f[0], f[1]) if isinstance(f, (tuple, list)) and len(f) == 2 else (f, None)
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"frame {t}: xyz has shape {x.shape}, expected (N, 3)")
        c = np.full_like(x, 0.5) if c is None else np.asarray(c, dtype=np.float32)
        if c.shape != x.shape:
            raise ValueError(f"frame {t}: rgb has shape {c.shape}, expected {x.shape}")
        xyz.append(x)
        rgb.append(c)
    return PointSequence.from_frames(xyz, rgb, video_id=video_id)


def select_ids(ids: Sequence[str], wanted: Sequence[str] | None, what: str = "sequence") -> list[str]:
    """``wanted`` (all of ``ids`` when empty), each checked to be one of ``ids``."""
    if not wanted:
        return list(ids)
    unknown = [v for v in wanted if v not in ids]
    if unknown:
        raise ValueError(f"no {what} {unknown[0]!r} in this split ({len(ids)} {what}s)")
    return list(wanted)


class Pipeline4D:
    """A trained 4D model (with its SceneLLM when it has one) ready to run on point-cloud sequences."""

    def __init__(self, model, options: InferenceOptions | None = None, rgb_source=None, proposals=None):
        self.model = model
        self.options = options or InferenceOptions()
        self.rgb_source = rgb_source
        self.proposals = proposals  # a Proposals2D: unseen objects found by the 2D core (docs/open-vocabulary.md)
        # rgb_source False: set per video later (a video model reads its frames from the video being run)
        if model.lift is not None and rgb_source is None:
            raise ValueError("this model lifts 2D features: pass rgb_root (the RGB frames and cameras)")

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike,
        device: str = "auto",
        classes: Sequence[str] | None = None,
        predicates: Sequence[str] | None = None,
        rgb_root: str | os.PathLike | None = None,
        core_2d: str | os.PathLike | None = None,
        **options,
    ) -> Pipeline4D:
        """Load ``model_dir`` (``finetune-4d``'s ``<out>/model``) onto ``device`` (``auto``: a CUDA GPU when there
        is one). ``classes`` / ``predicates`` replace the vocabulary (open vocabulary: any names); ``rgb_root``: the
        RGB frames and cameras, for models that lift 2D features and for ``core_2d`` (a ``pretrain-2d`` model
        folder whose instance masks add the objects the 4D model misses); ``options``: :class:`InferenceOptions`
        fields."""
        import torch

        from spade4d.models.model4d import Model4D

        unknown = sorted(set(options) - set(InferenceOptions.names()))
        if unknown:
            raise TypeError(f"unknown option {unknown[0]!r} (options: {', '.join(InferenceOptions.names())})")
        opts = InferenceOptions(**options)
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        model = Model4D.from_pretrained(model_dir)
        if classes or predicates:
            model.set_vocabulary(list(classes) if classes else None, list(predicates) if predicates else None)
        model.to(dev)
        rgb_source = proposals = None
        if rgb_root is not None:
            from spade4d.data.cameras import CameraFrames

            rgb_source = CameraFrames(rgb_root)
        if core_2d is not None:
            proposals = proposal_source(model, core_2d, rgb_source, dev)
        return cls(model, opts, rgb_source, proposals)

    def predict_split(self, ds, out: str | os.PathLike, video_ids: Sequence[str] | None = None, progress=True):
        """Run every sequence of the dataset split ``ds`` (or those of ``video_ids``) and write the prediction file
        ``out`` (docs/formats.md) as they come. Returns its path and the number of sequences."""
        from tqdm import tqdm

        from spade4d.evaluation.predictions import write_predictions_4d

        ids = select_ids(ds.video_ids(), video_ids)

        def graphs():
            for vid in tqdm(ids, desc="infer (SceneLLM)" if self.uses_llm else "infer", disable=not progress):
                seq, _ = ds[ds.index_of(vid)]
                yield self(seq, vid)

        return write_predictions_4d(out, graphs()), len(ids)

    @property
    def uses_llm(self) -> bool:
        return self.model.llm is not None and self.options.use_llm

    def check_frames(self, seq: PointSequence) -> list[str]:
        """Warn (logging, one line naming the sequence's source) when ``seq`` looks like another up axis or length
        unit than the model's training frames (:mod:`spade4d.data.frame_check`); returns the warnings."""
        from spade4d.data.frame_check import check_frames, sequence_frames

        if self.model.config.video:  # cells on the image plane: no up axis or unit to compare (docs/video.md)
            return []
        source = seq.source or f"sequence {seq.video_id!r}"
        found = check_frames(sequence_frames(seq), self.model.config.frames, source)
        for line in found:
            log.warning(line)
        return found

    def __call__(self, points, video_id: str | None = None) -> SceneGraph4D:
        """The predicted scene graph of one sequence (a :class:`PointSequence` or a list of per-frame arrays)."""
        seq = as_point_sequence(points, video_id or "sequence")
        vid = video_id or seq.video_id or "sequence"
        self.check_frames(seq)
        o = self.options
        if self.uses_llm:
            from spade4d.inference.chained import chained_predict

            graph = chained_predict(self.model, seq, vid, o, rgb_source=self.rgb_source)
        else:
            from spade4d.inference.infer_4d import predict_sequence

            graph = predict_sequence(self.model, seq, vid, window=o.window, rgb_source=self.rgb_source)
        if self.proposals is None:
            return graph
        cfg = self.model.config
        return self.proposals(graph, seq, vid, cfg.relation_threshold, cfg.min_span, cfg.max_relations)


def proposal_source(model, core_2d: str | os.PathLike, cameras, device):
    """The 2D core of ``core_2d`` naming ``model``'s vocabulary over ``cameras`` (the RGB frames + cameras)."""
    from spade4d.inference.proposals import Proposals2D

    if cameras is None:
        raise ValueError("the 2D core's proposals need the RGB frames and cameras: pass rgb_root / --rgb-root")
    cfg = model.config
    return Proposals2D.from_pretrained(core_2d, cameras, cfg.classes, cfg.predicates, device, seen=cfg.trained_classes)
