"""Sparse convolution: each backend against dense conv3d on small grids, backend parity, kernel-map reuse."""

import pytest
import torch
import torch.nn.functional as F

from spade4d.models.sparse import (
    SparseConv3d,
    SparseConvTranspose3d,
    SparseError,
    SparseMaxPool3d,
    SparseTensor,
    minkowski_available,
    sparse_quantize,
)
from spade4d.models.sparse import torch_backend as tb
from spade4d.models.sparse.torch_backend import kernel_offsets

BACKENDS = ["torch"] + (["minkowski"] if minkowski_available() else [])
GRID = 8


def random_sparse(seed=0, batches=2, density=0.3, channels=3, grid=GRID):
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand(batches, grid, grid, grid, generator=g) < density
    coords = torch.nonzero(occ)  # sorted by (b, x, y, z) = sorted by packed key
    feats = torch.randn(len(coords), channels, generator=g, dtype=torch.float64)
    return SparseTensor(coords, feats.requires_grad_(True))


def dense_weight(weight: torch.Tensor, k: int, transpose=False) -> torch.Tensor:
    """(K, Cin, Cout) in kernel_offsets order -> conv3d's (Cout, Cin, k, k, k) (or (Cin, Cout, ...))."""
    r = k // 2 if k % 2 else 0
    w = weight.new_zeros((weight.shape[2], weight.shape[1], k, k, k))
    for i, (dx, dy, dz) in enumerate(kernel_offsets(k)):
        w[:, :, dx + r, dy + r, dz + r] = weight[i].T
    return w.transpose(0, 1) if transpose else w


