"""Benchmark of the 4D evaluator: the fast path against the plain reference loop.

Sequences are generated on the fly, a chunk at a time (so memory does not depend on their number): GT objects
partition each frame's points into blobs, predictions perturb the GT masks, mislabel a few objects and rank
``--relations`` relations, a share of them true triplets with jittered spans. Both paths see the same decoded
graphs; the reference loop runs on the first ``--oracle-sequences`` only (it is slow) and its outcomes must equal the
fast path's. Peak memory is traced with tracemalloc per path.

    python scripts/bench_evaluator.py                       # the README's setting
    python scripts/bench_evaluator.py --sequences 50        # quicker
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc

import numpy as np

from spade4d.evaluation.metrics_4d import Evaluator4D, Options4D, match_sequence
from spade4d.evaluation.reference import match_sequence_reference
from spade4d.structures import ObjectTube, Relation4D, SceneGraph4D

LABELS = [f"class{i}" for i in range(12)]
PREDICATES = [f"pred{i}" for i in range(15)]


def make_pair(seed: int, frames: int, points: int, objects: int, relations: int) -> tuple[SceneGraph4D, SceneGraph4D]:
    """One (GT, prediction) pair shaped like real data and real model output.

    Classes are skewed as in PVSG / PSG4D (the first class, "person", is about half of the objects). The model
    output scores every predicate for each detected pair (``relations / len(PREDICATES)`` pairs, most of them
    true GT pairs), as query-based scene-graph models do; each relation's span jitters the GT span.
    """
    rng = np.random.default_rng(seed)
    T, N, G = frames, points, objects
    probs = np.r_[0.5, np.full(len(LABELS) - 1, 0.5 / (len(LABELS) - 1))]
    labels = rng.choice(LABELS, G, p=probs)
    gt_objs, pred_objs = {}, {}
    for t in range(T):
        owner = rng.integers(0, G, N)  # the GT objects partition the frame's points
        for g in range(G):
            m = owner == g
            if rng.random() < 0.9:
                gt_objs.setdefault(g, {})[t] = m
            pred_objs.setdefault(g, {})[t] = m ^ (rng.random(N) < 0.01)
    gt = [ObjectTube(g + 1, str(labels[g]), gt_objs.get(g, {})) for g in range(G)]
    extra = 5
    pred = [
        ObjectTube(
            g + 1,
            str(labels[g]) if rng.random() < 0.9 else str(rng.choice(LABELS, p=probs)),
            pred_objs[g],
            float(rng.random()),
        )
        for g in range(G)
    ]
    for e in range(extra):  # false-positive objects
        pred.append(
            ObjectTube(
                G + 1 + e,
                str(rng.choice(LABELS, p=probs)),
                {t: rng.random(N) < 0.05 for t in range(T)},
                float(rng.random()),
            )
        )

    def span() -> tuple[int, int]:
        a, b = sorted(rng.integers(0, T, 2))
        return int(a), int(b)

    gt_rels = []
    for _ in range(relations // 10):
        s, o = rng.choice(G, 2, replace=False) + 1
        gt_rels.append(Relation4D(int(s), int(o), str(rng.choice(PREDICATES)), [span()]))
    n_pairs = max(1, relations // len(PREDICATES))
    pairs = [(g.subject, g.object, g.spans[0]) for g in gt_rels[: int(n_pairs * 0.7)]]
    while len(pairs) < n_pairs:
        s, o = rng.choice(G + extra, 2, replace=False) + 1
        pairs.append((int(s), int(o), span()))
    pred_rels = []
    for s, o, (s0, e0) in pairs:
        for p in PREDICATES:
            j = rng.integers(-2, 3, 2)
            a, b = sorted((int(np.clip(s0 + j[0], 0, T - 1)), int(np.clip(e0 + j[1], 0, T - 1))))
            pred_rels.append(Relation4D(s, o, p, [(a, b)], float(rng.random())))
    n = [N] * T
    return SceneGraph4D(f"s{seed}", T, gt, gt_rels, n), SceneGraph4D(f"s{seed}", T, pred, pred_rels, n)


def timed(fn, pairs, opts, repeats=2):
    """Best wall time of ``repeats`` passes without tracing (tracemalloc slows numpy-heavy code), then peak memory
    in a second, traced run."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = [fn(gt, pred, opts) for gt, pred in pairs]
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    for gt, pred in pairs[:2]:
        fn(gt, pred, opts)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return outs, best, peak


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=500)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--points", type=int, default=20000)
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--relations", type=int, default=300)
    p.add_argument("--oracle-sequences", type=int, default=20)
    p.add_argument("--chunk", type=int, default=20, help="sequences generated at a time for the streamed run")
    args = p.parse_args(argv)
    opts = Options4D()

    # the reference loop on a few sequences, the fast path on the same ones: outcomes must be identical
    few = [make_pair(i, args.frames, args.points, args.objects, args.relations) for i in range(args.oracle_sequences)]
    ref, t_ref, mem_ref = timed(match_sequence_reference, few, opts)
    fast, t_fast_few, mem_fast = timed(match_sequence, few, opts)
    key = lambda outs: [[(o.rank, o.weak_rank, o.pair_rank) for o in out] for out in outs]  # noqa: E731
    identical = key(ref) == key(fast)

    # the fast path streamed over the whole set, generated in chunks (so generating a sequence does not evict the
    # previous one's masks from the caches in the middle of the timing)
    ev = Evaluator4D(opts)
    t_all, gen_all, mem_stream = 0.0, 0.0, 0
    for start in range(0, args.sequences, args.chunk):
        g0 = time.perf_counter()
        chunk = [
            make_pair(i, args.frames, args.points, args.objects, args.relations)
            for i in range(start, min(start + args.chunk, args.sequences))
        ]
        g1 = time.perf_counter()
        gen_all += g1 - g0
        last = start + len(chunk) == args.sequences
        for gt, pred in chunk[:-1] if last else chunk:
            ev.process(gt, pred)
        t_all += time.perf_counter() - g1
    tracemalloc.start()  # the last sequence, traced: the streamed evaluator's memory after many sequences
    ev.process(*chunk[-1])
    mem_stream = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t_all *= args.sequences / max(args.sequences - 1, 1)
    metrics = ev.evaluate()

    rate_ref = len(few) / t_ref
    # peak MB: traced allocations while matching one sequence (the inputs themselves are not counted)
    rate_fast = args.sequences / t_all
    print(
        f"4D evaluator benchmark: {args.sequences} sequences x {args.frames} frames x {args.points} points, "
        f"{args.objects} GT objects, {args.relations} ranked relations each"
    )
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"{'path':<26}{'sequences':>10}{'seq/s':>10}{'peak MB':>10}")
    print(f"{'reference loop':<26}{len(few):>10}{rate_ref:>10.2f}{mem_ref / 2**20:>10.1f}")
    print(f"{'fast path (same seqs)':<26}{len(few):>10}{len(few) / t_fast_few:>10.2f}{mem_fast / 2**20:>10.1f}")
    print(f"{'fast path (streamed)':<26}{args.sequences:>10}{rate_fast:>10.2f}{mem_stream / 2**20:>10.1f}")
    print(
        f"speed-up on the same sequences: {t_ref / t_fast_few:.1f}x (streamed rate / reference rate: "
        f"{rate_fast / rate_ref:.1f}x); "
        f"identical outcomes: {identical}"
    )
    print(
        f"R@20/50/100 = {metrics['R@20']:.2f}/{metrics['R@50']:.2f}/{metrics['R@100']:.2f} over "
        f"{metrics['num_gt_relations']} GT relations (data generation took {gen_all:.1f}s, not counted)"
    )
    if not identical:
        raise SystemExit("the fast path and the reference loop disagree")


if __name__ == "__main__":
    main()
