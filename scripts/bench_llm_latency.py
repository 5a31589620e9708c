"""Latency of chained inference: turn 1 + turn 2 tokens/s, wall time per sequence, with and without KV-cache
reuse, and the share of time spent in the LLM.

    python scripts/bench_llm_latency.py --data outputs/demo/synthetic [--model outputs/demo/finetune_4d/model]
        [--llm smollm2] [--sequences 3] [--samples 0] [--threads 2]

With ``--model`` the trained 4D model is used (its own SceneLLM, or ``--llm`` attached to it with fresh
adapters); without, a quick-preset 4D model with random weights. The LLM's answers then have the lengths the
grammar allows an untrained model (up to ``max_objects`` objects and ``max_relations`` relations), which is the
slow end. Each sequence runs twice: turn 2 continuing turn 1's KV cache, and turn 2 re-encoding the whole
conversation (prompt, scene tokens, turn-1 answer, question) first. Prints a table; ``--json`` writes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from spade4d.data.psg4d import PSG4DPointCloud
from spade4d.inference.chained import ChainStats, chained_predict, decode, run_4d
from spade4d.inference.grammar import RelationGrammar
from spade4d.io import write_json
from spade4d.models.model4d import Model4D, Model4DConfig
from spade4d.models.scene_llm import SceneLLM, SceneLLMConfig
from spade4d.training.finetune_4d import preset


def build(args) -> Model4D:
    if args.model:
        model = Model4D.from_pretrained(args.model)
        if args.llm and (model.llm is None or model.llm.config.llm != args.llm):
            model.llm = SceneLLM(SceneLLMConfig(llm=args.llm), model.config.dim, num_tubes=model.config.num_queries)
        return model
    meta = json.loads((Path(args.data) / "dataset.json").read_text())
    torch.manual_seed(0)
    cfg = Model4DConfig(
        classes=meta["thing_classes"] + meta["stuff_classes"],
        predicates=meta["predicates"],
        llm={"llm": args.llm},
        **preset("quick").model,
    )
    return Model4D(cfg)


def run(model, seqs, reuse: bool, samples: int) -> dict:
    tot = ChainStats()
    wall = 0.0
    for seq, gt in seqs:
        t0 = time.perf_counter()
        chained_predict(model, seq, gt.video_id, reuse_cache=reuse, samples=samples, stats=tot, rescore=0.0)
        wall += time.perf_counter() - t0
    n = len(seqs)
    llm_s = tot.turn1_s + tot.turn2_s
    return {
        "turn1 tok/s": tot.turn1_tokens / max(tot.turn1_s, 1e-9),
        "turn2 tok/s": tot.turn2_tokens / max(tot.turn2_s, 1e-9),
        "turn1 s/seq": tot.turn1_s / n,
        "turn2 s/seq": tot.turn2_s / n,
        "turn2 prompt tokens/seq": tot.prompt2_tokens / n,
        "generated tokens/seq": (tot.turn1_tokens + tot.turn2_tokens) / n,
        "wall s/seq": wall / n,
        "LLM share %": 100 * llm_s / max(wall, 1e-9),
        "4D model s/seq": tot.model4d_s / n,
    }


def _after_turn1(model, seq, gt, names: list[str]):
    """The conversation up to the end of a turn-1 answer fixed to ``names``: its KV cache and the pieces."""
    llm = model.llm
    _, tube = run_4d(model, seq, gt.video_id)
    tubes = list(range(len(names)))
    ans1, name_ids = llm.object_answer(names, tubes)
    prompt = llm.prompt_ids(seq.num_frames)
    bridge = llm.bridge_ids(seq.num_frames, [llm.ref_text(n, i) for i, n in enumerate(names)])
    _, cache = llm.run(llm.embed(prompt + ans1, llm.scene_tokens(tube)))
    return tube, prompt + ans1, name_ids, bridge, cache


def _turn2_prompt(llm, tube, head, bridge, cache, reuse: bool):
    """Encode turn 2's question: continuing ``cache``, or re-encoding the whole conversation."""
    if reuse:
        return llm.run(llm.embed(bridge), cache)
    return llm.run(llm.embed(head + bridge, llm.scene_tokens(tube)))


