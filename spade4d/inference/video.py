"""Inference of a video model (``finetune-video``'s, docs/video.md): a PVSG-layout split or a plain video file in,
a ``spade4d-predictions-video`` file (pixel masks) out. The model runs on the cells of each frame as the 4D model
runs on points; cell masks become pixel masks of the frame size."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def check_video_model(model, where: str = "") -> dict:
    """The model's cell-grid settings; a point-cloud model is refused in one line."""
    video = model.config.video
    if not video:
        raise ValueError(f"{where or 'the model'}: not a video model (train one with spade4d finetune-video)")
    return video


def predict_videos(
    pipe, ds, out: str | os.PathLike, video_ids: Sequence[str] | None = None, progress=True, core_2d=None
):
    """Run :class:`~spade4d.inference.pipeline.Pipeline4D` ``pipe`` (a video model, ``ds.frame_source`` as its RGB
    source) on every video of ``ds`` (:class:`~spade4d.data.video.PVSGVideos` or
    :class:`~spade4d.data.video.VideoFile`), or those of ``video_ids``, and write ``out``. No mask is read.
    ``core_2d`` (a ``pretrain-2d`` model folder): the 2D core's instance masks of each frame join the model's tubes
    as unseen objects (docs/open-vocabulary.md; a frame's cells are its pixels, so nothing is lifted through
    depth). Returns the path and the number of videos."""
    from tqdm import tqdm

    from spade4d.data.video import pixel_graph
    from spade4d.evaluation.video import write_predictions_video
    from spade4d.inference.pipeline import proposal_source, select_ids

    video = check_video_model(pipe.model)
    ds.use_grid(int(video["stride"]), pipe.model.config.voxel_size)
    pipe.rgb_source = ds.frame_source if pipe.model.lift is not None else None
    if core_2d is not None:
        device = next(pipe.model.parameters()).device
        pipe.proposals = proposal_source(pipe.model, core_2d, ds.frame_source, device)
    ids = select_ids(ds.video_ids(), video_ids, "video")

    def items():
        for vid in tqdm(ids, desc="infer (video)", disable=not progress):
            i = ds.index_of(vid)
            height, width = ds.size(i)
            graph = pipe(ds.cells(i), vid)
            yield pixel_graph(graph, ds.frame_source.grid(height, width)), height, width

    return Path(write_predictions_video(out, items())), len(ids)
