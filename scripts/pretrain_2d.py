"""Multi-process entry point of ``spade4d pretrain-2d`` for launchers.

GPUs, SD-1.5 from a local folder (the ``paper`` preset):
    accelerate launch --num_processes 8 --mixed_precision bf16 scripts/pretrain_2d.py \\
        --psg-json data/psg/psg.json --coco-root data/coco --sd15 /models/stable-diffusion-v1-5 \\
        --preset paper --out runs/pretrain_2d
CPU ranks: torchrun --nproc_per_node 2 scripts/pretrain_2d.py --format synthetic --root D --out RUN

Every stage is an accelerate run (DDP over the ranks); evaluation and the final folder are written by rank 0.
"""

from __future__ import annotations

import sys

from spade4d.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain-2d", *sys.argv[1:]]))