@torch.no_grad()
def prefill(model, seqs) -> dict:
    """Turn 2's first token: continuing the cache vs re-encoding the conversation (median over sequences)."""
    llm = model.llm
    out = {"reuse": [], "re-encode": []}
    for seq, gt in seqs:
        tube, head, _, bridge, cache = _after_turn1(model, seq, gt, ["person", "chair", "table", "cup", "floor"])
        for key, reuse in (("reuse", True), ("re-encode", False)):
            t0 = time.perf_counter()
            h, _ = _turn2_prompt(llm, tube, head, bridge, cache, reuse)
            llm.logits(h[-1], llm.pointer_keys(llm.scene_tokens(tube)))
            out[key].append(time.perf_counter() - t0)
            cache.crop(-(cache.get_seq_length() - len(head)))  # back to the end of turn 1
    return {k: sorted(v)[len(v) // 2] for k, v in out.items()}


@torch.no_grad()
def forced_turn2(model, seqs, reuse: bool) -> dict:
    """Turn 2 after a turn-1 answer fixed to the sequence's GT object names (so turn 2 always runs, with a
    realistic object list even for an untrained LLM): greedy grammar-constrained decoding."""
    llm = model.llm
    secs, toks, prompt_toks = 0.0, 0, 0
    for seq, gt in seqs:
        names = [o.label for o in gt.objects][: min(llm.config.max_objects, llm.config.num_tubes)]
        tube, head, name_ids, bridge, cache = _after_turn1(model, seq, gt, names)
        t0 = time.perf_counter()
        h, cache = _turn2_prompt(llm, tube, head, bridge, cache, reuse)
        prompt_toks += len(bridge) if reuse else len(head + bridge)
        refs = [llm.ref_tokens(n, i, i) for i, n in enumerate(name_ids)]
        g = RelationGrammar(llm.tokens, refs, seq.num_frames, llm.config.max_relations)
        scene = llm.scene_tokens(tube)
        d, _ = decode(llm, g, llm.logits(h[-1], llm.pointer_keys(scene)), cache, 768, scene=scene)
        secs += time.perf_counter() - t0
        toks += len(d.tokens)
    n = len(seqs)
    return {
        "turn2 s/seq": secs / n,
        "turn2 tokens/seq": toks / n,
        "turn2 tok/s": toks / max(secs, 1e-9),
        "turn2 prompt tokens/seq": prompt_toks / n,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--sequences", type=int, default=3)
    p.add_argument("--samples", type=int, default=0, help="sampled turn-2 answers beside the greedy one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build(args).eval()
    test = PSG4DPointCloud(Path(args.data) / "psg4d_pc", "test")
    seqs = [test[i] for i in range(min(args.sequences, len(test)))]
    chained_predict(model, seqs[0][0], seqs[0][1].video_id, samples=0)  # warm-up
    rows = {"reuse": run(model, seqs, True, args.samples), "re-encode": run(model, seqs, False, args.samples)}
    pf = prefill(model, seqs)
    forced = {"reuse": forced_turn2(model, seqs, True), "re-encode": forced_turn2(model, seqs, False)}
    print(
        f"\nchained inference, {model.llm.config.llm} LLM, {len(seqs)} sequences x {seqs[0][0].num_frames} frames, "
        f"{args.threads} threads ({platform.processor() or platform.machine()}), samples={args.samples}"
    )
    keys = list(rows["reuse"])
    print(f"{'':26}{'KV reuse':>12}{'re-encode':>12}")
    for k in keys:
        print(f"{k:26}{rows['reuse'][k]:12.2f}{rows['re-encode'][k]:12.2f}")
    print(f"{'turn-2 prefill s (median)':26}{pf['reuse']:12.3f}{pf['re-encode']:12.3f}")
    print("turn 2 after the GT object list as turn 1 (greedy):")
    for k in forced["reuse"]:
        print(f"  {k:24}{forced['reuse'][k]:12.2f}{forced['re-encode'][k]:12.2f}")
    speed = forced["re-encode"]["turn2 s/seq"] / max(forced["reuse"]["turn2 s/seq"], 1e-9)
    print(f"turn 2 speed-up from reuse: {speed:.2f}x whole turn, {pf['re-encode'] / pf['reuse']:.2f}x prefill")
    if args.json:
        write_json(
            args.json,
            {"rows": rows, "forced_turn2": forced, "prefill": pf, "turn2_speedup": speed, "args": vars(args)},
            indent=1,
        )


if __name__ == "__main__":
    main()
