"""The ``spade4d`` commands on RGB video (PVSG layout, docs/formats.md; the model, docs/video.md):
``finetune-video``, ``evaluate-video``, and ``infer`` with a video model."""

from __future__ import annotations

import argparse
import logging

from spade4d import cli_types as T

log = logging.getLogger("spade4d")


def cmd_evaluate_video(args: argparse.Namespace) -> int:
    from spade4d.data.pvsg import PVSG
    from spade4d.evaluation.video import evaluate_video_split

    options, unseen = T.metric_options(args)
    ds = PVSG(args.root, args.split, args.ann)
    report = evaluate_video_split(ds, args.pred, args.out, options, progress=not args.quiet, unseen=unseen)
    log.info(report.text())
    return 0


def infer_video(args: argparse.Namespace, pipe) -> int:
    """``infer`` with a video model: every video of a PVSG-layout ``--root`` split, or the video file ``--input``."""
    from spade4d.data.video import PVSGVideos, VideoFile
    from spade4d.inference.video import predict_videos

    if args.input:
        ds = VideoFile(args.input)
    elif args.root:
        ds = PVSGVideos(args.root, args.split, args.ann)
    else:
        raise ValueError("pass --root (a PVSG-layout folder) or --input (a video file)")
    path, n = predict_videos(pipe, ds, args.out, args.video, progress=not args.quiet, core_2d=args.core_2d)
    log.info(f"wrote {path} ({n} videos, spade4d-predictions-video)")
    return 0


def cmd_finetune_video(args: argparse.Namespace) -> int:
    from spade4d.training.finetune_4d import finetune_4d, video_preset

    flags = ("steps", "lr", "warmup", "seed", "clips_per_step", "checkpoint_every", "mixed_precision", "transfer_parts")
    named = {k: getattr(args, k) for k in flags}
    cfg = video_preset(args.preset, args.config, args.overrides, args.stride, bool(args.init_from_2d), **named)
    res = finetune_4d(
        args.root,
        args.out,
        cfg,
        split=args.split,
        resume=args.resume,
        init_from=args.init_from,
        progress=not args.quiet,
        init_from_2d=args.init_from_2d,
        fmt="pvsg-video",
        annotation=args.ann,
        stop_after=args.stop_after,
    )
    if res.model_dir is not None:
        log.info(f"video model saved to {res.model_dir}")
    return 0


def _pvsg_args(s: argparse.ArgumentParser, split: str) -> None:
    s.add_argument("--root", required=True, help="a PVSG-layout folder: pvsg.json, <source>/videos, <source>/masks")
    s.add_argument("--ann", default=None, help="the annotation (default: <root>/pvsg.json)")
    s.add_argument("--split", default=split)


def add_finetune_video(sub) -> None:
    s = T.command(
        sub, cmd_finetune_video, "finetune-video", help="train the video scene-graph model (accelerate; resumable)"
    )
    _pvsg_args(s, "train")
    T.training_args(s)
    s.add_argument("--stride", type=T.positive_int, default=4, help="pixels per cell side (docs/video.md)")
    s.add_argument("--init-from", default=None, help="a saved video model folder to start from")
    s.add_argument(
        "--init-from-2d", default=None, help="a 2D core (pretrain-2d's <out>/model): its features and layers"
    )


def render_video_predictions(args: argparse.Namespace) -> int:
    """``render --pred`` with a video prediction file: its masks, labels and relations drawn on the frames of the
    video in the PVSG-layout ``--root`` (PNG per frame and a GIF in ``--out``)."""
    from pathlib import Path

    from spade4d.data.video import PVSGVideos
    from spade4d.evaluation.video import PredictionFileVideo
    from spade4d.viz.video import render_video

    preds = PredictionFileVideo(args.pred)
    ds = PVSGVideos(args.root, args.split, args.ann)
    vid = args.video or next((v for v in ds.video_ids() if v in preds), None)
    if vid is None or vid not in preds:
        raise ValueError(f"{args.pred}: no prediction for {'video ' + repr(vid) if vid else 'any video of the split'}")
    i = ds.index_of(vid)
    graph = preds.get(vid, ds.num_frames(i), ds.size(i))
    out = render_video(
        lambda t: ds.frame_source.get(vid, t)[0], graph, Path(args.out), args.frames, args.top_k, args.min_score,
        args.fps, progress=not args.quiet,
    )  # fmt: skip
    log.info(f"wrote {len(out['frames'])} frames and {out['gif']}")
    return 0


def add_evaluate_video(sub) -> None:
    s = T.command(
        sub, cmd_evaluate_video, "evaluate-video", help="video R@K / mR@K of a prediction file (docs/metrics.md)"
    )
    _pvsg_args(s, "val")
    s.add_argument("--pred", required=True, help="a spade4d-predictions-video file")
    s.add_argument("--out", required=True, help="metrics JSON (a per-predicate PNG is written beside it)")
    T.metric_args(s)
