"""The accelerate training loop every stage shares (diffusion pretraining, calibration, 2D and 4D training).

A stage supplies ``step_fn(step, k) -> terms`` for micro-batch ``k`` of optimisation step ``step``: a dict whose
``loss_*`` entries are the (already weighted) loss tensors the loop sums and back-propagates, and whose other
entries are floats it logs beside them (:func:`sum_losses`). Its data draw must depend only on (seed, step, rank,
k), so ``resume`` continues exactly. The run directory holds
``checkpoints/step_XXXXXX/`` (the last ``keep_checkpoints``; each written as ``.partial`` and renamed when
complete, so a killed run never leaves half a checkpoint), ``trainer_state.json`` (step, loss history),
``loss.png`` and TensorBoard logs under ``logs/``.

A checkpoint holds what training changes: trainable parameters, buffers, optimiser, scheduler. Frozen parameters
(a pretrained LLM's base, a frozen teacher UNet, the stages a pipeline froze) are rebuilt by the run's own set-up
on resume, so they are left out; a SmolLM2 run's checkpoint is a few MB instead of 540.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from spade4d.io import write_json
from spade4d.provenance import record_environment

logger = logging.getLogger(__name__)


def sum_losses(terms: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to back-propagate (the sum of the ``loss_*`` tensors, in their order) and the values to log: every
    term as a float and ``loss``, the total."""
    losses = [v for k, v in terms.items() if k.startswith("loss_")]
    if not losses:
        raise ValueError(f"a training step returned no loss_* term (got {sorted(terms)})")
    total = sum(losses)
    logged = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
    return total, {"loss": float(total.detach()), **logged}


class TrainError(ValueError):
    pass


@dataclass
class LoopSettings:
    steps: int
    accumulation: int = 1
    grad_clip: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    validate_every: int = 0  # with a validate hook: a pass every this many steps and at the last one
    # stop at this step of the schedule (checkpointed there; a resumed run continues to ``steps``); 0: run it all
    stop_after: int = 0


def cosine_warmup(steps: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(steps - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))

    return f


