"""Sparse layers with one interface over two backends.

``backend="torch"`` (default) runs :mod:`~spade4d.models.sparse.torch_backend`; ``backend="minkowski"`` runs the
same layer with MinkowskiEngine's kernels on the same parameters (weights are ``(kernel volume, C_in, C_out)``
in MinkowskiEngine's offset order in both). Rows of every coordinate set are kept sorted by packed key, whatever
the backend, so the two are interchangeable inside a model and comparable row by row in tests.
``SPADE4D_SPARSE_BACKEND`` sets the default.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from spade4d.models.sparse.tensor import SparseError, SparseTensor, pack_coords
from spade4d.models.sparse.torch_backend import cached_map, sparse_conv

BACKENDS = ("torch", "minkowski")


def minkowski_available() -> bool:
    try:
        import MinkowskiEngine  # noqa: F401
    except Exception:  # ImportError, or a broken build raising something else
        return False
    return True


def default_backend() -> str:
    return resolve_backend(None)


def resolve_backend(name: str | None) -> str:
    name = name or os.environ.get("SPADE4D_SPARSE_BACKEND", "torch")
    if name == "auto":
        return "torch"  # the pure-PyTorch backend is at least as fast on CPU (scripts/bench_sparse_conv.py)
    if name not in BACKENDS:
        raise SparseError(f"unknown sparse backend {name!r}; choose one of {BACKENDS} or 'auto'")
    if name == "minkowski" and not minkowski_available():
        raise SparseError(
            "sparse backend 'minkowski' asked for, but MinkowskiEngine is not importable; "
            "build it with scripts/install_minkowski.sh"
        )
    return name


# --- MinkowskiEngine adapter ---------------------------------------------------------------------------------


def _me_state(x: SparseTensor) -> dict:
    st = x.cache.backend_state
    if "manager" not in st:
        import MinkowskiEngine as ME

        st["manager"] = ME.CoordinateManager(D=3, coordinate_map_type=ME.CoordinateMapType.CPU)
        st["keys"], st["order"] = {}, {}
    return st


def _canonical_order(me_coords: torch.Tensor, canonical: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """For ME rows: the canonical (key-sorted) row of each, and the canonical coordinates."""
    keys = pack_coords(me_coords.long())
    if canonical is None:
        sorted_keys, perm = torch.sort(keys)
        order = torch.empty_like(perm)
        order[perm] = torch.arange(len(perm), device=perm.device)
        return order, me_coords.long()[perm]
    ckeys = pack_coords(canonical)
    return torch.searchsorted(ckeys, keys), canonical


def to_minkowski(x: SparseTensor):
    import MinkowskiEngine as ME

    st = _me_state(x)
    if x.stride not in st["keys"]:
        t = ME.SparseTensor(
            x.feats, coordinates=x.coords.int().contiguous(), tensor_stride=x.stride, coordinate_manager=st["manager"]
        )
        st["keys"][x.stride] = t.coordinate_map_key
        st["order"][x.stride], _ = _canonical_order(t.C, x.cache.coords[x.stride])
        if not torch.equal(t.C.long()[torch.argsort(st["order"][x.stride])], x.cache.coords[x.stride]):
            raise SparseError("MinkowskiEngine changed the coordinate set (duplicate coordinates in the input?)")
    order = st["order"][x.stride]
    return ME.SparseTensor(x.feats[order], coordinate_map_key=st["keys"][x.stride], coordinate_manager=st["manager"])


def from_minkowski(t, like: SparseTensor) -> SparseTensor:
    st = _me_state(like)
    stride = int(t.tensor_stride[0])
    if stride not in st["order"]:
        st["keys"][stride] = t.coordinate_map_key
        st["order"][stride], coords = _canonical_order(t.C, like.cache.coords.get(stride))
        like.cache.coords.setdefault(stride, coords)
    order = st["order"][stride]
    feats = torch.empty_like(t.F)
    feats = feats.index_copy(0, order, t.F)  # differentiable scatter into canonical rows
    return SparseTensor(like.cache.coords[stride], feats, stride, like.cache)


# --- layers ----------------------------------------------------------------------------------------------------


class SparseConv3d(nn.Module):
    """Sparse 3D convolution. ``stride=1`` is submanifold (outputs on the input sites); ``stride>1`` outputs on
    the parents at ``stride * input stride``."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, bias=False, backend=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.backend = resolve_backend(backend)
        vol = kernel_size**3
        self.weight = nn.Parameter(torch.empty(vol, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(vol * in_channels)
        nn.init.uniform_(self.weight, -bound * math.sqrt(3), bound * math.sqrt(3))
        self._me = None

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, s={self.stride}, {self.backend}"

    def _me_module(self, transpose: bool = False):
        if self._me is None:
            import MinkowskiEngine as ME

            cls = ME.MinkowskiConvolutionTranspose if transpose else ME.MinkowskiConvolution
            m = cls(self.in_channels, self.out_channels, self.kernel_size, self.stride, bias=False, dimension=3)
            del m.kernel
            self._me = [m]  # a list: not registered as a submodule, the parameters stay ours
        self._me[0].kernel = self.weight
        return self._me[0]

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.feats.shape[1] != self.in_channels:
            raise SparseError(f"{self}: expected {self.in_channels} input channels, got {x.feats.shape[1]}")
        if self.backend == "minkowski":
            y = from_minkowski(self._me_module()(to_minkowski(x)), x)
        else:
            s_out = x.stride * self.stride
            kmap = cached_map(x.cache, x.stride, s_out, self.kernel_size)
            y = SparseTensor(x.cache.coords[s_out], sparse_conv(x.feats, self.weight, kmap), s_out, x.cache)
        return y.replace(y.feats + self.bias) if self.bias is not None else y


class SparseConvTranspose3d(SparseConv3d):
    """Undoes a strided convolution: outputs on the coordinate set at ``input stride / stride`` (which the
    encoder created), each fine site receiving from its parent through the offset that leads to it."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        s_out = x.stride // self.stride
        if s_out * self.stride != x.stride or s_out not in x.cache.coords:
            raise SparseError(f"no coordinate set at stride {s_out} to transpose onto (input stride {x.stride})")
        if self.backend == "minkowski":
            y = from_minkowski(self._me_module(transpose=True)(to_minkowski(x)), x)
        else:
            kmap = cached_map(x.cache, s_out, x.stride, self.kernel_size).transposed()
            y = SparseTensor(x.cache.coords[s_out], sparse_conv(x.feats, self.weight, kmap), s_out, x.cache)
        return y.replace(y.feats + self.bias) if self.bias is not None else y


class SparseBatchNorm(nn.BatchNorm1d):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(torch.relu(x.feats))


class SparseMaxPool3d(nn.Module):
    """Max over each parent's children (kernel = stride = ``stride``), on the backend-independent kernel map."""

    def __init__(self, stride: int = 2):
        super().__init__()
        self.stride = stride

    def forward(self, x: SparseTensor) -> SparseTensor:
        s_out = x.stride * self.stride
        kmap = cached_map(x.cache, x.stride, s_out, self.stride)
        i, o = torch.cat(kmap.in_idx), torch.cat(kmap.out_idx)
        out = x.feats.new_full((kmap.num_out, x.feats.shape[1]), float("-inf"))
        out = out.scatter_reduce(0, o[:, None].expand(-1, x.feats.shape[1]), x.feats[i], "amax")
        return SparseTensor(x.cache.coords[s_out], out, s_out, x.cache)


def global_avg_pool(x: SparseTensor, num_batches: int | None = None) -> torch.Tensor:
    """``(B, C)`` mean of each batch item's features."""
    B = num_batches if num_batches is not None else x.num_batches
    b = x.coords[:, 0]
    out = x.feats.new_zeros((B, x.feats.shape[1])).index_add_(0, b, x.feats)
    return out / torch.bincount(b, minlength=B).clamp_min(1)[:, None].to(x.feats.dtype)
