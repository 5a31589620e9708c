"""Argument types of the ``spade4d`` command: each turns one command-line string into a checked value, or refuses
it with a message argparse prints as a one-line usage error."""

from __future__ import annotations

import argparse
import logging

from spade4d.data.datasets import POINT_FORMATS

ANN_HELP = (
    "annotation JSON (default: <root>/psg4d.json for spade4d-pc, <root>/sailvos3d.json for psg4d-gta-pc, "
    "<root>/psg4d_hoi.json for psg4d-hoi-pc)"
)
FORMAT_HELP = (
    "spade4d-pc: spade4d's layout (point_clouds/<vid>/%%06d.pth + psg4d.json); psg4d-gta-pc / psg4d-hoi-pc: PSG4D's "
    "own point clouds (<vid>/images_%%06d.pth, <vid>/semantic_segmentation_label/*.pth); synthetic: a make-synthetic "
    "folder. See docs/formats.md"
)


def _number(text: str, kind: type, ok, wanted: str):
    """``text`` read as ``kind`` (int or float), refused unless ``ok(value)``; ``wanted`` names the condition."""
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"{text!r} must be {wanted}")
    return v


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v > 0, "positive")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, ">= 0")


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, voxel sizes, scales, frame rates)."""
    return _number(text, float, lambda v: 0 < v < float("inf"), "a finite number above 0")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, ">= 0")


def names(text: str) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    if not chosen:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return chosen


def image_side(text: str) -> int:
    """An image width or height the offscreen renderer can allocate (1..8192 pixels)."""
    v = positive_int(text)
    if v > 8192:
        raise argparse.ArgumentTypeError(f"{v} pixels is more than the renderer's limit of 8192")
    return v


def frames(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of frame indices") from None


def ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not ks or any(k <= 0 for k in ks):
        raise argparse.ArgumentTypeError(f"K values must be positive integers, got {text!r}")
    return ks


def intrinsics(text: str):
    try:
        fx, fy, cx, cy = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not fx,fy,cx,cy") from None
    return [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]


def transfer_parts(text: str) -> tuple[str, ...]:
    from spade4d.training.transfer import PARTS

    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in chosen if p not in PARTS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"transfer parts must be some of {', '.join(PARTS)}, got {text!r}")
    return chosen


def device(name: str):
    """The torch device ``--device`` names (``auto``: the first CUDA GPU when there is one, else the CPU); an
    unknown name or a GPU that is not there is a ValueError (a one-line error of the command, not a usage error)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name}: {str(e).splitlines()[0]}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available")
    return dev


# ---- options several commands share ----


def command(sub, func, name: str, help: str) -> argparse.ArgumentParser:
    """A sub-command parser running ``func``, with the options every command takes: ``--quiet`` (warnings and
    errors only, no progress bars) and ``--verbose`` (debug messages too)."""
    s = sub.add_parser(name, help=help)
    s.set_defaults(func=func)
    loud = s.add_mutually_exclusive_group()
    loud.add_argument("--quiet", action="store_true", help="print warnings and errors only; no progress bars")
    loud.add_argument("--verbose", action="store_true", help="print debug messages too")
    return s


def dataset_args(s: argparse.ArgumentParser, split: str, formats=POINT_FORMATS, required: bool = True) -> None:
    s.add_argument("--format", default="spade4d-pc", choices=formats, help=FORMAT_HELP)
    s.add_argument("--root", required=required, help="dataset root (synthetic: the make-synthetic folder)")
    s.add_argument("--ann", default=None, help=ANN_HELP)
    s.add_argument("--split", default=split)


def config_args(s: argparse.ArgumentParser, kind: str) -> None:
    s.add_argument("--config", default=None, help=f"a YAML config over the preset (configs/{kind}/*.yaml)")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (docs/configs.md)")


# ---- logging ----

