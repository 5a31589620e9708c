"""The model's input: the points of some frames of one sequence, as tensors."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass
class Frames:
    """Points of some frames of a sequence, ready for the model (NaN points already dropped)."""

    xyz: torch.Tensor  # (N, 3) float32
    rgb: torch.Tensor  # (N, 3) in [0, 1]
    frame: torch.Tensor  # (N,) index into ``times``
    times: torch.Tensor  # (T,) frame indices in the sequence
    keep: list[np.ndarray]  # per frame: indices of the kept (finite) points among the frame's original points
    images: torch.Tensor | None = None  # (T, 3, H, W) in [0, 1]: the RGB frames the points came from
    uv: torch.Tensor | None = None  # (N, 2) each point's position in its image (grid_sample units, NaN: none)

    def to(self, device: torch.device | str) -> Frames:
        """The tensors on ``device`` (``keep`` stays: numpy indices into the original frames)."""
        moved = {k: getattr(self, k) for k in ("xyz", "rgb", "frame", "times", "images", "uv")}
        return replace(self, **{k: None if v is None else v.to(device) for k, v in moved.items()})

    def window(self, a: int, b: int) -> Frames:
        sel = (self.frame >= a) & (self.frame < b)
        return Frames(
            self.xyz[sel],
            self.rgb[sel],
            self.frame[sel] - a,
            self.times[a:b],
            self.keep[a:b],
            None if self.images is None else self.images[a:b],
            None if self.uv is None else self.uv[sel],
        )