def gather(dense: torch.Tensor, coords: torch.Tensor, stride: int) -> torch.Tensor:
    c = coords.clone()
    c[:, 1:] //= stride
    return dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_submanifold_conv_equals_dense_conv3d_on_active_sites(backend):
    x = random_sparse()
    conv = SparseConv3d(3, 5, kernel_size=3, backend=backend).double()
    y = conv(x)
    assert torch.equal(y.coords, x.coords) and y.stride == 1
    ref = F.conv3d(x.dense((GRID,) * 3), dense_weight(conv.weight, 3), padding=1)
    torch.testing.assert_close(y.feats, gather(ref, x.coords, 1))
    # gradients too: the custom backward against autograd through the dense conv
    y.feats.square().sum().backward()
    g_sparse_w, g_sparse_x = conv.weight.grad.clone(), x.feats.grad.clone()
    conv.weight.grad, x.feats.grad = None, None
    w = conv.weight.detach().requires_grad_(True)
    gather(F.conv3d(x.dense((GRID,) * 3), dense_weight(w, 3), padding=1), x.coords, 1).square().sum().backward()
    torch.testing.assert_close(g_sparse_w, w.grad)
    torch.testing.assert_close(g_sparse_x, x.feats.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_and_transposed_conv_equal_dense(backend):
    x = random_sparse(seed=1)
    down = SparseConv3d(3, 4, kernel_size=2, stride=2, backend=backend).double()
    y = down(x)
    assert y.stride == 2 and (y.coords[:, 1:] % 2 == 0).all()
    parents = torch.unique(torch.cat([x.coords[:, :1], x.coords[:, 1:] // 2 * 2], 1), dim=0)
    assert torch.equal(y.coords, parents)
    ref = F.conv3d(x.dense((GRID,) * 3), dense_weight(down.weight, 2), stride=2)
    torch.testing.assert_close(y.feats, gather(ref, y.coords, 2))
    up = SparseConvTranspose3d(4, 3, kernel_size=2, stride=2, backend=backend).double()
    z = up(y)
    assert torch.equal(z.coords, x.coords) and z.stride == 1
    ref_up = F.conv_transpose3d(y.dense((GRID // 2,) * 3), dense_weight(up.weight, 2, transpose=True), stride=2)
    torch.testing.assert_close(z.feats, gather(ref_up, x.coords, 1))


def test_max_pool_takes_the_max_of_children():
    x = random_sparse(seed=2)
    y = SparseMaxPool3d(2)(x)
    ref = F.max_pool3d(x.dense((GRID,) * 3).masked_fill(x.dense((GRID,) * 3) == 0, float("-inf")), 2)
    torch.testing.assert_close(y.feats, gather(ref, y.coords, 2))


@pytest.mark.parametrize("kernel,stride_in,stride_out", [(3, 1, 1), (3, 4, 4), (2, 1, 2), (2, 2, 4), (5, 1, 1)])
def test_dense_table_and_binary_search_give_the_same_kernel_map(monkeypatch, kernel, stride_in, stride_out):
    g = torch.Generator().manual_seed(kernel * 10 + stride_in)
    c = torch.randint(-9, 9, (700, 4), generator=g) * stride_in
    c[:, 0] = torch.randint(0, 3, (700,), generator=g)
    cin = tb.unique_coords(c)[0]
    cout = cin if stride_out == stride_in else tb.downsample_coords(cin, stride_out)
    dense = tb.build_kernel_map(cin, cout, kernel, stride_in)
    monkeypatch.setattr(tb, "_DENSE_MAX_CELLS", 0)  # the binary-search path
    search = tb.build_kernel_map(cin, cout, kernel, stride_in)
    assert dense.size == search.size > 0 and dense.identity == search.identity
    for a, b, x, y in zip(dense.in_idx, search.in_idx, dense.out_idx, search.out_idx):
        assert torch.equal(a, b) and torch.equal(x, y)
    # and the pairs are right: in[i] == out[o] + offset * stride_in
    for (dx, dy, dz), i, o in zip(tb.kernel_offsets(kernel), dense.in_idx, dense.out_idx):
        shift = torch.tensor([0, dx, dy, dz]) * stride_in
        assert torch.equal(cin[i], cout[o] + shift)


def test_kernel_maps_are_built_once_and_shared():
    x = random_sparse(seed=3)
    a, b = SparseConv3d(3, 3).double(), SparseConv3d(3, 3).double()
    y = b(a(x))
    assert y.cache is x.cache
    assert len(x.cache.maps) == 1  # one map for the two layers on the same coordinates
    down = SparseConv3d(3, 3, kernel_size=2, stride=2).double()
    up = SparseConvTranspose3d(3, 3, kernel_size=2, stride=2).double()
    up(down(y))
    assert len(x.cache.maps) == 2  # the transposed conv reuses the strided conv's map


def test_quantize_and_bad_coordinates():
    pts = torch.tensor([[0.01, 0.02, 0.03], [0.04, 0.01, 0.0], [0.5, 0.5, 0.5]])
    coords, inv = sparse_quantize(pts, torch.zeros(3, dtype=torch.long), 0.1)
    assert coords.tolist() == [[0, 0, 0, 0], [0, 5, 5, 5]] and inv.tolist() == [0, 0, 1]
    with pytest.raises(SparseError, match="range"):
        sparse_quantize(torch.tensor([[1e6, 0.0, 0.0]]), torch.zeros(1, dtype=torch.long), 0.01)
    with pytest.raises(SparseError, match="channels"):
        SparseConv3d(4, 2)(random_sparse())


@pytest.mark.skipif(not minkowski_available(), reason="MinkowskiEngine is not installed")
def test_backends_agree_on_outputs_and_gradients():
    outs = {}
    for backend in ("torch", "minkowski"):
        torch.manual_seed(0)
        x = random_sparse(seed=4, channels=4)
        layers = [
            SparseConv3d(4, 6, 3, backend=backend),
            SparseConv3d(6, 8, 2, stride=2, backend=backend),
            SparseConv3d(8, 8, 3, backend=backend),
            SparseConvTranspose3d(8, 5, 2, stride=2, backend=backend),
        ]
        for m in layers:
            m.double()
        h = x
        for m in layers:
            h = m(h)
        h.feats.sin().sum().backward()
        outs[backend] = (h.feats.detach(), x.feats.grad, [m.weight.grad for m in layers])
    (yt, gxt, gwt), (ym, gxm, gwm) = outs["torch"], outs["minkowski"]
    torch.testing.assert_close(yt, ym)
    torch.testing.assert_close(gxt, gxm)
    for a, b in zip(gwt, gwm):
        torch.testing.assert_close(a, b)
