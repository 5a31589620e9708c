"""The ``spade4d`` commands that show a scene graph: ``render`` (figures) and ``view`` (a rerun recording)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from spade4d import cli_types as T

log = logging.getLogger("spade4d")


def _figure_options(args: argparse.Namespace):
    from spade4d.viz.figures import FigureOptions

    return FigureOptions(top_k=args.top_k, min_score=args.min_score, view=getattr(args, "view", "front"))


def _sequence(args: argparse.Namespace):
    from spade4d.data.datasets import open_4d_dataset
    from spade4d.viz.render import sequence_to_render

    ds = open_4d_dataset(args.format, args.root, args.split, args.ann)
    if len(ds) == 0:
        raise ValueError(f"split {args.split!r} of {args.root} holds no sequences")
    return sequence_to_render(ds, args.video, args.pred, getattr(args, "frames", None))


def cmd_render(args: argparse.Namespace) -> int:
    from spade4d.viz.render import render_sequence, show_interactive

    if args.pred and Path(args.pred).is_file():
        with open(args.pred, "rb") as f:
            if b"spade4d-predictions-video" in f.read(4096):  # masks on the frames of a video (docs/video.md)
                from spade4d.cli_video import render_video_predictions

                return render_video_predictions(args)

    options = _figure_options(args)
    points, graph, title, gt = _sequence(args)
    if args.interactive:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ValueError("--interactive needs a display (DISPLAY is not set); render to PNG files instead")
        show_interactive(points, graph, (args.frames or [0])[0])
        return 0
    out = render_sequence(
        points,
        graph,
        Path(args.out),
        width=args.width,
        height=args.height,
        frames=args.frames,
        fps=args.fps,
        title=title,
        progress=not args.quiet,
        options=options,
        ground_truth=gt,
    )
    log.info(f"wrote {len(out['frames'])} frames, {out['gif']} and {out['timeline']}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from spade4d.viz.viewer import open_viewer, write_recording

    points, graph, _title, gt = _sequence(args)
    truth, prediction = (gt, graph) if args.pred else (graph, None)
    out = Path(args.out or f"{graph.video_id}.rrd")
    write_recording(out, points, truth, prediction, _figure_options(args), progress=not args.quiet)
    log.info(
        f"wrote {out} ({points.num_frames} frames; {'ground truth and prediction' if args.pred else 'ground truth'})"
    )
    if not args.no_open:
        log.info(open_viewer(out))
    return 0


def _relation_filters(s: argparse.ArgumentParser) -> None:
    s.add_argument("--video", default=None, help="video id (default: the split's first)")
    s.add_argument(
        "--pred", default=None, help="a spade4d-predictions-4d file (shown with its GT) or -video file (--root: PVSG)"
    )
    s.add_argument("--top-k", type=T.positive_int, default=10, help="relations drawn per frame, best first")
    s.add_argument("--min-score", type=float, default=0.0, help="leave out relations scored below this")


def add_render(sub) -> None:
    s = T.command(sub, cmd_render, "render", help="render a sequence's scene graph (ground truth or a prediction file)")
    T.dataset_args(s, "test")
    _relation_filters(s)
    s.add_argument("--out", default="outputs/render")
    s.add_argument("--frames", type=T.frames, default=None, help="comma-separated frame indices (default: all)")
    s.add_argument("--width", type=T.image_side, default=960)
    s.add_argument("--height", type=T.image_side, default=720)
    s.add_argument("--fps", type=T.positive_float, default=4.0)
    s.add_argument("--view", default="front", choices=["front", "top", "side", "orbit"], help="camera direction")
    s.add_argument("--interactive", action="store_true", help="open an Open3D window (needs a display)")


def add_view(sub) -> None:
    s = T.command(sub, cmd_view, "view", help="write a rerun recording (.rrd) of a sequence and open the viewer")
    T.dataset_args(s, "test")
    _relation_filters(s)
    s.add_argument("--out", default=None, help="the .rrd file (default: <video>.rrd)")
    s.add_argument("--no-open", action="store_true", help="only write the recording")
