"""Benchmark: the three parts of the 4D training step that session 13 sped up, each against the way it was done
before, forward + backward where training runs both, on demo-sized inputs made here (no dataset needed).

- ``cross-attention``: one decoder layer's cross-attention of 16 queries over the voxel keys of a 4-frame window
  (``nn.MultiheadAttention`` against :func:`spade4d.models.query_decoder.cross_attention` on the same module);
- ``kernel map``: the stride-1 3x3x3 map of a 4-frame window (binary search against the dense table lookup);
- ``point features``: every point's feature against the 1,536 sampled points per frame the losses read.

The window: four frames of a room-like scan (floor, walls, boxes; ``bench_sparse_conv.room_cloud``), 19,000
points each, voxelised at 10 cm as in the quick preset.

    python scripts/bench_4d_step_parts.py [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sparse_conv import room_cloud  # noqa: E402

from spade4d.models.encoder import SparseEncoder  # noqa: E402
from spade4d.models.query_decoder import cross_attention  # noqa: E402
from spade4d.models.sparse import sparse_quantize  # noqa: E402
from spade4d.models.sparse import torch_backend as tb  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def window(frames: int, points: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    xyz = [torch.from_numpy(room_cloud(points, rng)).float() for _ in range(frames)]
    frame = torch.cat([torch.full((points,), t) for t in range(frames)])
    return torch.cat(xyz), frame


def bench_attention(keys_per_frame: int, frames: int, repeats: int) -> tuple[float, float, float]:
    torch.manual_seed(0)
    D, H, Q = 96, 4, 16
    mha = nn.MultiheadAttention(D, H, batch_first=True)
    x = torch.randn(frames, Q, D, requires_grad=True)
    keys = torch.randn(frames, keys_per_frame, D, requires_grad=True)
    pad = torch.zeros(frames, keys_per_frame, dtype=torch.bool)
    pad[:, int(keys_per_frame * 0.9) :] = True  # frames differ in voxel count: the shorter ones are padded
    mask = torch.rand(frames, Q, keys_per_frame) < 0.7
    mask[:, :, 0] = False

    def old():
        h, _ = mha(x, keys, keys, key_padding_mask=pad, attn_mask=mask.repeat_interleave(H, 0))
        h.sum().backward()

    def new():
        cross_attention(mha, x, keys, keys, pad, mask).sum().backward()

    with torch.no_grad():
        ref, _ = mha(x, keys, keys, key_padding_mask=pad, attn_mask=mask.repeat_interleave(H, 0))
        err = (cross_attention(mha, x, keys, keys, pad, mask) - ref).abs().max().item()
    return median_ms(old, repeats), median_ms(new, repeats), err


def bench_kernel_map(coords: torch.Tensor, repeats: int) -> tuple[float, float]:
    new = median_ms(lambda: tb.build_kernel_map(coords, coords, 3, 1), repeats)
    saved = tb._DENSE_MAX_CELLS
    tb._DENSE_MAX_CELLS = 0  # forces the binary search
    try:
        old = median_ms(lambda: tb.build_kernel_map(coords, coords, 3, 1), repeats)
    finally:
        tb._DENSE_MAX_CELLS = saved
    return old, new


def bench_point_features(xyz, frame, frames: int, per_frame: int, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    enc = SparseEncoder(in_channels=6, channels=(32, 48, 64, 96), out_dim=96)
    rgb = torch.rand(len(xyz), 3)
    _, points = enc.encode_points(xyz, rgb, frame, 0.1, xyz.mean(0))
    voxel_feats = points.voxel_feats.detach().requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    sample = torch.cat(
        [torch.nonzero(frame == t).squeeze(1)[torch.randperm(int((frame == t).sum()), generator=g)[:per_frame]]
         for t in range(frames)]
    )  # fmt: skip

    def fresh():
        return type(points)(voxel_feats, points.voxel_index, points.local, enc.point_mlp)

    def old():  # every point's feature, then the sampled rows
        fresh().all()[sample].sum().backward()

    def new():
        fresh().select(sample).sum().backward()

    return median_ms(old, repeats), median_ms(new, repeats)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--points", type=int, default=19_000, help="points per frame")
    p.add_argument("--sampled", type=int, default=1536, help="points per frame the losses read")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    xyz, frame = window(args.frames, args.points, rng)
    coords, _ = sparse_quantize(xyz, frame, 0.1)
    keys_per_frame = int(torch.bincount(coords[:, 0]).max()) + 1  # + the null key
    print(
        f"4D step parts: {args.frames} frames x {args.points} points, {len(coords)} voxels at 10 cm "
        f"({keys_per_frame} keys per frame); median of {args.repeats}"
    )
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"{'part':<34}{'before ms':>10}{'now ms':>9}{'speed-up':>10}")
    a_old, a_new, err = bench_attention(keys_per_frame, args.frames, args.repeats)
    m_old, m_new = bench_kernel_map(coords, args.repeats)
    f_old, f_new = bench_point_features(xyz, frame, args.frames, args.sampled, args.repeats)
    rows = [
        ("cross-attention, one layer, f+b", a_old, a_new),
        ("kernel map, stride 1, 3x3x3", m_old, m_new),
        ("point features + MLP, f+b", f_old, f_new),
    ]
    for name, old, new in rows:
        print(f"{name:<34}{old:>10.1f}{new:>9.1f}{old / new:>9.2f}x")
    print(f"cross-attention: largest difference from nn.MultiheadAttention {err:.1e}")


if __name__ == "__main__":
    main()
