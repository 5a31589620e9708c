"""Frames of a :class:`~spade4d.structures.PointSequence` as model input (:class:`~spade4d.batch.Frames`), and the
point a sequence is centred on. Used by training, inference and BatchNorm recalibration alike."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import numpy as np
import torch

from spade4d.batch import Frames
from spade4d.structures import PointSequence


class FramesError(ValueError):
    """Frames of a sequence cannot be put together (images of different sizes)."""


def sequence_center(seq: PointSequence) -> torch.Tensor:
    """The reference point of a sequence: the median of its first non-empty frame (finite points only)."""
    for t in range(seq.num_frames):
        xyz = seq.frame(t)["xyz"]
        xyz = xyz[np.isfinite(xyz).all(1)]
        if len(xyz):
            return torch.from_numpy(np.median(xyz, 0).astype(np.float32))
    return torch.zeros(3)


def load_frames(seq: PointSequence, times: list[int], name: str = "", rgb_source=None) -> Frames:
    """The finite points of frames ``times``; with ``rgb_source`` (a :class:`~spade4d.data.cameras.CameraFrames`)
    also the RGB frames and each point's pixel, for models that lift 2D features."""
    xyz, rgb, frame, keep = [], [], [], []
    images, uv = [], []
    dropped = 0
    for i, t in enumerate(times):
        f = seq.frame(t)
        ok = np.isfinite(f["xyz"]).all(1) & np.isfinite(f["rgb"]).all(1)
        dropped += int((~ok).sum())
        idx = np.flatnonzero(ok)
        keep.append(idx)
        xyz.append(f["xyz"][idx].astype(np.float32))
        rgb.append(np.clip(f["rgb"][idx], 0, 1).astype(np.float32))
        frame.append(np.full(len(idx), i, dtype=np.int64))
        if rgb_source is not None:
            from spade4d.data.cameras import point_uv

            image, K, pose = rgb_source.get(name, t)
            if images and image.shape != images[0].shape:
                raise FramesError(
                    f"{name}: frame {t}'s image is {image.shape[:2]}, frame {times[0]}'s {images[0].shape[:2]}"
                )
            images.append(image)
            uv.append(point_uv(xyz[-1], K, pose, image.shape[0], image.shape[1]))
    if dropped:
        warnings.warn(
            f"{name or 'sequence'}: dropped {dropped} points with NaN/inf coordinates or colours", stacklevel=2
        )
    return Frames(
        torch.from_numpy(np.concatenate(xyz)),
        torch.from_numpy(np.concatenate(rgb)),
        torch.from_numpy(np.concatenate(frame)),
        torch.tensor(times, dtype=torch.long),
        keep,
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0 if images else None,
        torch.from_numpy(np.concatenate(uv)) if uv else None,
    )


def frame_loader(seq: PointSequence, name: str = "", rgb_source=None) -> Callable[[list[int]], Frames]:
    """``load(times)``: :func:`load_frames` of ``seq`` bound to its name and RGB source (the loader
    :meth:`~spade4d.models.model4d.Model4D.run` takes)."""
    return functools.partial(load_frames, seq, name=name, rgb_source=rgb_source)
