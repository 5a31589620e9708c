"""Fine-tuning the 4D model with HF accelerate (CPU here; DDP/FSDP and mixed precision on GPUs).

Each optimisation step draws, per process, ``clips_per_step`` clips (gradient accumulation): a training
sequence and ``clip_frames`` of its frames at a random stride. The draw depends only on (seed, step, rank), so
``--resume`` continues exactly: the model, optimizer, scheduler and RNG states come from the latest checkpoint
(``accelerator.save_state``), and the data stream from the step number. The run directory holds:

- ``checkpoints/step_XXXXXX/`` (the last ``keep_checkpoints``), ``trainer_state.json`` (step, loss history);
- ``model/`` the final model (``save_pretrained``), ``loss.png`` and TensorBoard logs under ``logs/``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from spade4d.data.psg4d import PSG4DPointCloud
from spade4d.io import write_json
from spade4d.models.losses import LossWeights
from spade4d.models.model4d import Model4D, Model4DConfig
from spade4d.training.clips import clip_targets, load_frames, sequence_center


@dataclass
class Train4DConfig:
    steps: int = 400
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 20
    clips_per_step: int = 1
    clip_frames: int = 8
    frame_strides: tuple[int, ...] = (1, 2)
    points_per_frame: int = 2048
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    mixed_precision: str = "no"  # "bf16" / "fp16" on GPUs
    num_threads: int | None = None
    model: dict = field(default_factory=dict)  # Model4DConfig overrides
    weights: dict = field(default_factory=dict)  # LossWeights overrides


PRESETS: dict[str, Train4DConfig] = {
    # the demo: 2 CPU cores, a few minutes
    "quick": Train4DConfig(
        steps=700,
        clip_frames=6,
        lr=2e-3,
        warmup=30,
        points_per_frame=1536,
        model={"voxel_size": 0.1, "num_queries": 16},
    ),
    "small": Train4DConfig(steps=2000, clip_frames=8, model={"dim": 128, "num_queries": 32}),
    # GPUs: full resolution, longer clips
    "full": Train4DConfig(
        steps=20000,
        clip_frames=16,
        clips_per_step=4,
        points_per_frame=8192,
        lr=3e-4,
        mixed_precision="bf16",
        model={
            "voxel_size": 0.04,
            "channels": [32, 64, 96, 128, 192],
            "dim": 256,
            "num_queries": 64,
            "decoder_layers": 6,
            "heads": 8,
            "ffn_dim": 1024,
            "window": 8,
        },
    ),
}


def preset(name: str, **overrides) -> Train4DConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


class TrainError(ValueError):
    pass


@dataclass
class TrainResult:
    model_dir: Path
    model: torch.nn.Module  # this rank's (unwrapped) model in memory
    step: int
    history: list[dict]


def _vocabulary(root: Path, ds: PSG4DPointCloud) -> tuple[list[str], list[str]]:
    """Class and predicate names: the synthetic world's full lists (dataset.json, OOV names included, so
    they can be scored at test time), else the dataset's own."""
    meta = root.parent / "dataset.json"
    if meta.is_file():
        d = json.loads(meta.read_text())
        if "thing_classes" in d:
            return list(d["thing_classes"]) + list(d["stuff_classes"]), list(d["predicates"])
    classes = sorted({o.label for _, g in ds for o in g.objects})
    return classes, list(ds.predicates)


