"""2D pretraining of the shared core, in stages, each its own resumable run under ``out/``:

1. ``diffusion/`` (only without a given backbone): the tiny UNet as a denoiser (:mod:`.pretrain_diffusion`);
2. ``calibration/``: peft LoRA on the UNet's cross-attention, trained so the student's maps on the clean image
   match the teacher's maps along the DDIM-inversion trajectory under relation prompts (:mod:`spade4d.models.
   calibration`); teacher maps are computed once for ``calibration_images`` training images and cached;
3. ``psg/``: the PSG task (masks, classes, relations) on top, training LoRA, the prompt MLP, the pixel decoder,
   the query decoder, the RGT and the scene-graph head (the UNet base stays frozen), with the calibration loss
   kept as an auxiliary term;
4. evaluation: 2D R@K / mR@K (docs/metrics.md) on the test split -> ``metrics_2d.json`` + per-predicate PNG.

A stage whose ``model/`` folder exists is skipped, so re-running the command after an interruption continues
(``resume`` also restarts a stage from its last checkpoint); each stage seeds its own random draws, so the
continued run ends with the core an uninterrupted one gives. The result, ``out/model``, is a ``Spade2D`` folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spade4d.io import write_json
from spade4d.models.calibration import add_lora, calibration_loss, has_lora, lora_parameters, student_maps, teacher_maps
from spade4d.models.diffusion_backbone import DiffusionBackbone
from spade4d.models.losses import LossWeights, dice_loss, hungarian_match, mask_match_cost
from spade4d.models.spade2d import Spade2D, Spade2DConfig
from spade4d.training.images2d import ImageSample, ImageSet
from spade4d.training.loop import (
    LoopSettings,
    TrainError,
    cosine_warmup,
    finish_stage,
    make_accelerator,
    train_loop,
)
from spade4d.training.pretrain_diffusion import (
    DiffusionTrainConfig,
    attention_localisation,
    plot_attention,
    pretrain_diffusion,
)

logger = logging.getLogger(__name__)


@dataclass
class Pretrain2DConfig:
    steps: int = 400  # PSG stage
    batch_size: int = 8
    lr: float = 1e-3
    lora_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 20
    lora_rank: int = 4
    calibration_steps: int = 100
    calibration_images: int = 48
    calibration_batch: int = 8
    calibration_weight: float = 1.0  # of the auxiliary calibration loss during the PSG stage
    inversion_steps: int = 20
    inversion_strength: float = 0.5
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    mixed_precision: str = "no"
    eval_batch: int = 16
    diffusion: dict = field(default_factory=dict)  # DiffusionTrainConfig overrides
    model: dict = field(default_factory=dict)  # Spade2DConfig overrides
    weights: dict = field(default_factory=dict)  # LossWeights overrides


PRESETS_2D = {
    "quick": Pretrain2DConfig(steps=300, model={"dim": 96, "num_queries": 16}),
    "small": Pretrain2DConfig(steps=3000, calibration_steps=400, calibration_images=256, diffusion={"steps": 3000}),
    # GPUs with SD-1.5 from a local folder (--sd15 PATH): 512x512 images, latent grid 64x64
    "paper": Pretrain2DConfig(
        steps=60000,
        batch_size=16,
        lr=1e-4,
        lora_lr=1e-4,
        lora_rank=16,
        calibration_steps=5000,
        calibration_images=4096,
        inversion_steps=50,
        mixed_precision="bf16",
        model={"dim": 256, "num_queries": 100, "decoder_layers": 6, "heads": 8, "ffn_dim": 1024, "rgt_layers": 3},
    ),
}


def preset_2d(name: str, config: str | os.PathLike | None = None, overrides=(), **flags) -> Pretrain2DConfig:
    """The ``name`` preset (configs/pretrain_2d/<name>.yaml), then the YAML ``config``, then ``key=value``
    ``overrides`` (``diffusion.*``, ``model.*``, ``weights.*`` checked against their dataclasses), then the non-None
    ``flags``."""
    from spade4d.config import preset_config

    return preset_config(Pretrain2DConfig, PRESETS_2D, name, config, overrides, nested_schema_2d(), **flags)


def nested_schema_2d() -> dict[str, type]:
    """The dataclasses the dict-valued fields of :class:`Pretrain2DConfig` hold overrides of."""
    from spade4d.models.spade2d import Spade2DConfig

    return {"diffusion": DiffusionTrainConfig, "model": Spade2DConfig, "weights": LossWeights}


# --- the PSG loss -----------------------------------------------------------------------------------------------
def psg_loss(model: Spade2D, images: torch.Tensor, samples: list[ImageSample], weights: LossWeights):
    """Hungarian matching per image (class + BCE + Dice), class CE with a down-weighted "no object", BCE + Dice
        on matched masks, multi-label BCE on the predicates of ordered pairs of matched queries; each ``loss_*`` term
    multiplied by its weight (the training loop sums them)."""
    cfg = model.config
    out = model(images)
    B, Q = out.class_logits.shape[:2]
    C = len(cfg.classes)
    cidx = {c: i for i, c in enumerate(cfg.classes)}
    pidx = {p: i for i, p in enumerate(cfg.predicates)}
    cw = torch.ones(C + 1, device=images.device)
    cw[C] = weights.no_object
    l_cls, l_bce, l_dice, l_rel = [], [], [], []
    for b, s in enumerate(samples):
        logits = out.mask_logits[b].flatten(1)  # (Q, hw)
        labels = torch.tensor([cidx[x] for x in s.labels], dtype=torch.long, device=images.device)
        tgt = s.masks.flatten(1).to(images.device)
        with torch.no_grad():
            cost = mask_match_cost(logits, tgt, weights)
            qi, gi = hungarian_match(out.class_logits[b].softmax(-1), labels, cost, weights)
        target = torch.full((Q,), C, dtype=torch.long, device=images.device)
        target[torch.from_numpy(qi)] = labels[torch.from_numpy(gi)]
        l_cls.append(F.cross_entropy(out.class_logits[b], target, weight=cw))
        if len(qi):
            l_bce.append(F.binary_cross_entropy_with_logits(logits[qi], tgt[gi]))
            l_dice.append(dice_loss(logits[qi], tgt[gi]).mean())
        if len(qi) >= 2:
            q_of = dict(zip(gi.tolist(), qi.tolist()))
            pairs = [(q_of[a], q_of[c]) for a in q_of for c in q_of if a != c]
            pt = torch.zeros((len(pairs), len(cfg.predicates)), device=images.device)
            where = {p: k for k, p in enumerate(pairs)}
            for sub, obj, pred in s.relations:
                if sub in q_of and obj in q_of and sub != obj and pred in pidx:
                    pt[where[(q_of[sub], q_of[obj])], pidx[pred]] = 1.0
            one = type(out)(out.states[b : b + 1], out.mask_logits[b : b + 1], out.class_logits[b : b + 1], out.pixel)
            rl = model.relation_logits(one, torch.tensor(pairs, device=images.device))[0]
            pw = torch.tensor(weights.relation_pos_weight, device=images.device)
            l_rel.append(F.binary_cross_entropy_with_logits(rl, pt, pos_weight=pw))

    def mean(xs):
        return torch.stack(xs).mean() if xs else out.states.new_zeros(())

    return {
        "loss_cls": weights.cls * mean(l_cls),
        "loss_bce": weights.bce * mean(l_bce),
        "loss_dice": weights.dice * mean(l_dice),
        "loss_rel": weights.relation * mean(l_rel),
    }


# --- stages -----------------------------------------------------------------------------------------------------
class TeacherCache:
    """Teacher maps of ``n`` training images under one relation prompt each, computed in batches once."""

    def __init__(self, backbone: DiffusionBackbone, train: ImageSet, cfg: Pretrain2DConfig, progress: bool = True):
        from tqdm.auto import tqdm

        rng = np.random.default_rng([cfg.seed, 7])
        n = min(cfg.calibration_images, len(train))
        self.indices = sorted(rng.choice(len(train), size=n, replace=False).tolist())
        self.prompts = [train[i].relation_prompt(int(rng.integers(1 << 16))) for i in self.indices]
        self.entries: list[tuple] = []
        errs = []
        bs = cfg.calibration_batch
        for a in tqdm(range(0, n, bs), desc="teacher maps (DDIM inversion)", disable=not progress):
            idx = self.indices[a : a + bs]
            images, _ = train.batch(idx)
            maps, tmask, _, err = teacher_maps(
                backbone, images, self.prompts[a : a + bs], cfg.inversion_steps, cfg.inversion_strength
            )
            cond, cmask, _ = backbone.encode_text(self.prompts[a : a + bs])
            for k in range(len(idx)):
                self.entries.append((images[k], {m: v[k] for m, v in maps.items()}, tmask[k], cond[k], cmask[k]))
            errs.append(err)
        self.reconstruction_error = float(np.mean(errs)) if errs else float("nan")

    def batch(self, rng: np.random.Generator, size: int):
        pick = rng.integers(len(self.entries), size=size).tolist()
        es = [self.entries[i] for i in pick]
        images = torch.stack([e[0] for e in es])
        maps = {m: torch.stack([e[1][m] for e in es]) for m in es[0][1]}
        return (
            images,
            maps,
            torch.stack([e[2] for e in es]),
            torch.stack([e[3] for e in es]),
            torch.stack([e[4] for e in es]),
        )


def _calibration_term(backbone: DiffusionBackbone, cache: TeacherCache, rng, size: int, device) -> torch.Tensor:
    images, maps, tmask, cond, cmask = cache.batch(rng, size)
    student = student_maps(backbone, images.to(device), cond.to(device), cmask.to(device))
    return calibration_loss(student, maps, tmask.to(device))


def calibrate(
    backbone: DiffusionBackbone, cache: TeacherCache, out: Path, cfg: Pretrain2DConfig, resume, progress, stop_after=0
):
    """Stage 2: LoRA only, L1 on the maps. Writes ``out/model`` (the backbone with its adapter) unless stopped at
    step ``stop_after`` of the schedule."""
    acc = make_accelerator(out, cfg.mixed_precision, find_unused=False)
    params = lora_parameters(backbone.unet)
    opt = torch.optim.AdamW(params, lr=cfg.lora_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_warmup(cfg.calibration_steps, min(cfg.warmup, 10)))
    backbone, opt, sched = acc.prepare(backbone, opt, sched)
    core = acc.unwrap_model(backbone)

    def step_fn(step: int, k: int):
        rng = np.random.default_rng([cfg.seed, step, acc.process_index, k, 1])
        return {"loss_calib": _calibration_term(core, cache, rng, cfg.calibration_batch, acc.device)}

    settings = LoopSettings(cfg.calibration_steps, 1, 1.0, cfg.log_every, cfg.checkpoint_every, cfg.keep_checkpoints,
                            stop_after=stop_after)  # fmt: skip
    step, history = train_loop(acc, backbone, opt, sched, out, settings, step_fn, "calibration", resume, progress,
                               params)  # fmt: skip
    title = "inversion-guided calibration (L1 on attention maps)"
    finish_stage(acc, core, history, out, title, save=step >= cfg.calibration_steps)
    return history


def train_psg(
    model: Spade2D, train: ImageSet, cache: TeacherCache | None, out: Path, cfg, resume, progress, stop_after=0
):
    """Stage 3: the PSG task (+ the calibration term). The UNet base is frozen. Writes ``out/model`` unless stopped
    at step ``stop_after`` of the schedule."""
    acc = make_accelerator(out, cfg.mixed_precision)
    model.backbone.unet.requires_grad_(False)
    for p in lora_parameters(model.backbone.unet):
        p.requires_grad_(True)
    lora = lora_parameters(model.backbone.unet)
    lora_ids = {id(p) for p in lora}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in lora_ids]
    opt = torch.optim.AdamW(
        [{"params": rest, "lr": cfg.lr}, {"params": lora, "lr": cfg.lora_lr}], weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_warmup(cfg.steps, cfg.warmup))
    wrapped, opt, sched = acc.prepare(model, opt, sched)
    core: Spade2D = acc.unwrap_model(wrapped)
    weights = LossWeights(**cfg.weights)
    trainable = [p for p in core.parameters() if p.requires_grad]

    def step_fn(step: int, k: int):
        rng = np.random.default_rng([cfg.seed, step, acc.process_index, k, 2])
        images, samples = train.batch(rng.integers(len(train), size=cfg.batch_size).tolist())
        terms = psg_loss(core, images.to(acc.device), samples, weights)
        if cache is not None and cfg.calibration_weight > 0:
            cal = _calibration_term(core.backbone, cache, rng, max(cfg.batch_size // 2, 1), acc.device)
            terms["loss_calib"] = cfg.calibration_weight * cal
        return terms

    settings = LoopSettings(cfg.steps, 1, 1.0, cfg.log_every, cfg.checkpoint_every, cfg.keep_checkpoints,
                            stop_after=stop_after)  # fmt: skip
    step, history = train_loop(acc, wrapped, opt, sched, out, settings, step_fn, "psg-2d", resume, progress,
                               trainable)  # fmt: skip
    finish_stage(acc, core, history, out, "2D scene-graph training losses", save=step >= cfg.steps)
    return core


@torch.no_grad()
def evaluate_2d_model(model: Spade2D, test: ImageSet, batch: int = 16, progress: bool = True):
    """2D R@K / mR@K of the model on ``test`` (docs/metrics.md, default options)."""
    from tqdm.auto import tqdm

    from spade4d.evaluation.metrics_2d import Evaluator2D

    model.eval()
    ev = Evaluator2D(predicates=test.predicates)
    for a in tqdm(range(0, len(test), batch), desc="evaluate-2d", disable=not progress):
        idx = list(range(a, min(a + batch, len(test))))
        images, samples = test.batch(idx)
        preds = model.predict(images, [s.size for s in samples], [s.image_id for s in samples])
        for i, p in zip(idx, preds):
            ev.process(test.graph(i), p)
    return ev.evaluate()


def _seed_stage(seed: int, stage: int) -> None:
    """Seed the global generators at the start of ``stage``: what it builds at random (the LoRA adapter, the scene
    graph head) must not depend on whether the stages before it were trained in this process or, after a kill,
    loaded from their folders (a resumed run builds the core an uninterrupted one does)."""
    from accelerate.utils import set_seed

    set_seed(int(np.random.default_rng([seed, 100, stage]).integers(2**31)))


@dataclass(frozen=True)
class StageSource:
    """Where each stage's start comes from. A normal run: its own ``out``. A repeat of a finished run's first steps
    (``stop_after`` > 0, :func:`spade4d.training.reproduce.rerun`): every stage trains only to ``stop_after`` in
    ``out`` and the next stage starts from ``finished``'s model of the stage before, so each stage repeats its own
    beginning."""

    out: Path
    stop_after: int = 0
    finished: Path | None = None

    def model(self, stage: str) -> Path:
        """The folder a later stage loads ``stage``'s model from (which exists when that stage is done)."""
        return (self.finished if self.stop_after else self.out) / stage / "model"

    def todo(self, stage: str) -> bool:
        """Whether ``stage`` trains in this call (a repeat trains every stage; a run, those not finished yet)."""
        return bool(self.stop_after) or not (self.out / stage / "model").is_dir()


