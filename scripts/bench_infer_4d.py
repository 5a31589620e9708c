"""Benchmark: 4D inference frames/s and peak memory against sequence length.

A sequence of ``--frames`` frames x ``--points`` points (frames of the synthetic world when ``--root`` is given,
resampled to the point count; otherwise a random room-like scan) goes through ``predict_sequence`` with the
model's window. Each sequence length runs in a fresh process, which reports its peak resident memory
(``ru_maxrss``) before and after inference: with windowed inference the increase should stay flat as the
sequence grows (only the per-point frame assignment and the pair probabilities grow, a few bytes per point).

    python scripts/bench_infer_4d.py --model outputs/demo/finetune_4d/model --root outputs/demo/synthetic/psg4d_pc
    python scripts/bench_infer_4d.py                # a randomly initialised quick-preset model
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def one_run(args) -> dict:
    import numpy as np
    import torch

    from spade4d.inference.infer_4d import predict_sequence
    from spade4d.models.model4d import Model4D, Model4DConfig
    from spade4d.structures import PointSequence

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    if args.model:
        model = Model4D.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        classes = [f"class {i}" for i in range(24)]
        preds = [f"predicate {i}" for i in range(15)]
        model = Model4D(
            Model4DConfig(classes=classes, predicates=preds),
            class_embed=torch.nn.functional.normalize(torch.randn(24, 384), dim=-1),
            predicate_embed=torch.nn.functional.normalize(torch.randn(15, 384), dim=-1),
        )
    if args.root:
        from spade4d.data.psg4d import PSG4DPointCloud

        seq0, _ = PSG4DPointCloud(args.root, "test")[0]
        src = [seq0.frame(t) for t in range(seq0.num_frames)]
    else:
        src = []
        for _ in range(8):
            xyz = rng.random((args.points, 3)) * [5, 4, 2.5]
            xyz[: args.points // 2, 2] = 0  # a floor
            src.append({"xyz": xyz.astype(np.float32), "rgb": rng.random((args.points, 3)).astype(np.float32)})
    xyz, rgb = [], []
    for t in range(args.frames):
        f = src[t % len(src)]
        idx = rng.choice(len(f["xyz"]), args.points, replace=len(f["xyz"]) < args.points)
        xyz.append(f["xyz"][idx] + rng.normal(0, 0.002, (args.points, 3)).astype(np.float32))
        rgb.append(f["rgb"][idx])
    seq = PointSequence.from_frames(xyz, rgb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    g = predict_sequence(model, seq, "bench", window=args.window)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "frames": args.frames,
        "seconds": dt,
        "fps": args.frames / dt,
        "rss_before_mb": before,
        "rss_peak_mb": after,
        "objects": len(g.objects),
        "relations": len(g.relations),
        "window": args.window or model.config.window,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--root", default=None, help="PSG4D point-cloud root whose first test sequence gives the frames")
    p.add_argument("--points", type=int, default=20000)
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64])
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help=argparse.SUPPRESS)  # internal: one run
    args = p.parse_args(argv)
    if args.frames is not None:
        print(json.dumps(one_run(args)))
        return
    rows = []
    for n in args.lengths:
        cmd = [sys.executable, __file__, "--frames", str(n), "--points", str(args.points)]
        for flag in ("model", "root", "window", "threads"):
            if getattr(args, flag) is not None:
                cmd += [f"--{flag}", str(getattr(args, flag))]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(res.stderr[-2000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(
        f"4D inference benchmark: {args.points} points/frame, window {rows[0]['window']}, "
        f"{'trained model ' + args.model if args.model else 'random quick-preset model'}"
    )
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    print(f"{'frames':>7}{'seconds':>9}{'frames/s':>10}{'RSS before MB':>15}{'peak MB':>9}{'increase MB':>13}")
    for r in rows:
        inc = r["rss_peak_mb"] - r["rss_before_mb"]
        print(
            f"{r['frames']:>7}{r['seconds']:>9.1f}{r['fps']:>10.2f}{r['rss_before_mb']:>15.0f}"
            f"{r['rss_peak_mb']:>9.0f}{inc:>13.0f}"
        )


if __name__ == "__main__":
    main()