NOISY = (
    "transformers",
    "diffusers",
    "accelerate",
    "peft",
    "huggingface_hub",
    "torch",
    "PIL",
    "matplotlib",
    "py.warnings",
)


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"spade4d: {'warning' if record.levelno == logging.WARNING else 'error'}: {record.getMessage()}"


class _Below(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """The command line's logging: spade4d's messages (INFO, DEBUG with ``verbose``, WARNING and up with ``quiet``)
    to stdout, warnings and errors to stderr as ``spade4d: warning: ...``; other libraries' messages at WARNING
    (ERROR with ``quiet``), Python warnings among them. Called by every command, so it replaces its own handlers."""
    import sys

    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "spade4d", False)]:
        root.removeHandler(h)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_Below(logging.WARNING))
    out.setFormatter(logging.Formatter("%(message)s"))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(_LevelFormatter())
    for h in (out, err):
        h.spade4d = True
        root.addHandler(h)
    root.setLevel(logging.ERROR if quiet else logging.WARNING)
    logging.getLogger("spade4d").setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.WARNING)


def metric_args(s: argparse.ArgumentParser) -> None:
    """The options of the OpenPVSG-protocol metrics (``evaluate-4d``, ``evaluate-video``; docs/metrics.md)."""
    s.add_argument("--graph-constraint", action="store_true", help="one predicate per pair (off by default)")
    s.add_argument("--penalize-extra-frames", action="store_true", help="divide by |GT ∪ predicted frames|")
    s.add_argument("--viou-threshold", type=float, default=0.5)
    s.add_argument("--top-pairs", type=non_negative_int, default=100, help="0: no cut")
    s.add_argument("--ks", type=ks, default=(20, 50, 100))
    s.add_argument("--openpvsg-weak", action="store_true",
                   help="wR@K counted as OpenPVSG's code does (every weak hit up to the first strong one; can pass "
                        "100) and wmR@K")  # fmt: skip
    s.add_argument("--oov-classes", type=names, default=None, help="classes training never showed: OOV recall")
    s.add_argument("--oov-predicates", type=names, default=None, help="predicates training never showed")


def metric_options(args: argparse.Namespace):
    """The :class:`~spade4d.evaluation.Options4D` and the (classes, predicates) training never showed (None when
    no ``--oov-*`` option is given) of :func:`metric_args`' options."""
    from spade4d.evaluation import Options4D

    options = Options4D(
        ks=args.ks,
        viou_threshold=args.viou_threshold,
        top_pairs=args.top_pairs or None,
        graph_constraint=args.graph_constraint,
        penalize_extra_frames=args.penalize_extra_frames,
        openpvsg_weak=args.openpvsg_weak,
    )
    unseen = (args.oov_classes or [], args.oov_predicates or []) if args.oov_classes or args.oov_predicates else None
    return options, unseen


def training_args(s: argparse.ArgumentParser) -> None:
    """The run options ``finetune-4d`` and ``finetune-video`` share: output, preset and config, the schedule,
    checkpoints and resuming."""
    s.add_argument("--out", required=True, help="run directory: checkpoints, logs, loss.png, model/")
    s.add_argument("--preset", default="quick", help="quick | small | full (configs/finetune_4d/<preset>.yaml)")
    config_args(s, "finetune_4d")  # or a run's train_config.json, to repeat the run
    s.add_argument("--steps", type=positive_int, default=None)
    s.add_argument("--lr", type=positive_float, default=None)
    s.add_argument("--warmup", type=non_negative_int, default=None, help="learning-rate warm-up steps")
    s.add_argument("--seed", type=non_negative_int, default=None)
    s.add_argument("--clips-per-step", type=positive_int, default=None, help="gradient accumulation")
    s.add_argument("--checkpoint-every", type=positive_int, default=None)
    s.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"])
    s.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    s.add_argument(
        "--stop-after", type=positive_int, default=None, help="stop at this step of the schedule (--resume continues)"
    )
    s.add_argument(
        "--transfer-parts", type=transfer_parts, default=None, help="with --init-from-2d: of decoder,rgt,head"
    )