def _stage_backbone(psg_json, coco_root, src: StageSource, cfg, backbone_dir, sd15, resume, progress):
    """Stage 1, the diffusion backbone: SD-1.5 from a local folder, a given backbone folder, or the tiny UNet
    trained here (skipped when ``out/diffusion/model`` exists)."""
    if sd15 is not None:
        return DiffusionBackbone.from_sd15(sd15)
    if backbone_dir is not None:
        return DiffusionBackbone.from_pretrained(backbone_dir)
    if src.todo("diffusion"):
        base = {**asdict(DiffusionTrainConfig()), "seed": cfg.seed, "mixed_precision": cfg.mixed_precision}
        dcfg = DiffusionTrainConfig(**{**base, **cfg.diffusion})
        pretrain_diffusion(psg_json, coco_root, src.out / "diffusion", dcfg, resume=resume, progress=progress,
                           stop_after=src.stop_after)  # fmt: skip
    return DiffusionBackbone.from_pretrained(src.model("diffusion"))


def _calibration_stage(backbone, train: ImageSet, src: StageSource, cfg, resume, progress, summary: dict):
    """Stage 2 (LoRA added; trained unless done); returns the backbone to build on and the teacher cache."""
    if not (cfg.calibration_steps > 0 or cfg.calibration_weight > 0):
        add_lora(backbone.unet, cfg.lora_rank)
        return backbone, None
    if not src.todo("calibration"):
        backbone = DiffusionBackbone.from_pretrained(src.model("calibration"))
        backbone.set_vocabulary(train.classes)
    else:
        summary["lora_trainable_parameters"] = add_lora(backbone.unet, cfg.lora_rank)
    cache = TeacherCache(backbone, train, cfg, progress)
    summary["inversion_reconstruction_error"] = cache.reconstruction_error
    if src.todo("calibration") and cfg.calibration_steps > 0:
        calibrate(backbone, cache, src.out / "calibration", cfg, resume, progress, src.stop_after)
        if src.stop_after:  # the repeat goes on from the finished run's calibrated backbone
            backbone = DiffusionBackbone.from_pretrained(src.model("calibration"))
            backbone.set_vocabulary(train.classes)
    return backbone, cache


