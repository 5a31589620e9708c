"""The validation pass of ``finetune-4d``: every ``validate_every`` steps (and at the last step), the model in
training is scored on the first ``val_sequences`` sequences of the val split, with the full vocabulary:

- ``val_R@50`` / ``val_mR@50``: 4D recall of the relation head's predictions (docs/metrics.md, the default protocol);
- ``val_loss``: the training loss on one fixed clip per sequence (the same clips every pass).

Both go to TensorBoard (``logs/``) and to the run's history. When ``val_R@50`` beats every earlier pass (ties keep the
earlier model), the model is saved as ``<out>/model_best`` with the full vocabulary and a ``validation.json``. That
folder keeps the BatchNorm statistics of training time; ``spade4d recalibrate-bn`` recomputes them, as the end of
training does for ``<out>/model``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from spade4d.io import write_json

logger = logging.getLogger(__name__)


class Validator:
    def __init__(self, core, val_ds, sampler, vocabulary: tuple[list[str], list[str]], out: Path):
        """``core``: the unwrapped model in training; ``val_ds``: the val split; ``sampler``: a ClipSampler over
        ``val_ds``; ``vocabulary``: the full (classes, predicates)."""
        self.core, self.ds, self.sampler, self.vocabulary, self.out = core, val_ds, sampler, vocabulary, Path(out)

    def sequences(self, limit: int) -> list[int]:
        return list(range(min(limit, len(self.ds))))

    @torch.no_grad()
    def __call__(self, step: int, history: list[dict], cfg, weights) -> dict[str, float]:
        """One pass (main process); returns the values to log. ``history``: the run's records so far (earlier
        passes among them, a resumed run's too), against which the best model is judged."""
        from spade4d.evaluation.metrics_4d import evaluate_4d
        from spade4d.inference.infer_4d import predict_sequence
        from spade4d.training.clips import clip_loss
        from spade4d.training.loop import sum_losses

        core = self.core
        best = max((h["val_R@50"] for h in history if "val_R@50" in h), default=float("-inf"))
        trained = (list(core.config.classes), list(core.config.predicates))
        was_training = core.training
        core.eval()
        core.set_vocabulary(*self.vocabulary)
        try:
            losses, preds, gts = [], [], []
            for i in self.sequences(cfg.val_sequences):
                seq, graph, _center = self.sampler.sequence(i)
                preds.append(predict_sequence(core, seq, graph.video_id, rgb_source=self.sampler.rgb_source))
                gts.append(graph)
                rng = np.random.default_rng([cfg.seed, 7919, i])  # the same clip every pass
                frames, targets, center = self.sampler.clip_of(i, rng, *self.vocabulary, augment=False)
                gen = torch.Generator().manual_seed(i)
                terms = clip_loss(core, frames, targets, center, weights, cfg.points_per_frame, gen)
                losses.append(sum_losses(terms)[1]["loss"])
            metrics = evaluate_4d(preds, gts)
            values = {"val_loss": float(np.mean(losses)), "val_R@50": metrics["R@50"], "val_mR@50": metrics["mR@50"]}
            if values["val_R@50"] > best:
                best = values["val_R@50"]
                self.save_best(step, values, len(gts))
        finally:
            core.set_vocabulary(*trained)
            core.train(was_training)
        logger.info(
            f"[finetune-4d] step {step}: val R@50 {values['val_R@50']:.2f}, mR@50 {values['val_mR@50']:.2f}, "
            f"loss {values['val_loss']:.4f} ({len(gts)} sequences; best R@50 {best:.2f})"
        )
        return values

    def save_best(self, step: int, values: dict, count: int) -> None:
        best = self.core.save_pretrained(self.out / "model_best")
        write_json(best / "validation.json", {"step": step, "sequences": count, **values})


def open_validation(fmt: str, root, annotation, split: str = "val"):
    """The val split of the training data, or None (logged) when the data has none."""
    from spade4d.data.files import DatasetError
    from spade4d.data.psg4d import open_point_clouds

    try:
        ds = open_point_clouds(fmt, root, split, annotation)
    except (DatasetError, ValueError, KeyError) as e:
        logger.info(f"[finetune-4d] no validation: {split!r} split not readable ({str(e).splitlines()[0][:160]})")
        return None
    if len(ds) == 0:
        logger.info(f"[finetune-4d] no validation: the {split!r} split of {root} is empty")
        return None
    return ds


def export_checkpoint(run, checkpoint=None, out=None) -> Path:
    """Turn a checkpoint of the ``finetune-4d`` run folder ``run`` (default: its newest) into a model folder that
    ``infer`` loads (default ``<run>/model_step_XXXXXX``). The model is rebuilt as the run built it (its config,
    seed, data and initialisation, recorded in ``train_config.json``), so that parameters a checkpoint leaves out
    (frozen ones) are what they were; the checkpoint's weights are then loaded and checked, and the model is saved
    with the full vocabulary; a run with weight averaging exports the checkpoint's averaged weights, as its end
    does. BatchNorm statistics are the checkpoint's (``spade4d recalibrate-bn`` recomputes them)."""
    from accelerate.utils import set_seed
    from safetensors.torch import load_file

    from spade4d.data.psg4d import open_point_clouds
    from spade4d.io import read_json
    from spade4d.training.finetune_4d import Train4DConfig, build_model, restrict_training
    from spade4d.training.loop import (
        TrainError,
        WeightAverage,
        _check_checkpoint,
        latest_checkpoint,
        verify_checkpoint,
    )

    run = Path(run)
    config = read_json(run / "train_config.json")
    if "run" not in config or "vocabulary" not in config:
        raise TrainError(f"{run / 'train_config.json'}: written by an older spade4d (no 'run' record): cannot rebuild")
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(run)
    if ckpt is None or not (ckpt / "model.safetensors").is_file():
        raise TrainError(f"{ckpt or run / 'checkpoints'}: no checkpoint with model.safetensors")
    step = verify_checkpoint(ckpt)["step"]
    cfg, r, vocab = Train4DConfig(**config["train"]), config["run"], config["vocabulary"]
    set_seed(cfg.seed)
    ds = open_point_clouds(r["format"], r["root"], r["split"], r["annotation"])
    model, _ = build_model(cfg, vocab["classes"], vocab["predicates"], r["init_from"], r["init_from_2d"])
    restrict_training(model, cfg, ds, r["split"])
    _check_checkpoint(ckpt, [model])
    missing, unexpected = model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)
    if unexpected:
        raise TrainError(f"{ckpt / 'model.safetensors'}: {len(unexpected)} tensors this run's model lacks "
                         f"(first: {unexpected[0]})")  # fmt: skip
    if cfg.weight_average:  # the run saves the averaged weights, so its checkpoints export those
        average = WeightAverage(model, cfg.weight_average)
        average.load(ckpt)
        average.copy_to_model()
    model.set_vocabulary(vocab["classes"], vocab["predicates"])
    model.config.frames = config["model"].get("frames")
    return model.save_pretrained(Path(out) if out else run / f"model_step_{step:06d}")
