"""Argument types of the ``spade4d`` command: each turns one command-line string into a checked value, or refuses
it with a message argparse prints as a one-line usage error."""

from __future__ import annotations

import argparse


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
