"""Multi-process entry point of ``spade4d finetune-4d`` for launchers: every option of the command, forwarded to it.

GPUs:      accelerate launch --num_processes 8 scripts/finetune_4d.py --root D --out RUN --preset full \\
               --init-from-2d RUN2D/model --llm smollm2
CPU ranks: torchrun --nproc_per_node 2 scripts/finetune_4d.py --format synthetic --root D --out RUN
(``accelerate launch --cpu --num_processes 2`` starts a single process on a CPU-only machine; torchrun starts
both gloo ranks.) Every rank draws its own clips; gradients are averaged by DDP.

One option of its own: ``--report FILE`` makes each rank write a checksum of its final parameters to
``FILE.rank<N>`` (the ranks must agree; the multi-process test compares them).
"""

from __future__ import annotations

import json
import os
import sys

import torch

from spade4d.cli import USER_ERRORS, build_parser, run_finetune_4d


def main(argv: list[str]) -> int:
    report = None
    if "--report" in argv:
        i = argv.index("--report")
        report, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    args = build_parser().parse_args(["finetune-4d", "--quiet", *argv])
    try:
        res = run_finetune_4d(args)
    except USER_ERRORS as e:
        print(f"finetune_4d.py: error: {e}", file=sys.stderr)
        return 2
    if report:
        rank = int(os.environ.get("RANK", 0))
        values = [v.detach().double() for v in res.model.parameters()]
        with open(f"{report}.rank{rank}", "w") as f:
            json.dump(
                {
                    "rank": rank,
                    "world": int(os.environ.get("WORLD_SIZE", 1)),
                    "checksum": float(sum(v.sum() for v in values)),
                    "abs": float(sum(v.abs().sum() for v in values)),
                    "llm": res.model.llm is not None,
                },
                f,
            )
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1:]))