def pretrain_2d(
    psg_json: str | os.PathLike,
    coco_root: str | os.PathLike,
    out: str | os.PathLike,
    cfg: Pretrain2DConfig,
    backbone_dir: str | os.PathLike | None = None,
    sd15: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int = 0,
    finished: str | os.PathLike | None = None,
) -> Path | None:
    """All stages (see the module docstring); returns ``out/model``. ``out/pretrain_run.json`` records the data and
    backbone the run was given. ``stop_after`` > 0 with ``finished`` (this config's finished run): every stage trains
    only its first ``stop_after`` steps, each from ``finished``'s model of the stage before (:class:`StageSource`);
    nothing is evaluated or saved as a model, and None is returned."""
    from accelerate.utils import set_seed

    if stop_after and finished is None:
        raise ValueError("stop_after needs the finished run the stages start from")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src = StageSource(out, stop_after, Path(finished) if finished is not None else None)
    write_json(out / "pretrain_config.json", asdict(cfg))
    given = {"psg_json": psg_json, "coco_root": coco_root, "backbone_dir": backbone_dir, "sd15": sd15}
    write_json(out / "pretrain_run.json", {k: None if v is None else str(Path(v).resolve()) for k, v in given.items()})
    set_seed(cfg.seed)
    summary: dict = {}
    backbone = _stage_backbone(psg_json, coco_root, src, cfg, backbone_dir, sd15, resume, progress)  # 1.
    grid = backbone.feature_grid
    train = ImageSet(psg_json, coco_root, "train", backbone.config.image_size, grid)
    test = ImageSet(psg_json, coco_root, "test", backbone.config.image_size, grid)
    if len(train) == 0:
        raise TrainError(f"{psg_json}: the train split has no images with relations")
    backbone.set_vocabulary(train.classes)
    loc = [test[i] for i in range(min(len(test), 40))]
    if not stop_after:  # a repeat evaluates nothing
        summary["attention_localisation_base"] = attention_localisation(backbone, loc)
    _seed_stage(cfg.seed, 2)
    backbone, cache = _calibration_stage(backbone, train, src, cfg, resume, progress, summary)  # 2.
    summary["unet_parameters"] = sum(p.numel() for n, p in backbone.unet.named_parameters() if "lora_" not in n)
    summary["lora_trainable_parameters"] = sum(p.numel() for p in lora_parameters(backbone.unet))
    _seed_stage(cfg.seed, 3)  # 3. PSG
    if not src.todo("psg"):
        model = Spade2D.from_pretrained(src.model("psg"))
    else:
        mcfg = Spade2DConfig(classes=train.classes, predicates=train.predicates, **cfg.model)
        model = Spade2D(mcfg, backbone)
        assert has_lora(model.backbone.unet)
        model = train_psg(model, train, cache, out / "psg", cfg, resume, progress, stop_after)
    if stop_after:
        return None
    summary["trainable_parameters_psg_stage"] = sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith("backbone.unet.") or "lora_" in n
    )
    _finish_2d(model, test, loc, out, cfg, summary, progress)  # 4.
    return out / "model"


def _finish_2d(model: Spade2D, test: ImageSet, loc, out: Path, cfg, summary: dict, progress) -> None:
    """Stage 4: evaluation and the final folder (main process; the others wait)."""
    from accelerate import PartialState

    from spade4d.evaluation.report import format_table, write_report

    state = PartialState()
    if state.is_main_process:
        metrics = evaluate_2d_model(model, test, cfg.eval_batch, progress)
        summary["attention_localisation_calibrated"] = attention_localisation(model.backbone, loc, adapters=True)
        metrics.update(split="test", images=len(test), **summary)
        write_report(metrics, out / "metrics_2d.json", title="2D recall per predicate (test)")
        plot_attention(model.backbone, loc[:4], out / "attention.png")
        logger.info(format_table(metrics, f"2D scene graph recall, test split ({len(test)} images)"))
        model.save_pretrained(out / "model")
    state.wait_for_everyone()
