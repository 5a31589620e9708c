"""Sparse 3D convolution behind one small interface (pure PyTorch by default, MinkowskiEngine optional)."""

from spade4d.models.sparse.nn import (
    BACKENDS,
    SparseBatchNorm,
    SparseConv3d,
    SparseConvTranspose3d,
    SparseMaxPool3d,
    SparseReLU,
    default_backend,
    global_avg_pool,
    minkowski_available,
    resolve_backend,
)
from spade4d.models.sparse.tensor import (
    CoordinateCache,
    SparseError,
    SparseTensor,
    sparse_quantize,
    voxel_mean,
)

__all__ = [
    "BACKENDS",
    "CoordinateCache",
    "SparseBatchNorm",
    "SparseConv3d",
    "SparseConvTranspose3d",
    "SparseError",
    "SparseMaxPool3d",
    "SparseReLU",
    "SparseTensor",
    "default_backend",
    "global_avg_pool",
    "minkowski_available",
    "resolve_backend",
    "sparse_quantize",
    "voxel_mean",
]