def frozen_names(model) -> set[str]:
    """State-dict names of the parameters that do not train (tied ones under every name)."""
    return {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _drop_frozen(models, weights, _output_dir) -> None:
    for model, state in zip(models, weights):
        for name in frozen_names(model):
            state.pop(name, None)


class WeightAverage:
    """An exponential moving average of a model's trainable floating-point parameters (Polyak averaging): after
    each optimiser step ``avg = d * avg + (1 - d) * param``, with ``d = min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates, so the first steps, far from any minimum, fade quickly (the warm-up of TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``). Buffers are not averaged: a 4D run recomputes its
    BatchNorm statistics for the averaged weights (training.batchnorm). A checkpoint keeps the average as
    ``weight_average.safetensors``, so a resumed run continues it exactly."""

    FILE = "weight_average.safetensors"

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight averaging: decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()}
        self.average = {n: p.detach().float().clone() for n, p in self.params.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        weight = 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, avg in self.average.items():
            avg.lerp_(self.params[name].detach().float(), weight)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Write the averaged values into the model's parameters (the end of a run)."""
        for name, avg in self.average.items():
            self.params[name].copy_(avg)

    @contextlib.contextmanager
    def applied(self):
        """The model with the averaged weights inside the block (a validation pass), its own ones after."""
        own = {n: p.detach().clone() for n, p in self.params.items()}
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(own[name])

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {n: t.contiguous() for n, t in self.average.items()}
        save_file(tensors, str(Path(folder) / self.FILE), metadata={"updates": str(self.updates)})

    def load(self, folder: Path) -> None:
        from safetensors import safe_open

        f = Path(folder) / self.FILE
        if not f.is_file():
            raise TrainError(f"{folder}: no {self.FILE}; the run was saved without weight averaging: use another --out")
        with safe_open(str(f), "pt") as st:
            missing = sorted(set(self.average) - set(st.keys()))
            if missing:
                raise TrainError(f"{f}: lacks the average of {len(missing)} parameters (first: {missing[0]})")
            for name in self.average:
                self.average[name].copy_(st.get_tensor(name))
            self.updates = int(st.metadata()["updates"])


def _check_checkpoint(ckpt: Path, models) -> None:
    """Every trainable tensor of every prepared model must be in the checkpoint (it is loaded non-strictly, since
    frozen parameters are left out): a clear error instead of a run resumed half from scratch."""
    from safetensors import safe_open

    for i, model in enumerate(models):
        f = ckpt / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
        if not f.is_file():
            continue  # another serialisation (pickle): accelerate's own errors apply
        try:
            with safe_open(str(f), "pt") as st:
                have = set(st.keys())
        except Exception as e:  # safetensors raises its own error type on a truncated header
            raise TrainError(f"{f}: unreadable checkpoint weights ({str(e).splitlines()[0][:160]})") from None
        frozen = frozen_names(model)
        by_storage: dict[tuple, list[str]] = {}  # tied tensors (an LM's embedding and head) are saved once
        for name, t in model.state_dict(keep_vars=True).items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else (name,)
            by_storage.setdefault(key, []).append(name)
        missing = sorted(n[0] for n in by_storage.values() if not (set(n) & have) and not set(n) <= frozen)
        if missing:
            raise TrainError(
                f"{f}: the checkpoint lacks {len(missing)} trainable tensors of this run's model (first: "
                f"{missing[0]}); it was written by another configuration: use another --out or retrain"
            )


def checkpoint_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file a checkpoint holds (but its trainer state), to notice files changed after saving."""
    import hashlib

    out = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "trainer_state.json"):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[str(f.relative_to(folder))] = h.hexdigest()
    return out


def verify_checkpoint(ckpt: Path) -> dict:
    """The trainer state of ``ckpt``, after checking its files are those it was saved with (a replaced RNG-state
    or weights file is refused with its name)."""
    try:
        st = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        raise TrainError(
            f"{ckpt / 'trainer_state.json'}: unreadable ({e}); delete {ckpt} to resume from the one before"
        ) from None
    recorded = st.get("sha256")
    if recorded is not None:  # checkpoints of earlier versions carry no digests
        now = checkpoint_digests(ckpt)
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        if changed:
            raise TrainError(
                f"{ckpt / changed[0]}: differs from the file this checkpoint was saved with "
                f"({len(changed)} files changed); delete {ckpt} to resume from the one before"
            )
    return st


def save_checkpoint(acc, out: Path, step: int, history: list[dict], average: WeightAverage | None = None) -> Path:
    """Write ``checkpoints/step_XXXXXX`` through a ``.partial`` folder. A failed save (a full disk) removes the
    partial folder and raises a one-line :class:`TrainError` naming it and the free space; the previous complete
    checkpoint stays, so ``--resume`` continues from it."""
    ckpt = out / "checkpoints" / f"step_{step:06d}"
    partial = ckpt.with_name(ckpt.name + ".partial")
    try:
        acc.save_state(str(partial))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if average is not None:
                average.save(partial)
            state = {"step": step, "history": history, "sha256": checkpoint_digests(partial)}
            write_json(partial / "trainer_state.json", state)
            if ckpt.exists():
                shutil.rmtree(ckpt)
            os.replace(partial, ckpt)
    except (OSError, RuntimeError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        free = shutil.disk_usage(out).free if out.exists() else 0
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:200]
        raise TrainError(
            f"{partial}: saving the step-{step} checkpoint failed ({reason}; {free / 2**20:.0f} MiB free); "
            "the previous checkpoint is kept: free space and rerun with --resume"
        ) from None
    return ckpt


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted(p for p in (out / "checkpoints").glob("step_*") if (p / "trainer_state.json").is_file())
    return ckpts[-1] if ckpts else None


def plot_losses(history: list[dict], path: Path, title: str = "training losses") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spade4d.io import atomic_path

    if not history:
        return
    keys = list(dict.fromkeys(k for h in history for k in h if k == "loss" or k.startswith(("loss_", "val_loss"))))
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(h["step"], h[key]) for h in history if key in h]
        if points and all(v > 0 for _, v in points if v == v):
            ax.plot(*zip(*points), label=key, marker="o" if key.startswith("val") else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    if ax.lines:  # a run whose losses are all zero or missing so far has nothing to label
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


class TiedHeadFilter(logging.Filter):
    """Drops accelerate's "Removed shared tensor" warning when every name it removed is a language model's output
    head: its weight is tied to the input embeddings, safetensors keeps one copy, and loading the embeddings
    restores both, so the warning says nothing a user should act on. Any other shared tensor still warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Removed shared tensor" not in message:  # accelerate prefixes "[RANK n] "
            return True
        names = re.findall(r"'([^']+)'", message.split(" while saving")[0])
        return not names or not all(n.endswith("lm_head.weight") for n in names)


def _quiet_tied_heads() -> None:
    log = logging.getLogger("accelerate.utils.other")
    if not any(isinstance(f, TiedHeadFilter) for f in log.filters):
        log.addFilter(TiedHeadFilter())


def make_accelerator(out: Path, mixed_precision: str = "no", accumulation: int = 1, find_unused: bool = True):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    mixed_precision = mixed_precision if cuda else "no"
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state()  # an earlier stage in this process ran at another precision
    acc = Accelerator(
        cpu=not cuda,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=accumulation,
        log_with="tensorboard",
        project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
    )
    acc.register_save_state_pre_hook(_drop_frozen)  # checkpoints leave frozen parameters out
    _quiet_tied_heads()
    return acc


def main_info(acc, message: str) -> None:
    """Log ``message`` (INFO) on the main process only."""
    if acc.is_main_process:
        logger.info(message)


def resume_state(acc, out: Path, name: str, average: WeightAverage | None = None) -> tuple[int, list[dict]]:
    """Load the latest checkpoint of ``out`` into the prepared objects and ``average`` (checked first: digests,
    then the tensors' names and shapes); returns its (step, history), or (0, []) when there is none."""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        main_info(acc, f"[{name}] no checkpoint in {out}/checkpoints: starting from scratch")
        return 0, []
    st = verify_checkpoint(ckpt)
    _check_checkpoint(ckpt, getattr(acc, "_models", []))
    try:
        acc.load_state(str(ckpt), strict=False)  # frozen parameters are not in it (they were built above)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError) as e:
        raise TrainError(
            f"{ckpt}: unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:160]}); delete "
            "this folder to resume from the one before it"
        ) from None
    if average is not None:
        average.load(ckpt)
    main_info(acc, f"[{name}] resumed from {ckpt} at step {st['step']}")
    return st["step"], st["history"]


def keep_checkpoint(acc, out: Path, step: int, history: list[dict], keep: int, name: str, average=None) -> None:
    """Save the step's checkpoint, the trainer state and the loss plot; keep the newest ``keep`` checkpoints."""
    acc.wait_for_everyone()
    save_checkpoint(acc, out, step, history, average)
    if acc.is_main_process:
        write_json(out / "trainer_state.json", {"step": step, "history": history})
        plot_losses(history, out / "loss.png", f"{name} losses")
        done = sorted(p for p in (out / "checkpoints").glob("step_*") if not p.name.endswith(".partial"))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def start_stage(acc, out: Path, settings: LoopSettings, name: str, resume: bool, average=None):
    """(step, history, end) of a stage about to run: resumed from ``out``'s checkpoint or from 0 (refused when
    ``out`` already holds checkpoints), and the step it runs to; a start that trains records its environment."""
    step, history = resume_state(acc, out, name, average) if resume else (0, [])
    if not resume and acc.is_main_process and (out / "checkpoints").exists():
        raise TrainError(f"{out} already holds checkpoints: pass --resume to continue, or choose another --out")
    end = min(settings.steps, settings.stop_after or settings.steps)
    if acc.is_main_process and step < end:
        record_environment(out, step)  # the code and libraries of this start (spade4d reproduce compares them)
    return step, history, end


def train_loop(
    acc,
    model,
    opt,
    sched,
    out: Path,
    settings: LoopSettings,
    step_fn: Callable[[int, int], dict],
    name: str,
    resume: bool = False,
    progress: bool = True,
    params: list | None = None,
    validate: Callable[[int, list[dict]], dict] | None = None,
    average: WeightAverage | None = None,
) -> tuple[int, list[dict]]:
    """Run (or resume) a stage to ``settings.steps`` (or ``settings.stop_after``); returns (step, history). ``params``:
    what to clip — a list of parameters (clipped together), or a list of such lists (each clipped to ``grad_clip`` on
    its own, so a part with large gradients does not shrink the others' steps). ``validate(step, history)``: run on the
    main process every ``settings.validate_every`` steps; its values join the history and TensorBoard. ``average``: a
    :class:`WeightAverage` of the model, updated after every optimiser step, checkpointed, and the weights validation
    sees; the caller decides what to do with it at the end.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    step, history, end = start_stage(acc, out, settings, name, resume, average)
    acc.init_trackers("logs")
    groups = [list(model.parameters())] if params is None else params
    if groups and not isinstance(groups[0], (list, tuple)):
        groups = [groups]
    model.train()
    bar = tqdm(total=settings.steps, initial=step, disable=not (progress and acc.is_local_main_process), desc=name)
    t0 = time.time()
    while step < end:
        parts_sum: dict[str, float] = {}
        for k in range(settings.accumulation):
            with acc.accumulate(model), acc.autocast():
                loss, parts = sum_losses(step_fn(step, k))
                if not torch.isfinite(loss.detach()).all():
                    raise TrainError(
                        f"[{name}] step {step + 1}: the loss is {float(loss.detach()):g}; not a finite number "
                        "(lower the learning rate, or check the data); the last checkpoint is intact"
                    )
                acc.backward(loss)
                if acc.sync_gradients and settings.grad_clip:
                    for group in groups:
                        acc.clip_grad_norm_(group, settings.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad()
                if average is not None and acc.sync_gradients:
                    average.update()
            for key, v in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + v / settings.accumulation
        step += 1
        bar.update(1)
        if step % settings.log_every == 0 or step == settings.steps:
            rec = {"step": step, "lr": sched.get_last_lr()[0], "time": time.time() - t0, **parts_sum}
            history.append(rec)
            acc.log({k: v for k, v in rec.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{parts_sum['loss']:.3f}")
        every = settings.validate_every
        if validate is not None and every and (step % every == 0 or step == settings.steps):
            with average.applied() if average is not None else contextlib.nullcontext():
                values = validate(step, history) if acc.is_main_process else {}
            acc.wait_for_everyone()
            if values:  # joins the step's record when the step was logged
                if history and history[-1]["step"] == step:
                    history[-1].update(values)
                else:
                    history.append({"step": step, **values})
                acc.log(values, step=step)
        if step % settings.checkpoint_every == 0 or step == end:
            keep_checkpoint(acc, out, step, history, settings.keep_checkpoints, name, average)
    bar.close()
    acc.wait_for_everyone()
    return step, history


def finish_trackers(acc) -> None:
    """Close a stage's loggers but keep the process group (``end_training`` may destroy it)."""
    for tracker in acc.trackers:
        tracker.finish()


def finish_stage(acc, model, history: list[dict], out: Path, title: str, save: bool = True) -> None:
    """End of a stage: the model as ``out/model`` and ``loss.png`` (main process; not when ``save`` is False, for a
    stage stopped before its last step), then the loggers closed."""
    if acc.is_main_process and save:
        model.save_pretrained(Path(out) / "model")
        plot_losses(history, Path(out) / "loss.png", title)
    finish_trackers(acc)  # not end_training: later stages still need the process group