def _lr_lambda(cfg: Train4DConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))

    return f


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted(p for p in (out / "checkpoints").glob("step_*") if (p / "trainer_state.json").is_file())
    return ckpts[-1] if ckpts else None


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spade4d.io import atomic_path

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "cls", "bce", "dice", "rel", "sem"):
        ax.plot(steps, [h[key] for h in history], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("4D fine-tuning losses")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def finetune_4d(
    root: str | os.PathLike,
    out: str | os.PathLike,
    cfg: Train4DConfig,
    split: str = "train",
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on ``root`` (PROTOCOLS.md point-cloud layout) into ``out``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm

    root, out = Path(root), Path(out)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ds = PSG4DPointCloud(root, split)
    if len(ds) == 0:
        raise TrainError(f"{root}: split {split!r} has no sequences")
    classes, predicates = _vocabulary(root, ds)
    acc = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no",
        gradient_accumulation_steps=cfg.clips_per_step,
        log_with="tensorboard",
        project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(cfg.seed)
    if init_from is not None:
        model = Model4D.from_pretrained(init_from)
    else:
        model = Model4D(Model4DConfig(classes=classes, predicates=predicates, **cfg.model))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    model, opt, sched = acc.prepare(model, opt, sched)
    core: Model4D = acc.unwrap_model(model)
    weights = LossWeights(**cfg.weights)

    state_file = out / "trainer_state.json"
    step, history = 0, []
    if resume:
        ckpt = _latest_checkpoint(out)
        if ckpt is None:
            acc.print(f"[finetune-4d] no checkpoint in {out}/checkpoints: starting from scratch")
        else:
            acc.load_state(str(ckpt))
            st = json.loads((ckpt / "trainer_state.json").read_text())
            step, history = st["step"], st["history"]
            acc.print(f"[finetune-4d] resumed from {ckpt} at step {step}")
    elif acc.is_main_process and (out / "checkpoints").exists():
        raise TrainError(f"{out} already holds checkpoints: pass --resume to continue, or choose another --out")
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_config.json", {"train": asdict(cfg), "model": core.config.to_dict()})
    acc.init_trackers("logs")

    cache: dict[int, tuple] = {}

    def get(i: int):
        if i not in cache:
            seq, graph = ds[i]
            cache[i] = (seq, graph, sequence_center(seq))
        return cache[i]

    model.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and acc.is_local_main_process), desc="finetune-4d")
    t0 = time.time()
    while step < cfg.steps:
        parts_sum: dict[str, float] = {}
        for k in range(cfg.clips_per_step):
            rng = np.random.default_rng([cfg.seed, step, acc.process_index, k])
            seq, graph, center = get(int(rng.integers(len(ds))))
            stride = int(rng.choice(cfg.frame_strides))
            span = min(seq.num_frames, (cfg.clip_frames - 1) * stride + 1)
            start = int(rng.integers(seq.num_frames - span + 1))
            times = list(range(start, start + span, stride))[: cfg.clip_frames]
            frames = load_frames(seq, times, graph.video_id)
            targets = clip_targets(graph, frames, core.config.classes, core.config.predicates)
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            with acc.accumulate(model), acc.autocast():
                loss, parts = model(frames, targets, center, weights, cfg.points_per_frame, gen)
                acc.backward(loss)
                if acc.sync_gradients and cfg.grad_clip:
                    acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad()
            for key, v in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + v / cfg.clips_per_step
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rec = {"step": step, "lr": sched.get_last_lr()[0], "time": time.time() - t0, **parts_sum}
            history.append(rec)
            acc.log({k: v for k, v in rec.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{parts_sum['loss']:.3f}", rel=f"{parts_sum['rel']:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            acc.wait_for_everyone()
            ckpt = out / "checkpoints" / f"step_{step:06d}"
            partial = ckpt.with_name(ckpt.name + ".partial")  # renamed when complete: never half a checkpoint
            acc.save_state(str(partial))
            acc.wait_for_everyone()
            if acc.is_main_process:
                write_json(partial / "trainer_state.json", {"step": step, "history": history})
                if ckpt.exists():
                    shutil.rmtree(ckpt)
                os.replace(partial, ckpt)
                write_json(state_file, {"step": step, "history": history})
                plot_losses(history, out / "loss.png")
                done = sorted(p for p in (out / "checkpoints").glob("step_*") if not p.name.endswith(".partial"))
                for old in done[: -cfg.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
    bar.close()
    acc.wait_for_everyone()
    final = out / "model"
    if acc.is_main_process:
        core.save_pretrained(final)
        plot_losses(history, out / "loss.png")
    acc.wait_for_everyone()
    acc.end_training()  # closes the trackers (and, in recent accelerate, the process group): last
    return TrainResult(final, core, step, history)
