"""Pure-PyTorch sparse convolution: kernel maps by table lookup (or binary search), gather-matmul-scatter.

A kernel map lists, for each kernel offset, the (input row, output row) pairs it connects. It is built once per
(coordinate set, kernel), by looking every (output, offset) neighbour up in a dense table over the input's
bounding box, or, where that box is too large, with one ``searchsorted`` of every (output, offset) key over
the sorted input keys. It is kept in the tensor's :class:`~spade4d.models.sparse.tensor.CoordinateCache` and
reused by every layer on the same coordinates, by the transposed convolution that undoes a strided one, and by
the backward pass (a custom autograd function keeps only the index lists, not the gathered features).
"""

from __future__ import annotations

import itertools

import torch

from spade4d.models.sparse.tensor import CoordinateCache, offset_key, pack_coords, unique_coords


def kernel_offsets(kernel_size: int) -> list[tuple[int, int, int]]:
    """Offsets in units of the input stride, x fastest (MinkowskiEngine's order): ``-r..r`` for odd kernels,
    ``0..k-1`` for even ones."""
    r = range(-(kernel_size // 2), kernel_size // 2 + 1) if kernel_size % 2 else range(kernel_size)
    return [(dx, dy, dz) for dz, dy, dx in itertools.product(r, r, r)]


class KernelMap:
    """Per-offset index pairs: ``in_idx[k]``, ``out_idx[k]`` (int64), plus the output row count."""

    def __init__(
        self,
        in_idx: list[torch.Tensor],
        out_idx: list[torch.Tensor],
        num_in: int,
        num_out: int,
        identity: int | None = None,
    ):
        self.in_idx, self.out_idx, self.num_in, self.num_out = in_idx, out_idx, num_in, num_out
        # the offset (if any) that maps row r to row r for every row: a plain matmul, no gather or scatter
        self.identity = identity

    def transposed(self) -> KernelMap:
        return KernelMap(self.out_idx, self.in_idx, self.num_out, self.num_in, self.identity)

    @property
    def size(self) -> int:
        return sum(len(i) for i in self.in_idx)


def downsample_coords(coords: torch.Tensor, stride_out: int) -> torch.Tensor:
    """The coordinate set at ``stride_out``: every input voxel's parent, unique, sorted by key."""
    c = coords.clone()
    c[:, 1:] = torch.div(c[:, 1:], stride_out, rounding_mode="floor") * stride_out
    return unique_coords(c)[0]


# the dense lookup table of build_kernel_map: at most this many cells, and this many per input row (beyond
# either, one binary search per (output, offset) over the sorted input keys is cheaper in memory)
_DENSE_MAX_CELLS = 1 << 23
_DENSE_CELLS_PER_ROW = 256


def _dense_lookup(
    in_coords: torch.Tensor, out_coords: torch.Tensor, offs: list[tuple[int, int, int]], in_stride: int
) -> torch.Tensor | None:
    """``(K, Nout)`` row of ``in`` at ``out + offset * in_stride`` (-1: none), through a dense table over the box
    that holds the input and every queried neighbour (in units of ``in_stride``, so no query falls outside it);
    None when that box is too large for a table."""
    if len(in_coords) == 0 or len(out_coords) == 0:
        return None
    cin, cout = in_coords.clone(), out_coords.clone()
    cin[:, 1:] = torch.div(cin[:, 1:], in_stride, rounding_mode="floor")
    cout[:, 1:] = torch.div(cout[:, 1:], in_stride, rounding_mode="floor")
    delta = torch.tensor(offs, dtype=torch.long, device=in_coords.device)  # (K, 3)
    lo = torch.minimum(cin[:, 1:].min(0).values, cout[:, 1:].min(0).values + delta.min(0).values)
    hi = torch.maximum(cin[:, 1:].max(0).values, cout[:, 1:].max(0).values + delta.max(0).values)
    nb = max(int(cin[:, 0].max()), int(cout[:, 0].max())) + 1
    size = [nb] + (hi - lo + 1).tolist()
    cells = size[0] * size[1] * size[2] * size[3]
    if cells > _DENSE_MAX_CELLS or cells > _DENSE_CELLS_PER_ROW * len(cin):
        return None

    def linear(c: torch.Tensor) -> torch.Tensor:
        return ((c[:, 0] * size[1] + c[:, 1]) * size[2] + c[:, 2]) * size[3] + c[:, 3]

    cin[:, 1:] -= lo
    cout[:, 1:] -= lo
    table = torch.full((cells,), -1, dtype=torch.long, device=in_coords.device)
    table[linear(cin)] = torch.arange(len(cin), device=in_coords.device)
    step = (delta[:, 0] * size[2] + delta[:, 1]) * size[3] + delta[:, 2]  # (K,) the offsets in table cells
    return table[linear(cout)[None, :] + step[:, None]]


def build_kernel_map(in_coords: torch.Tensor, out_coords: torch.Tensor, kernel_size: int, in_stride: int) -> KernelMap:
    """Pairs (input i, output o) with ``in[i] == out[o] + offset * in_stride`` for each kernel offset. The lookup
    goes through a dense table over the box that holds the input and the queried neighbours when that box is
    small enough (a window of frames at the quick preset's voxel size: a few hundred thousand cells), else
    through binary search over sorted keys; both give the same map."""
    offs = kernel_offsets(kernel_size)
    pos = _dense_lookup(in_coords, out_coords, offs, in_stride)
    if pos is not None:
        k_all, o_all = torch.nonzero(pos >= 0, as_tuple=True)  # ordered by offset, then output row
        i_all = pos[k_all, o_all]
    else:
        i_all, k_all, o_all = _search_lookup(pack_coords(in_coords), pack_coords(out_coords), offs, in_stride)
    sizes = torch.bincount(k_all, minlength=len(offs)).tolist()
    in_idx, out_idx = list(torch.split(i_all, sizes)), list(torch.split(o_all, sizes))
    identity = None
    if kernel_size % 2 and len(in_coords) == len(out_coords) and torch.equal(in_coords, out_coords):
        identity = len(offs) // 2  # the centre offset of a submanifold convolution
    return KernelMap(in_idx, out_idx, len(in_coords), len(out_coords), identity)


def _search_lookup(
    in_keys: torch.Tensor, out_keys: torch.Tensor, offs: list[tuple[int, int, int]], in_stride: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input rows, offsets, output rows) of every pair, ordered by offset then output row: one binary search
    per (output, offset) key over the sorted input keys."""
    if len(in_keys) < 2 or bool((in_keys[1:] > in_keys[:-1]).all()):  # coordinate sets here are key-sorted
        sorted_keys, perm = in_keys, None
    else:
        sorted_keys, perm = torch.sort(in_keys)
    deltas = torch.tensor(
        [offset_key((dx * in_stride, dy * in_stride, dz * in_stride)) for dx, dy, dz in offs], device=out_keys.device
    )
    q = out_keys[None, :] + deltas[:, None]  # (K, Nout)
    pos = torch.searchsorted(sorted_keys, q).clamp_max(max(len(sorted_keys) - 1, 0))
    found = sorted_keys[pos] == q if len(sorted_keys) else torch.zeros_like(q, dtype=torch.bool)
    k_all, o_all = torch.nonzero(found, as_tuple=True)
    i_all = pos[k_all, o_all]
    if perm is not None:
        i_all = perm[i_all]
    return i_all, k_all, o_all


def cached_map(cache: CoordinateCache, stride_in: int, stride_out: int, kernel_size: int) -> KernelMap:
    key = ("torch", stride_in, stride_out, kernel_size)
    km = cache.maps.get(key)
    if km is None:
        if stride_out not in cache.coords:
            cache.coords[stride_out] = downsample_coords(cache.coords[stride_in], stride_out)
        km = build_kernel_map(cache.coords[stride_in], cache.coords[stride_out], kernel_size, stride_in)
        cache.maps[key] = km
    return km


class _SparseConvFunction(torch.autograd.Function):
    """Under autocast the forward matmuls run in autocast's dtype and accumulate in the output's; the backward
    pass (which autocast does not cover) computes in the gradient's dtype and returns each gradient in the dtype
    of its input, so a bf16/fp16 forward with fp32 weights trains."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        if kmap.identity is not None:
            out = feats @ weight[kmap.identity]
        else:
            # in the dtype the matmuls give (autocast's, when it is on): an empty product tells it
            out = (feats[:0] @ weight[0]).new_zeros((kmap.num_out, weight.shape[2]))
        for k, (i, o) in enumerate(zip(kmap.in_idx, kmap.out_idx)):
            if len(i) and k != kmap.identity:
                out.index_add_(0, o, (feats.index_select(0, i) @ weight[k]).to(out.dtype))
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight = ctx.saved_tensors
        kmap = ctx.kmap
        grad_out = grad_out.contiguous()
        w, f = weight.to(grad_out.dtype), feats.to(grad_out.dtype)
        grad_feats = torch.zeros_like(f) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        c = kmap.identity
        if c is not None:
            if grad_feats is not None:
                grad_feats += grad_out @ w[c].T
            if grad_weight is not None:
                grad_weight[c] = f.T @ grad_out
        for k, (i, o) in enumerate(zip(kmap.in_idx, kmap.out_idx)):
            if not len(i) or k == c:
                continue
            g = grad_out.index_select(0, o)
            if grad_feats is not None:
                grad_feats.index_add_(0, i, g @ w[k].T)
            if grad_weight is not None:
                grad_weight[k] = f.index_select(0, i).T @ g
        if grad_feats is not None:
            grad_feats = grad_feats.to(feats.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_feats, grad_weight, None


def sparse_conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """``out[o] = sum_k feats[i] @ weight[k]`` over the pairs (i, o) of offset k. ``weight``: (K, Cin, Cout)."""
    return _SparseConvFunction.apply(feats, weight, kmap)
