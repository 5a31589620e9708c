"""SparseEncoder: a sparse 3D U-Net over the voxels of every frame of a window, devoxelised to points.

All frames of a window go through the network as one sparse batch (batch index = frame), so the kernel maps of
a window are built once. Per-point features are the feature of the point's voxel plus a small MLP of the
point's colour and its offset inside the voxel, so points sharing a voxel can still be told apart. They are
computed on demand (:class:`PointFeatures`): training reads a few thousand sampled points of a window's tens of
thousands, inference reads them all.
"""

from __future__ import annotations

import torch
from torch import nn

from spade4d.models.sparse import (
    SparseBatchNorm,
    SparseConv3d,
    SparseConvTranspose3d,
    SparseReLU,
    SparseTensor,
    sparse_quantize,
    voxel_mean,
)


class PointFeatures:
    """The per-point features of an encoded cloud, computed when asked for: ``select(idx)`` for some points (and
    only their share of the work and of the backward pass), ``all()`` for every point (computed once, kept)."""

    def __init__(self, voxel_feats: torch.Tensor, voxel_index: torch.Tensor, local: torch.Tensor, mlp: nn.Module):
        self.voxel_feats, self.voxel_index, self.local, self.mlp = voxel_feats, voxel_index, local, mlp
        self._all: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.voxel_index)

    def select(self, idx: torch.Tensor) -> torch.Tensor:
        """``(len(idx), D)`` features of points ``idx`` (int64 indices)."""
        if self._all is not None:
            return self._all.index_select(0, idx)
        return self.voxel_feats.index_select(0, self.voxel_index[idx]) + self.mlp(self.local[idx])

    def all(self) -> torch.Tensor:
        """``(N, D)`` features of every point."""
        if self._all is None:
            self._all = self.voxel_feats.index_select(0, self.voxel_index) + self.mlp(self.local)
        return self._all


class ResBlock(nn.Module):
    def __init__(self, channels: int, backend: str | None):
        super().__init__()
        self.conv1 = SparseConv3d(channels, channels, 3, backend=backend)
        self.bn1 = SparseBatchNorm(channels)
        self.conv2 = SparseConv3d(channels, channels, 3, backend=backend)
        self.bn2 = SparseBatchNorm(channels)
        self.relu = SparseReLU()

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return h.replace(torch.relu(h.feats + x.feats))


class Down(nn.Module):
    def __init__(self, cin: int, cout: int, backend: str | None):
        super().__init__()
        self.conv = SparseConv3d(cin, cout, 2, stride=2, backend=backend)
        self.bn = SparseBatchNorm(cout)
        self.block = ResBlock(cout, backend)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.block(SparseReLU()(self.bn(self.conv(x))))


class Up(nn.Module):
    def __init__(self, cin: int, cout: int, backend: str | None):
        super().__init__()
        self.conv = SparseConvTranspose3d(cin, cout, 2, stride=2, backend=backend)
        self.bn = SparseBatchNorm(cout)
        self.fuse = SparseConv3d(cout, cout, 3, backend=backend)
        self.bn2 = SparseBatchNorm(cout)

    def forward(self, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        h = self.bn(self.conv(x))
        h = h.replace(torch.relu(h.feats + skip.feats))  # skip connection by addition (same channels)
        return h.replace(torch.relu(self.bn2(self.fuse(h)).feats + h.feats))


class SparseEncoder(nn.Module):
    """``channels[0]`` at full resolution, then one level per further entry at twice the stride."""

    def __init__(self, *, in_channels: int, channels: tuple[int, ...], out_dim: int, backend: str | None = None):
        super().__init__()
        self.stem = SparseConv3d(in_channels, channels[0], 3, backend=backend)
        self.stem_bn = SparseBatchNorm(channels[0])
        self.downs = nn.ModuleList(Down(a, b, backend) for a, b in zip(channels[:-1], channels[1:]))
        self.ups = nn.ModuleList(Up(b, a, backend) for a, b in reversed(list(zip(channels[:-1], channels[1:]))))
        self.head = nn.Linear(channels[0], out_dim)
        self.point_mlp = nn.Sequential(nn.Linear(6, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = SparseReLU()(self.stem_bn(self.stem(x)))
        skips = [h]
        for d in self.downs:
            h = d(h)
            skips.append(h)
        skips.pop()
        for u in self.ups:
            h = u(h, skips.pop())
        return h.replace(self.head(h.feats))

    def encode_points(
        self,
        xyz: torch.Tensor,
        rgb: torch.Tensor,
        frame: torch.Tensor,
        voxel_size: float,
        center: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> tuple[SparseTensor, PointFeatures]:
        """Points (N, 3) with colours in [0, 1] and frame indices -> (voxel features, per-point features (N, D),
        computed on demand). ``extra`` (N, E): further per-point input features (the lifted 2D features),
        averaged per voxel too."""
        coords, inverse = sparse_quantize(xyz, frame, voxel_size)
        feats = torch.cat([rgb - 0.5, (xyz - center) / 3.0] + ([] if extra is None else [extra]), 1)
        vox = voxel_mean(feats, inverse, len(coords))
        out = self(SparseTensor(coords, vox))
        local = torch.cat([rgb - 0.5, xyz / voxel_size - torch.floor(xyz / voxel_size) - 0.5], 1)
        return out, PointFeatures(out.feats, inverse, local, self.point_mlp)
