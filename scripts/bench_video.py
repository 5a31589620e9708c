"""Video inference speed and peak memory against video length (docs/video.md).

Writes videos of a few moving discs at ``--size`` (default 256x192) with ``--frames`` frames each (default 32 and
128), then runs a video model on each in a fresh process and reports frames/s and the process's peak resident
memory. The model is ``--model`` (a finetune-video folder) or, by default, a randomly initialised video model of
the quick size (speed and memory do not depend on the weights). Memory should stay flat in video length: frames
are decoded a chunk at a time and the model runs window by window.

    python scripts/bench_video.py
    python scripts/bench_video.py --frames 32,128,512 --model runs/video/model
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_video(path: Path, frames: int, width: int, height: int) -> None:
    import imageio.v2 as imageio

    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    discs = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-3, 3), rng.uniform(-3, 3)) for _ in range(4)]
    writer = imageio.get_writer(path, fps=10, macro_block_size=2, quality=8)
    for t in range(frames):
        img = np.full((height, width, 3), 60, np.uint8)
        for k, (x, y, vx, vy) in enumerate(discs):
            cx, cy = (x + vx * t) % width, (y + vy * t) % height
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (height / 8) ** 2] = (80 + 40 * k, 200 - 30 * k, 90)
        writer.append_data(img)
    writer.close()


def child(video: str, model_dir: str | None, threads: int) -> None:
    """Run in a fresh process: infer one video, print a JSON line of the time and the peak memory."""
    import resource

    import torch

    from spade4d.data.video import VideoFile
    from spade4d.inference.pipeline import Pipeline4D
    from spade4d.inference.video import predict_videos
    from spade4d.models.model4d import Model4D, Model4DConfig

    torch.set_num_threads(threads)
    if model_dir:
        model = Model4D.from_pretrained(model_dir)
    else:
        torch.manual_seed(0)
        names = ["person", "ball", "dog", "chair"]
        model = Model4D(Model4DConfig(classes=names, predicates=["near", "holding"], voxel_size=0.1, num_queries=16,
                                      video={"stride": 4}))  # fmt: skip
    model.eval()
    ds = VideoFile(video)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        predict_videos(Pipeline4D(model, rgb_source=False), ds, Path(tmp) / "p.json", progress=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"frames": ds.num_frames, "seconds": seconds, "peak_mib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", default="32,128", help="comma-separated video lengths")
    p.add_argument("--size", default="256x192", help="WIDTHxHEIGHT")
    p.add_argument("--model", default=None, help="a finetune-video model folder (default: a random quick-size one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.model, args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(f) for f in args.frames.split(",")]:
            video = Path(tmp) / f"v{n}.mp4"
            write_video(video, n, width, height)
            cmd = [sys.executable, __file__, "--child", str(video), "--threads", str(args.threads)]
            cmd += ["--model", args.model] if args.model else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
    print(f"video inference, {width}x{height}, {args.threads} threads, {platform.machine()}, "
          f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")  # fmt: skip
    print(f"{'frames':>8} {'seconds':>9} {'frames/s':>9} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['frames']:>8} {r['seconds']:>9.1f} {r['frames'] / r['seconds']:>9.2f} {r['peak_mib']:>9.0f}")
    if len(rows) > 1:
        print(f"peak memory {rows[-1]['frames']} vs {rows[0]['frames']} frames: "
              f"{rows[-1]['peak_mib'] / rows[0]['peak_mib']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
