"""The ``spade4d`` command.

Every sub-command is a function taking parsed arguments; errors a user can fix (bad arguments, missing or
malformed files) are printed as one line and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from spade4d.version import __version__

# Errors that carry a message meant for the user; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, OSError, KeyError)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def _frames(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of frame indices") from None


# ---------------------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------------------


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from spade4d.data.synthetic.generate import generate

    t0 = time.time()
    generate(
        args.out,
        preset=args.preset,
        seed=args.seed,
        workers=args.workers,
        noise=args.noise,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"wrote {args.out} ({args.preset}, seed {args.seed}) in {time.time() - t0:.1f}s")
    return 0


def _synthetic_is_current(out: Path, preset: str, seed: int) -> bool:
    import json

    manifest = out / "dataset.json"
    if not manifest.is_file():
        return False
    m = json.loads(manifest.read_text())
    return m.get("preset") == preset and m.get("seed") == seed


def cmd_render(args: argparse.Namespace) -> int:
    from spade4d.data.psg4d import PSG4DPointCloud
    from spade4d.viz.render import render_sequence, show_interactive

    ds = PSG4DPointCloud(args.root, args.split)
    if len(ds) == 0:
        raise ValueError(f"split {args.split!r} of {args.root} holds no sequences")
    vid = args.video or ds.video_ids()[0]
    points, graph = ds[ds.index_of(vid)]
    title = f"{vid} (ground truth)"
    if args.pred:
        from spade4d.evaluation.predictions import load_predictions_4d

        preds = load_predictions_4d(args.pred, {vid: points.counts.tolist()}, only=[vid])
        if vid not in preds:
            raise ValueError(f"{args.pred}: no predictions for sequence {vid!r}")
        graph = preds[vid]
        title = f"{vid} (prediction)"
    if args.interactive:
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
    )
    print(f"wrote {len(out['frames'])} frames and {out['gif']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The end-to-end demo: synthetic data, then a rendered sequence of it."""
    from spade4d.data.synthetic.generate import generate

    out = Path(args.out)
    data = out / "synthetic"
    t0 = time.time()
    if _synthetic_is_current(data, args.preset, args.seed):
        print(f"[demo] synthetic dataset already complete in {data}")
    else:
        print(f"[demo] generating the {args.preset} synthetic dataset into {data}")
        generate(data, preset=args.preset, seed=args.seed, workers=args.workers, overwrite=True)
    print("[demo] rendering a test sequence")
    render_args = argparse.Namespace(
        root=str(data / "psg4d_pc"),
        split="test",
        video=None,
        pred=None,
        interactive=False,
        out=str(out / "render_gt"),
        width=960,
        height=720,
        frames=None,
        fps=4.0,
        quiet=False,
    )
    cmd_render(render_args)
    print(f"[demo] done in {time.time() - t0:.0f}s; outputs under {out}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spade4d", description="4D panoptic scene graph generation")
    p.add_argument("--version", action="version", version=f"spade4d {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="end-to-end demo on the synthetic world")
    s.add_argument("--out", default="outputs/demo")
    s.add_argument("--preset", default="quick", choices=["quick", "small", "full"])
    s.add_argument("--seed", type=_non_negative_int, default=0)
    s.add_argument("--workers", type=_positive_int, default=None)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("make-synthetic", help="generate the synthetic 4D + 2D scene-graph datasets")
    s.add_argument("--preset", default="quick", help="quick | small | full")
    s.add_argument("--seed", type=_non_negative_int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--workers", type=_positive_int, default=None, help="processes (default: CPU count, at most 4)")
    s.add_argument(
        "--noise",
        type=_non_negative_float,
        default=0.0,
        help="depth noise scale: 0 exact, 1 Kinect-v1-like (see spade4d/data/synthetic/sensor.py)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_make_synthetic)

    s = sub.add_parser("render", help="render a sequence's scene graph (ground truth or a prediction file)")
    s.add_argument("--root", required=True, help="PSG4D point-cloud layout root")
    s.add_argument("--split", default="test")
    s.add_argument("--video", default=None, help="video id (default: the split's first)")
    s.add_argument("--pred", default=None, help="a spade4d-predictions-4d file to render instead of the GT")
    s.add_argument("--out", default="outputs/render")
    s.add_argument("--frames", type=_frames, default=None, help="comma-separated frame indices (default: all)")
    s.add_argument("--width", type=_positive_int, default=960)
    s.add_argument("--height", type=_positive_int, default=720)
    s.add_argument("--fps", type=float, default=4.0)
    s.add_argument("--interactive", action="store_true", help="open an Open3D window (needs a display)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_render)

    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("spade4d: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("SPADE4D_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"spade4d {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
