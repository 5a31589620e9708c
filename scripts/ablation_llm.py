"""Ablation of the SceneLLM on the synthetic test split: one table, five rows.

    python scripts/ablation_llm.py --data outputs/demo/synthetic --core-2d outputs/demo/pretrain_2d/model \
        --out outputs/ablation_llm [--only full] [--threads 1]

Rows (same preset, seed and number of optimisation steps; every 4D model starts from the same 2D core unless
the row says otherwise; the 2D transfer moves the RGT + scene-graph head, the setting that did best in
``experiment_transfer.py``):

- ``full``: 4D model + SceneLLM trained jointly, chained inference (objects, then relations);
- ``single turn``: the same, trained and run with the whole graph in one answer (``--chain single``);
- ``no 2D transfer``: the full model, 4D part from scratch;
- ``no LLM``: the 4D model alone (its relation head names the relations);
- ``pipeline``: segment, then classify, then relate, each stage trained on its own with the previous frozen (no
  shared gradients): stage 1 the encoder + query decoder on the mask losses, stage 2 the object/point class heads,
  stage 3 the RGT + predicate head; the steps split 4:1.5:1.5;
- ``full, head``: the full row's model, its 4D relation head alone (``spade4d infer --no-llm``; no training).

``--seeds 0,1,2`` repeats the rows for each training seed (runs in ``<out>/seed<N>/``) and adds mean ± sd rows.

Columns: 4D R@20/50/100 and mR@20/50/100 (docs/metrics.md, default options) and R@K over the out-of-vocabulary
relations (a class or predicate never in 4D training). Each row's run folder keeps its ``result.json``, so rows
can run in parallel processes (``--only``) and an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment_transfer import summarise  # noqa: E402

from spade4d.data.psg4d import PSG4DPointCloud  # noqa: E402
from spade4d.evaluation import Evaluator4D, Options4D  # noqa: E402
from spade4d.evaluation.run import relations_with_names  # noqa: E402
from spade4d.inference.chained import chained_predict  # noqa: E402
from spade4d.inference.infer_4d import predict_sequence  # noqa: E402
from spade4d.io import write_json  # noqa: E402
from spade4d.models.model4d import Model4D  # noqa: E402
from spade4d.training.finetune_4d import finetune_4d, preset  # noqa: E402

COLS = ["R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100", "OOV R@20", "OOV R@50", "OOV R@100"]
# kept in each row's result.json, not printed: pair recall (the subject and object found and named, any predicate)
# and weak recall (vIoU >= 0.1); PR@K near R@K means the predicates are right and the objects are the limit
DIAGNOSTICS = ["PR@20", "PR@50", "PR@100", "wR@50"]
LLM = {"llm": "tiny", "train_base": True}
ROWS = {
    "full": dict(core=True, llm={**LLM, "chain": "two"}),
    "single turn": dict(core=True, llm={**LLM, "chain": "single"}),
    "no 2D transfer": dict(core=False, llm={**LLM, "chain": "two"}),
    "no LLM": dict(core=True, llm=None),
    "pipeline": dict(core=False, llm=None, stages=True),
    "full, head": dict(of="full"),  # scored on another row's model
}
# (name, share of the steps, trained parameter prefixes, loss weights). Later stages keep every loss weight:
# their frozen parameters stay put anyway. (An earlier version zeroed the mask weights of the later stages, which
# then also dropped the mask cost from the Hungarian matching, so the class head learned on queries matched by
# class alone and the pipeline row scored 0; the matching costs are now LossWeights.match_*, apart from the
# loss weights.)
PIPELINE = [
    ("segment", 4, ("encoder", "decoder"), {"cls": 0.0, "relation": 0.0, "semantic": 0.0}),
    ("classify", 1.5, ("head.class_proj", "head.pool_proj", "head.no_object", "head.class_scale", "point_proj"), {}),
    ("relate", 1.5, ("rgt", "rel_temporal", "head.predicate"), {}),
]


def score(model: Model4D, test: PSG4DPointCloud, oov_c: set[str], oov_p: set[str], use_llm: bool, args) -> dict:
    ev = Evaluator4D(Options4D(), predicates=test.predicates)
    ev_oov = Evaluator4D(Options4D(), predicates=test.predicates)
    t0 = time.time()
    for i in range(len(test)):
        seq, gt = test[i]
        if use_llm:
            pred = chained_predict(
                model,
                seq,
                gt.video_id,
                samples=args.samples,
                spans=args.spans,
                complete=args.complete,
                rescore=args.rescore,
                name_rescore=getattr(args, "name_rescore", None),
                scores=args.scores,
            )
        else:
            pred = predict_sequence(model, seq, gt.video_id)
        ev.process(gt, pred)
        ev_oov.process(relations_with_names(gt, oov_c, oov_p), pred)
    m, mo = ev.evaluate(), ev_oov.evaluate()
    out = {k: m[k] for k in COLS[:6] + DIAGNOSTICS}
    out.update({f"OOV R@{k}": mo[f"R@{k}"] for k in (20, 50, 100)})
    out["OOV relations"] = mo["num_gt_relations"]
    out["infer_seconds"] = time.time() - t0
    return out


def train_row(name: str, row: dict, data: Path, run: Path, core: Path, args) -> Path:
    root = data / "psg4d_pc"
    base = dict(steps=args.steps, seed=args.seed)
    if not row.get("stages"):
        llm = row["llm"] and {**row["llm"], "relation_order": args.relation_order}
        if llm and args.grad_to_4d is not None:
            llm["grad_to_4d"] = args.grad_to_4d
        cfg = preset(
            args.preset,
            **base,
            llm=llm,
            transfer_parts=("rgt", "head") if row["core"] else None,
            clip_llm_apart=None if args.clip_llm_apart is None else args.clip_llm_apart == "on",
        )
        if not (run / "model" / "config.json").is_file():
            finetune_4d(root, run, cfg, resume=True, init_from_2d=core if row["core"] else None)
        return run / "model"
    steps = preset(args.preset, **base).steps
    total = sum(s for _, s, _, _ in PIPELINE)
    prev = None
    for stage, share, only, weights in PIPELINE:
        cfg = preset(args.preset, **base, weights=weights, train_only=only)
        cfg.steps = max(1, round(steps * share / total))
        sub = run / stage
        if not (sub / "model" / "config.json").is_file():
            finetune_4d(root, sub, cfg, resume=True, init_from=prev)
        prev = sub / "model"
    return prev


def result_file(base: Path, name: str) -> Path:
    """Where a row's result lives: in its run folder, or, for a row scored on another row's model, beside that."""
    row = ROWS[name]
    return base / row.get("of", name).replace(" ", "_") / ("result_head.json" if "of" in row else "result.json")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a synthetic dataset folder (spade4d make-synthetic)")
    p.add_argument("--core-2d", required=True, help="a 2D core folder (spade4d pretrain-2d's <out>/model)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="quick")
    p.add_argument("--steps", type=int, default=None, help="4D steps per row (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", action="append", choices=list(ROWS), default=None, help="run these rows only")
    p.add_argument("--threads", type=int, default=None, help="torch threads (for rows run in parallel)")
    p.add_argument("--samples", type=int, default=None, help="SceneLLM rows: sampled turn-2 answers (default: config)")
    p.add_argument("--spans", choices=["llm", "head"], default="head", help="SceneLLM rows: relation frames from")
    p.add_argument(
        "--complete",
        choices=["none", "after", "joint", "graph"],
        default=None,
        help="SceneLLM rows: head completion (default: config)",
    )
    p.add_argument(
        "--scores", choices=["decoded", "dense"], default=None, help="SceneLLM rows: relation scores (default: config)"
    )
    p.add_argument(
        "--relation-order",
        choices=["canonical", "shuffled"],
        default="canonical",
        help="SceneLLM rows: the relations of training answers sorted, or shuffled per clip",
    )
    p.add_argument(
        "--grad-to-4d",
        type=float,
        default=None,
        help="SceneLLM rows: share of the LLM losses' gradient in the 4D model (default: the config's, 0)",
    )
    p.add_argument(
        "--clip-llm-apart",
        choices=["on", "off"],
        default=None,
        help="SceneLLM rows: clip the LLM's gradient apart from the 4D model's (default: the config's, on)",
    )
    p.add_argument("--name-rescore", type=float, default=None, help="SceneLLM rows: class-head weight in names")
    p.add_argument("--rescore", type=float, default=None, help="SceneLLM rows: relation-head weight (default: config)")
    p.add_argument("--seeds", default=None, help="comma-separated training seeds (runs in <out>/seed<N>/)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, out, core = Path(args.data), Path(args.out), Path(args.core_2d)
    meta = json.loads((data / "dataset.json").read_text())
    oov_c, oov_p = set(meta["oov_classes"]), set(meta["oov_predicates"])
    test = PSG4DPointCloud(data / "psg4d_pc", "test")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    results: dict[str, dict[int, dict]] = {}
    for seed in seeds:
        args.seed = seed
        base = out / f"seed{seed}" if args.seeds else out
        for name in args.only or list(ROWS):
            row = ROWS[name]
            src = row.get("of", name)
            run = base / src.replace(" ", "_")
            res_file = result_file(base, name)
            if not res_file.is_file():
                t0 = time.time()
                model_dir = train_row(src, ROWS[src], data, run, core, args)
                train_s = time.time() - t0
                use_llm = ROWS[src]["llm"] is not None and "of" not in row
                res = score(Model4D.from_pretrained(model_dir), test, oov_c, oov_p, use_llm, args)
                res["train_seconds"] = train_s
                write_json(res_file, res, indent=1)
        for name in ROWS:
            f = result_file(base, name)
            if f.is_file():
                results.setdefault(name, {})[seed] = json.loads(f.read_text())
    flat = {n: (r[seeds[0]] if not args.seeds else {str(s): x for s, x in r.items()}) for n, r in results.items()}
    write_json(out / "results.json", flat, indent=1)
    print(f"\n4D scene graphs, synthetic test split ({len(test)} sequences), {args.preset} preset, seeds {seeds}")
    print("\n".join(summarise(results, {n: n for n in ROWS}, COLS)))


if __name__ == "__main__":
    main()
