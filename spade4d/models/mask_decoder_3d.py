"""The 3D mask decoder: object query states -> mask logits over voxels (inside the decoder) and points (output).

A query's mask is the dot product of its mask embedding (an MLP of its state) with the features of every voxel
or point of the same frame, as in Mask2Former. Voxel masks steer the next decoder layer's masked attention;
point masks are the model's output, computed from the sparse encoder's per-point features
(:class:`~spade4d.models.encoder.PointFeatures`: the voxel feature plus a local offset term), so the masks are as
fine as the input points, not the voxels.

The module is the mask embedding MLP itself (an ``nn.Sequential``), which keeps its parameters named as the 2D
core's ``decoder.mask_embed``: the 2D→4D transfer moves them by name.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskDecoder3D(nn.Sequential):
    """Two-layer MLP of the query states; its output dotted with voxel or point features gives mask logits."""

    def __init__(self, *, dim: int):
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def voxel_logits(self, states: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """states (T, Q, D), keys (T, M, D) per-frame voxel features -> (T, Q, M) logits."""
        return torch.einsum("tqd,tmd->tqm", self(states), keys)

    @staticmethod
    def point_logits(mask_embed: torch.Tensor, point_feats: torch.Tensor) -> torch.Tensor:
        """mask_embed (Q, D) of one frame, point_feats (n, D) of that frame's points -> (Q, n) logits."""
        return mask_embed @ point_feats.T
