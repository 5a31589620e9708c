"""Multi-process entry point of ``spade4d finetune-4d`` for launchers.

GPUs:      accelerate launch --num_processes 8 scripts/finetune_4d.py --root D --out RUN [--preset full]
CPU ranks: torchrun --nproc_per_node 2 scripts/finetune_4d.py --root D --out RUN
(``accelerate launch --cpu --num_processes 2`` starts a single process on a CPU-only machine; torchrun starts
both gloo ranks.) Every rank draws its own clips; gradients are averaged by DDP. With ``--report FILE`` each
rank writes a checksum of its final parameters to ``FILE.rank<N>`` (the multi-process test compares them).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from spade4d.training.finetune_4d import finetune_4d, preset


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="PSG4D point-cloud root")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--preset", default="quick")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--model-json", default=None, help="JSON of Model4DConfig overrides (tiny test models)")
    p.add_argument("--report", default=None)
    args = p.parse_args(argv)
    overrides = {"steps": args.steps, "checkpoint_every": args.checkpoint_every}
    if args.model_json:
        overrides["model"] = json.loads(args.model_json)
    cfg = preset(args.preset, **overrides)
    res = finetune_4d(args.root, args.out, cfg, split=args.split, resume=args.resume, progress=False)
    if args.report:
        rank = int(os.environ.get("RANK", 0))
        m = res.model
        with open(f"{args.report}.rank{rank}", "w") as f:
            json.dump(
                {
                    "rank": rank,
                    "world": int(os.environ.get("WORLD_SIZE", 1)),
                    "checksum": float(sum(v.detach().double().sum() for v in m.parameters())),
                    "abs": float(sum(v.detach().double().abs().sum() for v in m.parameters())),
                },
                f,
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
