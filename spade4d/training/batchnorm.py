"""Recalibrated ("precise") BatchNorm statistics for a trained 4D model.

During training a BatchNorm layer keeps running statistics as an exponential average with momentum 0.1, so the
statistics a model is saved with come mostly from its last ten or so clips. With one clip per step (the quick
preset) that is a handful of sequences, and the model's evaluation-mode behaviour depends on which ones they
happened to be. On the synthetic test split this alone moved 4D R@50 by up to 22 points between runs that
differ only in floating-point summation order (README, "BatchNorm statistics").

:func:`recalibrate_batchnorm` replaces those statistics with plain averages over many windows of the training
split, read exactly as inference reads them (the model's window length, every point). The idea is the "precise
BN" of Wu & Johnson, *Rethinking "Batch" in BatchNorm* (2021), also used as a hook in Detectron2. Only the
statistics change; no weight does.
"""

from __future__ import annotations

from itertools import groupby

import numpy as np
import torch
from tqdm import tqdm

from spade4d.data.frames import frame_loader, sequence_center


def batchnorm_layers(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [
        m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def _windows(dataset, window: int, max_windows: int | None) -> list[tuple[int, list[int]]]:
    """(sequence index, frame indices) of every window of every sequence, evenly thinned to ``max_windows``."""
    out = []
    for i in range(len(dataset)):
        T = dataset.num_frames(i)
        out += [(i, list(range(a, min(a + window, T)))) for a in range(0, T, window)]
    if max_windows is not None and len(out) > max_windows:
        keep = np.linspace(0, len(out) - 1, max_windows).round().astype(int)
        out = [out[k] for k in np.unique(keep)]
    return out


@torch.no_grad()
def recalibrate_batchnorm(
    model,
    dataset,
    window: int | None = None,
    max_windows: int | None = 400,
    rgb_source=None,
    progress: bool = True,
) -> int:
    """Set every BatchNorm layer's running mean and variance in ``model`` (a Model4D) to the average of its
    batch statistics over the windows of ``dataset`` (a PSG4DPointCloud split, or any dataset with
    ``num_frames(i)``): ``window`` frames each (the model's by default), at most ``max_windows`` of them spread
    evenly over the split. A layer that no window reaches keeps its statistics; an interrupted or failed pass
    leaves every layer as it was. The model is left in evaluation mode. Returns the number of windows read."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    wins = _windows(dataset, window or model.config.window, max_windows)
    if not wins:
        raise ValueError("recalibrating BatchNorm needs at least one window: the split has no frames")
    bar = tqdm(total=len(wins), desc="BatchNorm statistics", disable=not progress)
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]

    def restore(only_unreached: bool) -> None:
        for m, (momentum, mean, var, n) in zip(layers, saved):
            m.momentum = momentum
            if not only_unreached or int(m.num_batches_tracked) == 0:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)

    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every window counts the same
    model.train()
    try:
        for i, group in groupby(wins, key=lambda w: w[0]):  # the windows of one sequence are consecutive
            seq, graph = dataset[i]
            load = frame_loader(seq, graph.video_id, rgb_source if model.lift is not None else None)
            times = [t for _, t in group]  # BatchNorm sits in the encoder, which the carried memory does not reach
            for _ in model.run(load, times, sequence_center(seq)):
                bar.update(1)
    except BaseException:
        restore(only_unreached=False)  # interrupted or failed: the statistics as they were, not half an average
        raise
    finally:
        bar.close()
        model.eval()
    restore(only_unreached=True)  # a layer no window reached keeps its statistics
    return len(wins)
