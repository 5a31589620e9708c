"""Reading a saved model's files with one-line errors: ``config.json`` and safetensors weights, checked.

A truncated or corrupt weights file, a config of the wrong shape and non-finite weights are refused where they enter,
naming the file, so a broken model never produces predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


class WeightsError(ValueError):
    """A model file cannot be used; the message names it."""


def read_config(path: Path, model_type: str | None = None) -> dict[str, Any]:
    """A model folder's JSON config as a dict; with ``model_type``, its ``model_type`` must be that."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: invalid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise WeightsError(f"{path}: expected a JSON object, found a {type(d).__name__}")
    if model_type is not None and d.get("model_type") != model_type:
        raise WeightsError(f"{path}: model_type is {d.get('model_type')!r}, expected {model_type!r}")
    return d


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; refused (one line) when truncated, corrupt or holding NaN / inf values."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) on damaged files
        raise WeightsError(
            f"{path}: unreadable weights, truncated or corrupt ({str(e).splitlines()[0][:160]})"
        ) from None
    bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise WeightsError(f"{path}: {len(bad)} tensors hold NaN or infinite values (first: {bad[0]})")
    return state


def build_config(cls, d: dict[str, Any], path: Path):
    """``cls.from_dict(d)``, with a wrong field type or value reported against ``path``."""
    try:
        return cls.from_dict(d)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise WeightsError(f"{path}: a field has the wrong type or value ({type(e).__name__}: {e})") from None
