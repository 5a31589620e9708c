"""Throughput of RGB-D lifting and of the dataset readers, with peak memory, on the synthetic data.

python scripts/bench_readers.py                      # generates the quick synthetic set into a temp dir
python scripts/bench_readers.py --root outputs/demo/synthetic
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path


def measure(fn) -> tuple[float, int, object]:
    """(seconds, peak traced MB, result) of fn(); timing and tracing in separate runs."""
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dt, peak, out


def main(argv: list[str] | None = None) -> None:
    from spade4d.data.lift import lift_rgbd
    from spade4d.data.psg import PSGDataset
    from spade4d.data.psg4d import PSG4DGTA, PSG4DPointCloud
    from spade4d.data.synthetic.generate import generate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="a synthetic dataset (default: generate the quick preset)")
    p.add_argument("--frames", type=int, default=64, help="RGB-D frames to lift")
    args = p.parse_args(argv)
    tmp = None
    if args.root is None:
        tmp = tempfile.TemporaryDirectory()
        args.root = str(Path(tmp.name) / "syn")
        generate(args.root, "quick", seed=0, progress=False)
    root = Path(args.root)

    gta = PSG4DGTA(root / "psg4d_gta", "test")
    recs = []
    for i in range(len(gta)):
        ann = gta.annotation(i)
        recs += [gta.frame(ann.video_id, t) for t in range(ann.num_frames)]
        if len(recs) >= args.frames:
            break
    recs = recs[: args.frames]
    h, w = recs[0].depth.shape
    rows = []
    for voxel in (None, 0.02):

        def lift_all(voxel=voxel):
            return sum(
                len(lift_rgbd(r.rgb, r.depth, r.K, r.world_from_camera, instance=r.instance, voxel_size=voxel))
                for r in recs
            )

        dt, peak, n = measure(lift_all)
        rows.append(
            (
                f"lift {w}x{h}" + (f", voxel {voxel} m" if voxel else ""),
                len(recs) / dt,
                f"{n / dt / 1e6:.2f} M points/s",
                peak,
            )
        )

    def read_gta():
        return sum(gta.frame(gta.annotation(0).video_id, t).depth.size for t in range(gta.annotation(0).num_frames))

    dt, peak, _ = measure(read_gta)
    rows.append(("PSG4D-GTA frame reader", gta.annotation(0).num_frames / dt, "", peak))

    pc = PSG4DPointCloud(root / "psg4d_pc", "test")

    def read_pc():
        return sum(points.num_frames for points, _ in pc)

    dt, peak, frames = measure(read_pc)
    rows.append(("point-cloud layout reader", frames / dt, f"{len(pc) / dt:.1f} sequences/s", peak))

    psg = PSGDataset(root / "psg" / "psg.json", root / "psg", "train")

    def read_psg():
        return sum(len(g.objects) for g in psg)

    dt, peak, _ = measure(read_psg)
    rows.append(("PSG reader (lazy masks)", len(psg) / dt, "images", peak))

    print(f"readers and lifting on the synthetic quick set ({root})")
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, python {platform.python_version()}")
    print(f"{'what':<34}{'items/s':>10}  {'':<22}{'peak MB':>9}")
    for name, rate, extra, peak in rows:
        print(f"{name:<34}{rate:>10.1f}  {extra:<22}{peak / 2**20:>9.1f}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
