"""Does the 2D core help the 4D model? Scratch vs 2D transfer vs transfer + lifted 2D features.

    python scripts/experiment_transfer.py --data outputs/demo/synthetic --out outputs/experiment_transfer \
        [--seeds 0,1,2] [--only a,b] [--jobs 2]

Trains (or reuses) the 2D core with ``pretrain-2d`` on the dataset's 2D images, then 4D models with the same
preset and steps, for every training seed asked for: (a) from scratch, (b) initialised by the 2D→4D transfer,
(c) transfer + the 2D backbone's features lifted onto the points, (d) transfer of the RGT + head only. Each is
run on the test split and scored (4D R@K / mR@K, docs/metrics.md, default options), plus recall on the
out-of-vocabulary relations: the test relations whose predicate or subject/object class never occurs in 4D
training (they occur in the 2D images). Prints one table (every run, then mean ± standard deviation over the
seeds) and writes ``results.json``; each run keeps its own ``result.json`` under ``<out>/seed<N>/<letter>/``, so
finished runs are reused after an interruption. ``--jobs 2`` trains two runs at once on one torch thread each:
on 2 cores that is about 1.4x the throughput of one run on both.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from spade4d.data.cameras import CameraFrames
from spade4d.data.psg4d import PSG4DPointCloud
from spade4d.evaluation import Evaluator4D, Options4D
from spade4d.evaluation.run import relations_with_names
from spade4d.inference.infer_4d import predict_dataset
from spade4d.io import write_json
from spade4d.models.model4d import Model4D
from spade4d.training.finetune_4d import finetune_4d, preset
from spade4d.training.pretrain_2d import preset_2d, pretrain_2d


def score(model: Model4D, test: PSG4DPointCloud, rgb, oov_c: set[str], oov_p: set[str]) -> dict:
    ev, ev_oov = (
        Evaluator4D(Options4D(), predicates=test.predicates),
        Evaluator4D(Options4D(), predicates=test.predicates),
    )
    t0 = time.time()
    for (_, gt), pred in zip(test, predict_dataset(model, test, rgb_source=rgb)):
        ev.process(gt, pred)
        ev_oov.process(relations_with_names(gt, oov_c, oov_p), pred)
    m, mo = ev.evaluate(), ev_oov.evaluate()
    out = {k: m[k] for k in ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")}
    out.update({f"OOV R@{k}": mo[f"R@{k}"] for k in (20, 50, 100)})
    out["OOV relations"] = mo["num_gt_relations"]
    out["infer_seconds"] = time.time() - t0
    return out


VARIANTS = {
    "a": ("(a) scratch", dict(init_from_2d=False, lift=False)),
    "b": ("(b) 2D transfer", dict(init_from_2d=True, lift=False)),
    "c": ("(c) transfer + lifted 2D features", dict(init_from_2d=True, lift=True)),
    "d": ("(d) transfer of RGT + head only", dict(init_from_2d=True, lift=False, transfer_parts=("rgt", "head"))),
}
COLS = ["R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100", "OOV R@20", "OOV R@50", "OOV R@100"]


def run_one(data: Path, out: Path, core: Path, letter: str, seed: int, args) -> dict:
    """Train (or reuse) and score one (variant, seed); the result is cached in ``<run>/result.json``."""
    run = out / f"seed{seed}" / letter
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    meta = json.loads((data / "dataset.json").read_text())
    _, v = VARIANTS[letter]
    cfg = preset(
        args.preset,
        steps=args.steps,
        lr=args.lr,
        warmup=args.warmup,
        seed=seed,
        num_threads=args.threads,
        lift=v["lift"] or None,
        transfer_parts=v.get("transfer_parts"),
    )
    if args.augment:
        cfg = replace(cfg, augment={})
    t0 = time.time()
    if not (run / "model" / "config.json").is_file():
        finetune_4d(
            data / "psg4d_pc",
            run,
            cfg,
            resume=True,
            init_from_2d=core if v["init_from_2d"] else None,
            rgb_root=data / "psg4d_gta",
            progress=args.jobs == 1,
        )
    res = score(
        Model4D.from_pretrained(run / "model"),
        PSG4DPointCloud(data / "psg4d_pc", "test"),
        CameraFrames(data / "psg4d_gta"),
        set(meta["oov_classes"]),
        set(meta["oov_predicates"]),
    )
    res["train_seconds"] = time.time() - t0 - res["infer_seconds"]
    write_json(run / "result.json", res, indent=1)
    return res


def _worker(job) -> dict:
    return run_one(*job)


def summarise(results: dict[str, dict[int, dict]], names: dict[str, str] | None = None, cols=COLS) -> list[str]:
    """Per-seed rows, then mean ± standard deviation over the seeds of each variant (``names``: a variant's row
    label; default: this script's variant names)."""
    names = names or {x: v[0] for x, v in VARIANTS.items()}
    lines = [f"{'':40}" + "".join(f"{c:>12}" for c in cols)]
    for key, by_seed in results.items():
        for seed, r in sorted(by_seed.items()):
            lines.append(f"{names[key] + f' s{seed}':40}" + "".join(f"{r[c]:12.2f}" for c in cols))
    if any(len(s) > 1 for s in results.values()):
        lines.append("mean ± std over seeds")
        for key, by_seed in results.items():
            vals = {c: np.array([r[c] for r in by_seed.values()]) for c in cols}
            cells = "".join(
                f"{vals[c].mean():7.2f}±{vals[c].std(ddof=1) if len(by_seed) > 1 else 0:4.1f}" for c in cols
            )
            lines.append(f"{names[key] + f' ({len(by_seed)} seeds)':40}" + cells)
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a synthetic dataset folder (spade4d make-synthetic)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="quick")
    p.add_argument("--steps", type=int, default=None, help="4D steps (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="4D learning rate (default: the preset's)")
    p.add_argument("--warmup", type=int, default=None, help="4D warm-up steps (default: the preset's)")
    p.add_argument("--augment", action="store_true", help="4D training with point-cloud augmentation (clips.Augment)")
    p.add_argument("--core-2d", default=None, help="an existing 2D core folder (default: train one)")
    p.add_argument("--seeds", default="0", help="comma-separated 4D training seeds, e.g. 0,1,2")
    p.add_argument("--only", default="a,b,c,d", help="comma-separated variant letters to run (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each on --threads torch threads")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: 1 when --jobs > 1)")
    args = p.parse_args(argv)
    if args.jobs > 1 and args.threads is None:
        args.threads = 1
    data, out = Path(args.data), Path(args.out)
    letters = args.only.split(",")
    if bad := [x for x in letters if x not in VARIANTS]:
        p.error(f"unknown variant(s) {bad}; choose from {sorted(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    core = Path(args.core_2d) if args.core_2d else out / "pretrain_2d" / "model"
    if not (core / "config.json").is_file():
        t0 = time.time()
        pretrain_2d(
            data / "psg" / "psg.json", data / "psg", out / "pretrain_2d", preset_2d(args.preset, seed=0), resume=True
        )
        print(f"2D core trained in {time.time() - t0:.0f} s")
    jobs = [(data, out, core, x, s, args) for s in seeds for x in letters]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            done = pool.map(_worker, jobs, chunksize=1)
    else:
        done = [run_one(*j) for j in jobs]
    results: dict[str, dict[int, dict]] = {}
    for (_, _, _, x, s, _), r in zip(jobs, done):
        results.setdefault(x, {})[s] = r
    write_json(out / "results.json", {VARIANTS[x][0]: {str(s): r for s, r in v.items()} for x, v in results.items()})
    test = PSG4DPointCloud(data / "psg4d_pc", "test")
    print(f"\n4D scene graphs, synthetic test split ({len(test)} sequences), {args.preset} preset, core {core}")
    print("\n".join(summarise(results)))


if __name__ == "__main__":
    main()
