"""The sparse tensor shared by both backends: integer voxel coordinates ``(batch, x, y, z)`` plus features.

Coordinates of a tensor at tensor stride ``s`` are multiples of ``s``. A :class:`CoordinateCache` travels with
every tensor derived from the same input; it keeps the coordinate set of each stride and the kernel maps built
on them, so a U-Net builds each map once and reuses it across layers, in the transposed convolutions of the
decoder and in the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# 18 bits per spatial coordinate (+-131072 voxels: 6.5 km at 5 cm), 9 bits for the batch index
_BITS = 18
_HALF = 1 << (_BITS - 1)
_MAX_BATCH = 1 << (63 - 3 * _BITS)


class SparseError(ValueError):
    """Coordinates that cannot be represented (out of range, wrong shape or dtype)."""


def pack_coords(coords: torch.Tensor) -> torch.Tensor:
    """One int64 key per ``(batch, x, y, z)`` row; adding ``delta`` to a coordinate adds a fixed amount to the
    key, so neighbour lookups are key arithmetic (see :func:`offset_key`)."""
    c = coords.long()
    b, x, y, z = c[:, 0], c[:, 1] + _HALF, c[:, 2] + _HALF, c[:, 3] + _HALF
    return (((b << _BITS) | x) << _BITS | y) << _BITS | z


def offset_key(delta: tuple[int, int, int]) -> int:
    dx, dy, dz = delta
    return (dx << (2 * _BITS)) + (dy << _BITS) + dz


def check_coords(coords: torch.Tensor, margin: int = 0) -> None:
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise SparseError(f"coordinates must be (N, 4) [batch, x, y, z], got shape {tuple(coords.shape)}")
    if coords.dtype not in (torch.int32, torch.int64):
        raise SparseError(f"coordinates must be integers, got {coords.dtype}")
    if len(coords) == 0:
        return
    lo, hi = coords[:, 1:].min().item(), coords[:, 1:].max().item()
    if lo - margin < -_HALF or hi + margin >= _HALF:
        raise SparseError(f"voxel coordinates span [{lo}, {hi}]; the supported range is +-{_HALF - margin}")
    if coords[:, 0].min().item() < 0 or coords[:, 0].max().item() >= _MAX_BATCH:
        raise SparseError(f"batch indices must lie in [0, {_MAX_BATCH})")


@dataclass
class CoordinateCache:
    """Coordinate sets by tensor stride and kernel maps by (stride in, stride out, kernel size), plus whatever a
    backend wants to keep (MinkowskiEngine's coordinate manager)."""

    coords: dict[int, torch.Tensor] = field(default_factory=dict)
    maps: dict[tuple, Any] = field(default_factory=dict)
    backend_state: dict[str, Any] = field(default_factory=dict)


@dataclass
class SparseTensor:
    coords: torch.Tensor  # (N, 4) int64: batch, x, y, z (multiples of ``stride``)
    feats: torch.Tensor  # (N, C)
    stride: int = 1
    cache: CoordinateCache = field(default_factory=CoordinateCache)

    def __post_init__(self) -> None:
        if self.feats.ndim != 2 or len(self.feats) != len(self.coords):
            raise SparseError(
                f"features must be (N, C) with N = {len(self.coords)} coordinates, got {tuple(self.feats.shape)}"
            )
        self.cache.coords.setdefault(self.stride, self.coords)

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """Same coordinates (and cache), new features."""
        return SparseTensor(self.coords, feats, self.stride, self.cache)

    @property
    def num_batches(self) -> int:
        return int(self.coords[:, 0].max().item()) + 1 if len(self.coords) else 0

    def dense(self, shape: tuple[int, int, int], origin: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` dense grid (for tests and small debugging only)."""
        B = self.num_batches
        out = self.feats.new_zeros((B, self.feats.shape[1], *shape))
        c = self.coords
        x = (c[:, 1] - origin[0]) // self.stride
        y = (c[:, 2] - origin[1]) // self.stride
        z = (c[:, 3] - origin[2]) // self.stride
        out[c[:, 0], :, x, y, z] = self.feats
        return out


def sparse_quantize(points: torch.Tensor, batch: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel coordinates of ``points`` (N, 3) with batch indices (N,): returns the unique ``(M, 4)`` voxel
    coordinates (sorted by key) and, for every point, the index of its voxel (for averaging features in and
    devoxelising them out)."""
    if voxel_size <= 0:
        raise SparseError(f"voxel size must be positive, got {voxel_size}")
    grid = torch.floor(points / voxel_size).long()
    coords = torch.cat([batch.long()[:, None], grid], 1)
    check_coords(coords, margin=8)
    return unique_coords(coords)


def unique_coords(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``coords`` sorted by packed key, and each input row's index among them."""
    keys = pack_coords(coords)
    ukeys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    first = torch.full((len(ukeys),), len(keys), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(keys), device=keys.device), "amin")
    return coords[first], inverse


def voxel_mean(values: torch.Tensor, inverse: torch.Tensor, num_voxels: int) -> torch.Tensor:
    """Average ``values`` (N, C) of the points falling in each voxel."""
    out = values.new_zeros((num_voxels, values.shape[1]))
    out.index_add_(0, inverse, values)
    cnt = torch.bincount(inverse, minlength=num_voxels).clamp_min(1).to(values.dtype)
    return out / cnt[:, None]
