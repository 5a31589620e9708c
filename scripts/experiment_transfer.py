"""Does the 2D core help the 4D model? Scratch vs 2D transfer vs transfer + lifted 2D features.

    python scripts/experiment_transfer.py --data outputs/demo/synthetic --out outputs/experiment_transfer

Trains (or reuses) the 2D core with ``pretrain-2d`` on the dataset's 2D images, then three 4D models with the
same preset, seed and steps: (a) from scratch, (b) initialised by the 2D→4D transfer, (c) transfer + the 2D
backbone's features lifted onto the points. Each is run on the test split and scored (4D R@K / mR@K, PROTOCOLS.md
§3.2, default options), plus recall on the out-of-vocabulary relations: the test relations whose predicate or
subject/object class never occurs in 4D training (they occur in the 2D images). Prints one table and writes
``results.json``; runs that finished are reused, so the script can be re-run after an interruption.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from spade4d.data.cameras import CameraFrames
from spade4d.data.psg4d import PSG4DPointCloud
from spade4d.evaluation import Evaluator4D, Options4D
from spade4d.inference.infer_4d import predict_dataset
from spade4d.io import write_json
from spade4d.models.model4d import Model4D
from spade4d.structures import SceneGraph4D
from spade4d.training.finetune_4d import finetune_4d, preset
from spade4d.training.pretrain_2d import preset_2d, pretrain_2d


def oov_graph(g: SceneGraph4D, classes: set[str], predicates: set[str]) -> SceneGraph4D:
    """The GT graph with only the relations that involve an out-of-vocabulary class or predicate."""
    label = {o.id: o.label for o in g.objects}
    rels = [
        r for r in g.relations if r.predicate in predicates or label[r.subject] in classes or label[r.object] in classes
    ]
    return SceneGraph4D(g.video_id, g.num_frames, g.objects, rels, g.num_points)


def score(model: Model4D, test: PSG4DPointCloud, rgb, oov_c: set[str], oov_p: set[str]) -> dict:
    ev, ev_oov = (
        Evaluator4D(Options4D(), predicates=test.predicates),
        Evaluator4D(Options4D(), predicates=test.predicates),
    )
    t0 = time.time()
    for (_, gt), pred in zip(test, predict_dataset(model, test, rgb_source=rgb)):
        ev.process(gt, pred)
        ev_oov.process(oov_graph(gt, oov_c, oov_p), pred)
    m, mo = ev.evaluate(), ev_oov.evaluate()
    out = {k: m[k] for k in ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")}
    out.update({f"OOV R@{k}": mo[f"R@{k}"] for k in (20, 50, 100)})
    out["OOV relations"] = mo["num_gt_relations"]
    out["infer_seconds"] = time.time() - t0
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a synthetic dataset folder (spade4d make-synthetic)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="quick")
    p.add_argument("--steps", type=int, default=None, help="4D steps (default: the preset's)")
    p.add_argument("--core-2d", default=None, help="an existing 2D core folder (default: train one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated variant letters to run, e.g. a,b (default: all)")
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    meta = json.loads((data / "dataset.json").read_text())
    oov_c, oov_p = set(meta["oov_classes"]), set(meta["oov_predicates"])
    core = Path(args.core_2d) if args.core_2d else out / "pretrain_2d" / "model"
    if not (core / "config.json").is_file():
        t0 = time.time()
        pretrain_2d(
            data / "psg" / "psg.json",
            data / "psg",
            out / "pretrain_2d",
            preset_2d(args.preset, seed=args.seed),
            resume=True,
        )
        print(f"2D core trained in {time.time() - t0:.0f} s")
    test = PSG4DPointCloud(data / "psg4d_pc", "test")
    rgb = CameraFrames(data / "psg4d_gta")
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    variants = {
        "(a) scratch": dict(init_from_2d=None, lift=False),
        "(b) 2D transfer": dict(init_from_2d=core, lift=False),
        "(c) transfer + lifted 2D features": dict(init_from_2d=core, lift=True),
        "(d) transfer of RGT + head only": dict(init_from_2d=core, lift=False, transfer_parts=("rgt", "head")),
    }
    only = set(args.only.split(",")) if args.only else None
    for name, v in variants.items():
        if name in results or (only and name.split()[0].strip("()") not in only):
            continue
        run = out / name.split()[0].strip("()")
        cfg = preset(
            args.preset,
            steps=args.steps,
            seed=args.seed,
            lift=v["lift"] or None,
            transfer_parts=v.get("transfer_parts"),
        )
        t0 = time.time()
        model_dir = run / "model"
        if not (model_dir / "config.json").is_file():
            finetune_4d(
                data / "psg4d_pc", run, cfg, resume=True, init_from_2d=v["init_from_2d"], rgb_root=data / "psg4d_gta"
            )
        train_s = time.time() - t0
        res = score(Model4D.from_pretrained(model_dir), test, rgb, oov_c, oov_p)
        res["train_seconds"] = train_s
        results[name] = res
        write_json(out / "results.json", results, indent=1)
    cols = ["R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100", "OOV R@20", "OOV R@50", "OOV R@100"]
    print(f"\n4D scene graphs, synthetic test split ({len(test)} sequences), {args.preset} preset")
    print(f"{'':36}" + "".join(f"{c:>10}" for c in cols))
    for name, r in results.items():
        print(f"{name:36}" + "".join(f"{r[c]:10.2f}" for c in cols))


if __name__ == "__main__":
    main()
