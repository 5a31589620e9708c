"""The ``spade4d`` commands on RGB video (PVSG layout, docs/formats.md): ``evaluate-video``."""

from __future__ import annotations

import argparse
import logging

from spade4d import cli_types as T

log = logging.getLogger("spade4d")


def cmd_evaluate_video(args: argparse.Namespace) -> int:
    from spade4d.data.pvsg import PVSG
    from spade4d.evaluation import Options4D
    from spade4d.evaluation.video import evaluate_video_split

    options = Options4D(
        ks=args.ks,
        viou_threshold=args.viou_threshold,
        top_pairs=args.top_pairs or None,
        graph_constraint=args.graph_constraint,
        penalize_extra_frames=args.penalize_extra_frames,
    )
    ds = PVSG(args.root, args.split, args.ann)
    unseen = (args.oov_classes or [], args.oov_predicates or []) if args.oov_classes or args.oov_predicates else None
    report = evaluate_video_split(ds, args.pred, args.out, options, progress=not args.quiet, unseen=unseen)
    log.info(report.text())
    return 0


def add_evaluate_video(sub) -> None:
    s = T.command(
        sub, cmd_evaluate_video, "evaluate-video", help="video R@K / mR@K of a prediction file (docs/metrics.md)"
    )
    s.add_argument("--root", required=True, help="a PVSG-layout folder: pvsg.json, <source>/videos, <source>/masks")
    s.add_argument("--ann", default=None, help="the annotation (default: <root>/pvsg.json)")
    s.add_argument("--split", default="val")
    s.add_argument("--pred", required=True, help="a spade4d-predictions-video file")
    s.add_argument("--out", required=True, help="metrics JSON (a per-predicate PNG is written beside it)")
    s.add_argument("--graph-constraint", action="store_true", help="one predicate per pair (off by default)")
    s.add_argument("--penalize-extra-frames", action="store_true", help="divide by |GT ∪ predicted frames|")
    s.add_argument("--viou-threshold", type=float, default=0.5)
    s.add_argument("--top-pairs", type=T.non_negative_int, default=100, help="0: no cut")
    s.add_argument("--ks", type=T.ks, default=(20, 50, 100))
    s.add_argument("--oov-classes", type=T.names, default=None, help="classes training never showed: OOV recall")
    s.add_argument("--oov-predicates", type=T.names, default=None, help="predicates training never showed")
