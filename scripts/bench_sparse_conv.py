"""Benchmark: one 3x3x3 submanifold sparse convolution 32 -> 64, forward + backward, pure-PyTorch backend
against MinkowskiEngine (when importable), on 100k points voxelised at 5 cm.

Two clouds: ``uniform`` (points uniform in a 4 m cube: nearly every point its own voxel, few neighbours) and
``room`` (a scan-like room: floor, walls and a few boxes sampled on their surfaces: dense 2D manifolds, many
neighbours per voxel). The kernel map is built once and reused (as in a network); its build time is reported
apart. Both backends run in the same process on the same input; outputs are checked to agree.

    python scripts/bench_sparse_conv.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from spade4d.models.sparse import SparseConv3d, SparseTensor, minkowski_available, sparse_quantize, voxel_mean
from spade4d.models.sparse.torch_backend import build_kernel_map


def uniform_cloud(n: int, rng) -> np.ndarray:
    return rng.random((n, 3)) * 4.0


def room_cloud(n: int, rng) -> np.ndarray:
    """Floor 6x5 m, four 2.5 m walls, five boxes: points on the surfaces, ~1 cm noise."""
    parts = []
    w, d, h = 6.0, 5.0, 2.5
    quads = [  # origin, edge u, edge v
        ((0, 0, 0), (w, 0, 0), (0, d, 0)),
        ((0, 0, 0), (w, 0, 0), (0, 0, h)),
        ((0, d, 0), (w, 0, 0), (0, 0, h)),
        ((0, 0, 0), (0, d, 0), (0, 0, h)),
        ((w, 0, 0), (0, d, 0), (0, 0, h)),
    ]
    for _ in range(5):  # boxes: their top and two sides
        x, y = rng.random(2) * [w - 1.2, d - 1.2] + 0.1
        s, t = 0.4 + rng.random(2) * 0.7
        z = 0.4 + rng.random() * 0.6
        quads += [
            ((x, y, z), (s, 0, 0), (0, t, 0)),
            ((x, y, 0), (s, 0, 0), (0, 0, z)),
            ((x, y, 0), (0, t, 0), (0, 0, z)),
        ]
    area = np.array([np.linalg.norm(np.cross(u, v)) for _, u, v in quads])
    counts = rng.multinomial(n, area / area.sum())
    for (o, u, v), c in zip(quads, counts):
        a, b = rng.random((2, c, 1))
        parts.append(np.asarray(o) + a * np.asarray(u) + b * np.asarray(v))
    return np.concatenate(parts) + rng.normal(0, 0.01, (n, 3))


def bench_torch(x: SparseTensor, conv: SparseConv3d, repeats: int) -> tuple[float, float, torch.Tensor]:
    t0 = time.perf_counter()
    build_kernel_map(x.coords, x.coords, 3, 1)
    t_map = time.perf_counter() - t0
    conv(x)  # builds and caches the map
    times = []
    for _ in range(repeats):
        f = x.feats.detach().requires_grad_(True)
        t0 = time.perf_counter()
        y = conv(x.replace(f))
        y.feats.sum().backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), t_map, y.feats.detach()


def bench_minkowski(x: SparseTensor, conv: SparseConv3d, repeats: int) -> tuple[float, float, torch.Tensor]:
    import MinkowskiEngine as ME

    me = ME.MinkowskiConvolution(conv.in_channels, conv.out_channels, 3, dimension=3)
    with torch.no_grad():
        me.kernel.copy_(conv.weight)
    coords = x.coords.int().contiguous()
    t0 = time.perf_counter()
    mgr = ME.CoordinateManager(D=3, coordinate_map_type=ME.CoordinateMapType.CPU)
    inp = ME.SparseTensor(x.feats.detach(), coordinates=coords, coordinate_manager=mgr)
    me(inp)  # builds and caches ME's kernel map
    t_map = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        f = x.feats.detach().requires_grad_(True)
        t0 = time.perf_counter()
        y = me(ME.SparseTensor(f, coordinate_map_key=inp.coordinate_map_key, coordinate_manager=mgr))
        y.F.sum().backward()
        times.append(time.perf_counter() - t0)
    # ME's rows -> key-sorted rows for the comparison
    from spade4d.models.sparse.tensor import pack_coords

    order = torch.argsort(pack_coords(y.C.long()))
    return float(np.median(times)), t_map, y.F.detach()[order]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--voxel", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    have_me = minkowski_available()
    print(f"sparse conv benchmark: {args.points} points at {args.voxel * 100:.0f} cm, 3x3x3 conv 32->64, fwd+bwd")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(
        f"{'cloud':<9}{'voxels':>8}{'pairs':>10}{'torch ms':>10}{'map ms':>8}{'ME ms':>9}{'ME map':>8}{'ME/torch':>10}"
    )
    for name, make in (("uniform", uniform_cloud), ("room", room_cloud)):
        pts = torch.from_numpy(make(args.points, rng)).float()
        coords, inv = sparse_quantize(pts, torch.zeros(len(pts), dtype=torch.long), args.voxel)
        feats = voxel_mean(torch.randn(len(pts), 32), inv, len(coords))
        x = SparseTensor(coords, feats)
        torch.manual_seed(0)
        conv = SparseConv3d(32, 64, 3, backend="torch")
        t_t, m_t, y_t = bench_torch(x, conv, args.repeats)
        pairs = x.cache.maps[("torch", 1, 1, 3)].size
        if have_me:
            t_m, m_m, y_m = bench_minkowski(SparseTensor(coords, feats), conv, args.repeats)
            if not torch.allclose(y_t, y_m, atol=1e-4, rtol=1e-4):
                raise SystemExit("backends disagree")
            me_cols = f"{t_m * 1e3:>9.1f}{m_m * 1e3:>8.1f}{t_m / t_t:>10.2f}"
        else:
            me_cols = f"{'-':>9}{'-':>8}{'-':>10}"
        print(f"{name:<9}{len(coords):>8}{pairs:>10}{t_t * 1e3:>10.1f}{m_t * 1e3:>8.1f}{me_cols}")
    if not have_me:
        print("MinkowskiEngine is not importable: build it with scripts/install_minkowski.sh")


if __name__ == "__main__":
    main()
