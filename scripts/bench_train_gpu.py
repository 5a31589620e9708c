"""Benchmark (and smoke-check) the training stages on a CUDA GPU: s/step, peak GPU memory and the last logged
loss of each stage, full precision against mixed precision.

Each row is a real ``spade4d`` command run in a fresh process (accelerate's precision is set once per process) for
``--steps`` steps on the synthetic dataset
(generated first when ``--data`` has none): ``pretrain-2d`` (its three stages: the tiny diffusion UNet, LoRA
calibration by DDIM inversion, 2D scene graphs) and ``finetune-4d`` with the SceneLLM. The step time is taken
between the first and the last logged step, so start-up and the first steps (CUDA warm-up) are left out. A row
that fails prints its error and the table says so; the others still run.

    python scripts/bench_train_gpu.py [--data DIR] [--steps 60] [--precisions no,bf16] [--preset quick]
        [--llm tiny] [--stages pretrain-2d,finetune-4d] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from spade4d.cli import build_parser


def run(argv: list[str]) -> None:
    ns = build_parser().parse_args(argv)
    rc = int(ns.func(ns) or 0)
    if rc:
        raise RuntimeError(f"{argv[0]} returned {rc}")


def stage_rate(run_dir: Path) -> tuple[float, float, int]:
    """(s/step between the first and last logged step, last logged loss, steps) of one stage's run folder."""
    hist = json.loads((run_dir / "trainer_state.json").read_text())["history"]
    if len(hist) < 2:
        return float("nan"), hist[-1]["loss"] if hist else float("nan"), len(hist)
    a, b = hist[0], hist[-1]
    return (b["time"] - a["time"]) / (b["step"] - a["step"]), b["loss"], b["step"]


def child(argv: list[str], report: Path) -> int:
    """Run one command here; write its peak GPU memory and error (if any) to ``report``."""
    err = ""
    try:
        run(argv)
    except Exception as e:  # reported in the table
        traceback.print_exc()
        err = f"{type(e).__name__}: {e}"[:120]
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    report.write_text(json.dumps({"peak_gib": peak, "error": err}))
    return 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[3:], Path(sys.argv[2]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="a synthetic dataset folder (made with make-synthetic if missing)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--precisions", default="no,bf16")
    p.add_argument("--preset", default="quick")
    p.add_argument("--llm", default="tiny")
    p.add_argument("--stages", default="pretrain-2d,finetune-4d", help="which commands to run")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()

    work = Path(args.out or tempfile.mkdtemp(prefix="spade4d_bench_gpu_"))
    data = Path(args.data) if args.data else work / "synthetic"
    if not (data / "dataset.json").is_file():
        t = time.time()
        try:
            run(["make-synthetic", "--preset", args.preset, "--out", str(data), "--quiet", "--overwrite"])
        except ImportError as e:  # the generator renders with Open3D, which GPU images often lack
            raise SystemExit(
                f"{data}: no dataset there, and it cannot be generated here ({e}): make it elsewhere with "
                f"'spade4d make-synthetic --preset {args.preset} --out DIR' and pass --data DIR"
            ) from e
        print(f"[bench] generated {data} in {time.time() - t:.0f}s")
    cuda = torch.cuda.is_available()
    dev = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    n = str(args.steps)
    rows = []
    for prec in args.precisions.split(","):
        jobs = {
            "pretrain-2d": (
                ["pretrain-2d", "--format", "synthetic", "--root", str(data), "--preset", args.preset]
                + ["--steps", n, "--calibration-steps", n, "--diffusion-steps", n, "--mixed-precision", prec]
                + ["--quiet"],
                ["diffusion", "calibration", "psg"],
            ),
            "finetune-4d": (
                ["finetune-4d", "--format", "synthetic", "--root", str(data), "--preset", args.preset]
                + ["--steps", n, "--mixed-precision", prec, "--llm", args.llm],
                [""],
            ),
        }
        for name, (argv, stages) in jobs.items():
            if name not in args.stages.split(","):
                continue
            out = work / f"{name}_{prec}"
            shutil.rmtree(out, ignore_errors=True)
            report = work / f"{name}_{prec}.json"
            t = time.time()
            cmd = [sys.executable, __file__, "--child", str(report), argv[0], "--out", str(out), *argv[1:]]
            subprocess.run(cmd, check=False)
            wall = time.time() - t
            try:
                rep = json.loads(report.read_text())
            except (OSError, ValueError):
                rep = {"peak_gib": float("nan"), "error": "the process died (see its output above)"}
            peak, err = rep["peak_gib"], rep["error"]
            for stage in stages:
                d = out / stage if stage else out
                label = f"{name}/{stage}" if stage else name
                try:
                    s_step, loss, steps = stage_rate(d)
                except FileNotFoundError:
                    s_step, loss, steps = float("nan"), float("nan"), 0
                rows.append(
                    {
                        "stage": label,
                        "precision": prec,
                        "s_per_step": s_step,
                        "loss": loss,
                        "steps": steps,
                        "peak_gib": peak,
                        "wall_s": wall,
                        "error": err,
                    }
                )
    print(f"\ntraining stages on {dev}; torch {torch.__version__}, {platform.machine()}; preset {args.preset}")
    print(f"{'stage':<26}{'prec':<6}{'steps':>6}{'s/step':>9}{'steps/s':>9}{'loss':>9}{'peak GiB':>10}  error")
    for r in rows:
        rate = 1 / r["s_per_step"] if r["s_per_step"] == r["s_per_step"] and r["s_per_step"] > 0 else float("nan")
        print(
            f"{r['stage']:<26}{r['precision']:<6}{r['steps']:>6}{r['s_per_step']:>9.3f}{rate:>9.2f}"
            f"{r['loss']:>9.3f}{r['peak_gib']:>10.2f}  {r['error']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev, "torch": torch.__version__, "rows": rows}, indent=1))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
