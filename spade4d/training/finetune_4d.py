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
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from spade4d.data.frames import load_frames, sequence_center
from spade4d.data.psg4d import PointCloudDataset, open_point_clouds
from spade4d.io import write_json
from spade4d.models.losses import LossWeights
from spade4d.models.model4d import Model4D, Model4DConfig
from spade4d.training.clips import Augment, clip_loss, clip_targets
from spade4d.training.loop import (
    LoopSettings,
    TrainError,
    WeightAverage,
    cosine_warmup,
    main_info,
    make_accelerator,
    plot_losses,
    train_loop,
)

logger = logging.getLogger(__name__)


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
    # clip the SceneLLM's gradient apart from the 4D model's (each to grad_clip): otherwise the LM's large gradient
    # sets the common norm and shrinks the 4D model's steps, even where no LLM gradient reaches it (on seed 1 that
    # alone cost the 4D model's head 12.6 R@50; on by default since session 10)
    clip_llm_apart: bool = True
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    # a validation pass (R@50 and the loss on the val split, training.validation) every this many steps and at the
    # last one; the best R@50 is kept as <out>/model_best. 0: none
    validate_every: int = 100
    val_sequences: int = 8
    mixed_precision: str = "no"  # "bf16" / "fp16" on GPUs
    num_threads: int | None = None
    lift: bool = False  # with --init-from-2d: lift the 2D core's pixel features onto the points
    # lifting: keep this many MiB of frames' 2D feature maps for frames read again (models.lift.FrameFeatureCache;
    # the frozen backbone's pass was 3/4 of a video training step); 0: none
    lift_cache_mb: int = 512
    transfer_parts: tuple[str, ...] = ("decoder", "rgt", "head")  # what --init-from-2d moves
    # with --init-from-2d: the learning rate of the tensors the 2D core gave (transfer.json's "moved") is lr times
    # this, the new ones train at lr (pretrained parts at a tenth of the rate, as Mask2Former trains its backbone)
    transfer_lr: float = 1.0
    llm: dict | None = None  # a SceneLLMConfig (e.g. {"llm": "tiny"}): train the SceneLLM jointly
    # a SceneLLM folder (training.llm_2d: pretrained on 2D scene graphs) the model's new SceneLLM starts from
    llm_init: str | None = None
    train_only: tuple[str, ...] | None = None  # parameter-name prefixes to train (the rest frozen); None: all
    # "seen": class/predicate losses over the names that occur in the training split only; the saved model
    # scores the full vocabulary. "all": every name of the vocabulary, unseen ones as constant negatives.
    train_vocabulary: str = "seen"
    # per-clip rotation about the up axis, mirror, scale and colour jitter: a dict of clips.Augment fields ({} its
    # defaults; {"up_axis": 1} for y-up data, {"rotate": 0, "flip": False} for relations in a fixed world frame).
    # Off by default: at the quick preset's 700 steps it left the model far from fitted (README, session 8).
    augment: dict | None = None
    # BatchNorm statistics of the saved model: averaged over up to this many windows of the training split, read as
    # inference reads them (training.batchnorm). 0 keeps the training-time running averages, which come mostly
    # from the last ten or so clips and made R@50 swing by up to 22 points between otherwise equal runs.
    bn_windows: int = 400
    # weight averaging (training.loop.WeightAverage): the saved model, validation and model_best use an exponential
    # moving average of the trained weights with this decay (0.99: about the last 100 steps); 0: the last weights
    weight_average: float = 0.0
    model: dict = field(default_factory=dict)  # Model4DConfig overrides
    weights: dict = field(default_factory=dict)  # LossWeights overrides


# every preset supervises each 4D decoder layer (weights.deep): +16.64 ± 13.99 R@50 over 5 seeds of the quick
# split, paired (docs/experiments.md, "Deep supervision"); the video model keeps the last layer only (video_settings)
PRESETS: dict[str, Train4DConfig] = {
    # the demo: 2 CPU cores, a few minutes
    "quick": Train4DConfig(
        steps=700,
        clip_frames=6,
        lr=2e-3,
        warmup=30,
        points_per_frame=1536,
        model={"voxel_size": 0.1, "num_queries": 16},
        weights={"deep": 1.0},
    ),
    "small": Train4DConfig(steps=2000, clip_frames=8, model={"dim": 128, "num_queries": 32}, weights={"deep": 1.0}),
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
        weights={"deep": 1.0},
    ),
}


def preset(name: str, config: str | os.PathLike | None = None, overrides=(), **flags) -> Train4DConfig:
    """The ``name`` preset, then the YAML ``config`` file, then ``key=value`` ``overrides`` (docs in
    :mod:`spade4d.config`; ``model.*``, ``weights.*``, ``llm.*``, ``augment.*`` are checked against their
    dataclasses), then the non-None ``flags`` (the command line's named options)."""
    from spade4d.config import preset_config

    return preset_config(Train4DConfig, PRESETS, name, config, overrides, nested_schema(), **flags)


def scene_llm_settings(
    llm: str | None, chain: str | None = None, lora_r: int | None = None, relation_order: str | None = None
) -> dict | None:
    """The ``llm`` field of :class:`Train4DConfig` for a SceneLLM named ``llm`` (``tiny``, ``smollm2`` or a local
    causal-LM folder; None or ``none``: no SceneLLM). The tiny LLM is random, so its own weights train too."""
    if not llm or llm == "none":
        return None
    if str(llm).endswith((".yaml", ".yml", ".json")):  # a SceneLLMConfig file (configs/scene_llm/*.yaml)
        from spade4d.config import load_config
        from spade4d.models.scene_llm import SceneLLMConfig

        d = load_config(SceneLLMConfig, SceneLLMConfig(), llm).to_dict()
    else:
        d = {"llm": llm, "chain": "two", "train_base": llm == "tiny"}
    if chain:
        d["chain"] = chain
    if lora_r:  # the named options win over the file, as they do over presets
        d.update(lora_r=lora_r, lora_alpha=2 * lora_r)
    if relation_order:
        d["relation_order"] = relation_order
    return d


def nested_schema() -> dict[str, type]:
    """The dataclasses the dict-valued fields of :class:`Train4DConfig` hold overrides of."""
    from spade4d.models.losses import LossWeights
    from spade4d.models.scene_llm import SceneLLMConfig
    from spade4d.training.clips import Augment

    return {"model": Model4DConfig, "weights": LossWeights, "llm": SceneLLMConfig, "augment": Augment}


@dataclass
class TrainResult:
    model_dir: Path | None  # None when the run stopped before its last step (``stop_after``)
    model: torch.nn.Module  # this rank's (unwrapped) model in memory
    step: int
    history: list[dict]


def _vocabulary(root: Path, ds: PointCloudDataset) -> tuple[list[str], list[str]]:
    """Class and predicate names: the synthetic world's full lists (dataset.json, OOV names included, so
    they can be scored at test time), else the dataset's own."""
    meta = root.parent / "dataset.json"
    if meta.is_file():
        d = json.loads(meta.read_text())
        if "thing_classes" in d:
            return list(d["thing_classes"]) + list(d["stuff_classes"]), list(d["predicates"])
    classes = sorted({o.label for _, g in ds for o in g.objects})
    return classes, list(ds.predicates)


def seen_vocabulary(ds: PointCloudDataset, classes: list[str], predicates: list[str]) -> tuple[list[str], list[str]]:
    """The names of ``classes`` / ``predicates`` (in their order) that occur in the split's graphs.

    Open-vocabulary training: a name never seen in training must not be trained as a negative on every
    example, or the model learns never to predict it, which no text embedding can undo at test time."""
    seen_c, seen_p = ds.names_used()
    return [c for c in classes if c in seen_c], [p for p in predicates if p in seen_p]


def build_model_from_2d(cfg: Train4DConfig, classes, predicates, core_2d: str | os.PathLike, log=logger.info):
    """A new 4D model whose shared tensors come from a 2D core (``pretrain-2d``'s model folder): its architecture
    sizes are the 2D core's, ``cfg.transfer_parts`` move, and with ``cfg.lift`` the core's pixel features are lifted
    onto the points. Returns the model and the transfer report."""
    from spade4d.models.lift import LiftedFeatures
    from spade4d.models.spade2d import Spade2D
    from spade4d.training.transfer import format_transfer, model4d_overrides, transfer_2d_to_4d

    model2d = Spade2D.from_pretrained(core_2d)
    lift = LiftedFeatures.from_spade2d(model2d) if cfg.lift else None
    mcfg = Model4DConfig(
        classes=classes,
        predicates=predicates,
        **{**cfg.model, **model4d_overrides(model2d)},
        lift=model2d.config.to_dict() if cfg.lift else None,
        llm=cfg.llm,
    )
    model = Model4D(mcfg, lift=lift)
    report = transfer_2d_to_4d(model2d, model, tuple(cfg.transfer_parts))
    log(format_transfer(report))
    return model, report


def param_groups(model: Model4D, cfg: Train4DConfig, report: dict | None) -> list[dict]:
    """The optimizer's parameter groups: the trainable tensors, those a 2D core gave (``report["moved"]``) at
    ``cfg.lr * cfg.transfer_lr`` when that factor is not 1, in a second group."""
    if cfg.transfer_lr < 0:
        raise TrainError(f"transfer_lr must be 0 or more, got {cfg.transfer_lr}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if report is None or cfg.transfer_lr == 1.0:
        return [{"params": [p for _, p in params]}]
    moved = set(report["moved"])
    return [
        {"params": [p for n, p in params if n not in moved]},
        {"params": [p for n, p in params if n in moved], "lr": cfg.lr * cfg.transfer_lr},
    ]


def build_model_from_4d(cfg: Train4DConfig, model_dir: str | os.PathLike) -> Model4D:
    """A saved 4D model to continue from. With ``cfg.llm``, a new SceneLLM joins it when it has none or has one of
    another language model (``--init-from RUN/model --llm smollm2`` on a model trained with the tiny LLM)."""
    model = Model4D.from_pretrained(model_dir)
    if cfg.llm is not None:
        from spade4d.models.scene_llm import SceneLLM, SceneLLMConfig

        new = SceneLLMConfig.from_dict(cfg.llm)
        if model.llm is None or model.llm.config.llm != new.llm:
            model.llm = SceneLLM(new, model.config.dim, num_tubes=model.config.num_queries)
            model.config.llm = model.llm.config.to_dict()
    return model


def build_model(cfg: Train4DConfig, classes, predicates, init_from=None, init_from_2d=None, log=logger.info):
    """The model a run starts from: a saved 4D model (``init_from``), a 2D core's transfer (``init_from_2d``),
    or a new one, its SceneLLM from ``cfg.llm_init`` when given. Returns it and the transfer report (None without a
    2D core)."""
    if init_from is not None and init_from_2d is not None:
        raise TrainError("pass either --init-from (a 4D model) or --init-from-2d (a 2D core), not both")
    report = None
    if init_from is not None:
        model = build_model_from_4d(cfg, init_from)
    elif init_from_2d is not None:
        model, report = build_model_from_2d(cfg, classes, predicates, init_from_2d, log)
    elif cfg.lift:
        raise TrainError("lifting 2D features needs a 2D core: pass --init-from-2d")
    else:
        model = Model4D(Model4DConfig(classes=classes, predicates=predicates, **{"llm": cfg.llm, **cfg.model}))
    if cfg.llm_init is not None:
        load_llm_init(model, cfg.llm_init, log)
    return model, report


def load_llm_init(model: Model4D, folder: str | os.PathLike, log=logger.info) -> None:
    """Every tensor of the model's SceneLLM from the SceneLLM saved in ``folder`` (``pretrain_llm_2d``'s model):
    the same language model and adapter shapes, any query count."""
    from spade4d.models.scene_llm import SceneLLM

    if model.llm is None:
        raise TrainError(f"{folder}: a SceneLLM to start from, but the run trains none (pass --llm)")
    try:
        saved = SceneLLM.from_pretrained(folder, scene_dim=model.config.dim)
    except RuntimeError:  # a tensor of another size: its scene tokens come from states of another width
        raise TrainError(f"{folder}: a SceneLLM for states of another width than {model.config.dim}") from None
    mine, theirs = model.llm.config, saved.config
    differ = [k for k in ("llm", "tiny", "lora_r", "lora_targets") if getattr(mine, k) != getattr(theirs, k)]
    if differ:
        what = ", ".join(f"{k} {getattr(theirs, k)!r} there, {getattr(mine, k)!r} here" for k in differ)
        raise TrainError(f"{folder}: a SceneLLM of another shape ({what})")
    model.llm.load_state_dict(saved.state_dict())
    log(f"SceneLLM initialised from {folder}")


def restrict_training(model: Model4D, cfg: Train4DConfig, ds, split: str, log=logger.info) -> None:
    """Open-vocabulary training (``train_vocabulary="seen"``: the names the split never shows are left out of the
    losses; the classes it shows are recorded as ``trained_classes``) and ``train_only`` (parameters outside its
    prefixes frozen)."""
    if cfg.train_vocabulary not in ("seen", "all"):
        raise TrainError(f"train_vocabulary must be 'seen' or 'all', got {cfg.train_vocabulary!r}")
    classes, predicates = model.config.classes, model.config.predicates
    seen_c, seen_p = seen_vocabulary(ds, classes, predicates)
    model.config.trained_classes = seen_c  # recorded in every saved model: the classes it learned to name
    if cfg.train_vocabulary == "seen":
        unseen = sorted(set(classes) - set(seen_c)) + sorted(set(predicates) - set(seen_p))
        if unseen:
            log(f"open-vocabulary training: {len(unseen)} names never occur in {split} ({', '.join(unseen)}); "
                "they are scored at test time, not trained as negatives")  # fmt: skip
        model.set_vocabulary(seen_c, seen_p)
    if cfg.train_only is not None:  # e.g. one stage of a pipeline; frozen stays frozen (the LLM's base)
        for name, p in model.named_parameters():
            p.requires_grad_(p.requires_grad and name.startswith(tuple(cfg.train_only)))
        if not any(p.requires_grad for p in model.parameters()):
            raise TrainError(f"train_only={cfg.train_only}: no parameter matches")


class ClipSampler:
    """Training clips of a split: a sequence, a frame stride and a start drawn from ``rng`` (which the loop seeds
    from seed, step, rank and micro-batch alone, so a resumed run draws what it would have), ``clip_frames``
    frames, augmented when the config says so, with their targets. Sequences are read once and kept."""

    def __init__(self, ds, cfg: Train4DConfig, rgb_source=None):
        self.ds, self.cfg, self.rgb_source = ds, cfg, rgb_source
        self.augment = None if cfg.augment is None else Augment(**cfg.augment)
        self.cache: dict[int, tuple] = {}

    def sequence(self, i: int):
        if i not in self.cache:
            seq, graph = self.ds[i]
            self.cache[i] = (seq, graph, sequence_center(seq))
        return self.cache[i]

    def __call__(self, rng: np.random.Generator, classes: list[str], predicates: list[str]):
        return self.clip_of(int(rng.integers(len(self.ds))), rng, classes, predicates)

    def clip_of(self, i: int, rng: np.random.Generator, classes: list[str], predicates: list[str], augment=True):
        """A clip of sequence ``i`` drawn with ``rng``: (frames, targets, the sequence's center)."""
        cfg = self.cfg
        seq, graph, center = self.sequence(i)
        stride = int(rng.choice(cfg.frame_strides))
        span = min(seq.num_frames, (cfg.clip_frames - 1) * stride + 1)
        start = int(rng.integers(seq.num_frames - span + 1))
        times = list(range(start, start + span, stride))[: cfg.clip_frames]
        frames = load_frames(seq, times, graph.video_id, self.rgb_source)
        # after load_frames: the points' pixels (lifting) come from the original points
        if augment and self.augment is not None:
            frames = self.augment(frames, center, rng)
        return frames, clip_targets(graph, frames, classes, predicates), center


def training_frames(sampler: ClipSampler, sequences: int = 6) -> dict:
    """What the training frames look like (:func:`~spade4d.data.frame_check.frame_stats`), saved with the model so
    that inference can warn about frames in another up axis or unit."""
    from spade4d.data.frame_check import frame_stats, sequence_frames

    count = min(sequences, len(sampler.ds))
    return frame_stats([f for i in range(count) for f in sequence_frames(sampler.sequence(i)[0], 2)])


def video_settings(cfg: Train4DConfig, stride: int = 4, from_2d: bool = False) -> Train4DConfig:
    """A run's settings for the video model (docs/video.md): cells of ``stride`` pixels, augmentation in the image
    plane only (a horizontal mirror, zoom and colour jitter; no rotation: a picture's up is the world's) and, from a
    2D core, its pixel features lifted onto the cells. Deep supervision is off: it was measured on point clouds
    only."""
    return replace(
        cfg,
        model={**cfg.model, "video": {"stride": stride}},
        weights={**cfg.weights, "deep": 0.0},
        augment={"rotate": 0.0, "up_axis": 2},
        lift=True if from_2d else cfg.lift,
    )


def video_preset(name: str, config=None, overrides=(), stride: int = 4, from_2d: bool = False, **flags):
    """:func:`preset` for the video model: :func:`video_settings` are the preset's defaults, and the YAML
    ``config``, the ``key=value`` ``overrides`` and the ``flags`` come after them, so a user's ``weights.deep=1``
    or ``augment`` wins."""
    from spade4d.config import preset_config

    videos = {k: video_settings(v, stride, from_2d) for k, v in PRESETS.items()}
    return preset_config(Train4DConfig, videos, name, config, overrides, nested_schema(), **flags)


def training_rgb_source(ds, model: Model4D, root: Path, rgb_root):
    """The RGB frames a run lifts 2D features from and where they are: a video split's own frames
    (:func:`video_source`), the GTA-layout frames beside the points (``<root>/../psg4d_gta`` unless ``rgb_root``),
    or none for a model that lifts nothing."""
    if getattr(ds, "kind", None) == "video":  # RGB video as cells on the image plane (docs/video.md)
        return video_source(ds, model), None
    if model.lift is None:
        return None, rgb_root
    from spade4d.data.cameras import CameraFrames

    rgb_root = Path(rgb_root) if rgb_root else root.parent / "psg4d_gta"
    return CameraFrames(rgb_root), rgb_root


def video_source(ds, model: Model4D):
    """A video split (:class:`~spade4d.data.video.PVSGVideos`) set to the model's cell grid (recorded in its
    config as ``video``); returns the frames its 2D features are lifted from (None for a model that lifts none)."""
    from spade4d.data.video import DEFAULT_STRIDE

    model.config.video = model.config.video or {"stride": DEFAULT_STRIDE}
    ds.use_grid(int(model.config.video["stride"]), model.config.voxel_size)
    return ds.frame_source if model.lift is not None else None


def write_run_record(out: Path, cfg: Train4DConfig, core: Model4D, run: dict, vocabulary, report) -> None:
    """``train_config.json`` (the config, the model config, the data and initialisation of the run and the full
    vocabulary: what ``export-model`` rebuilds the model from) and ``transfer.json``."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"train": asdict(cfg), "model": core.config.to_dict(), "run": run}
    write_json(out / "train_config.json", {**config, "vocabulary": dict(zip(("classes", "predicates"), vocabulary))})
    if report is not None:
        write_json(out / "transfer.json", report, indent=1)


def validation_pass(core, cfg: Train4DConfig, fmt, root, annotation, vocabulary, rgb_source, out, weights):
    """The loop's validation hook ``(step, history) -> values`` (:mod:`spade4d.training.validation`), or None when
    ``validate_every`` is 0 or the data has no val split."""
    from spade4d.training.validation import Validator, open_validation

    val_ds = open_validation(fmt, root, annotation) if cfg.validate_every > 0 else None
    if val_ds is None:
        return None
    if getattr(val_ds, "kind", None) == "video":  # the val videos' own frames
        rgb_source = video_source(val_ds, core)
    validator = Validator(core, val_ds, ClipSampler(val_ds, cfg, rgb_source), vocabulary, out)
    return lambda step, history: validator(step, history, cfg, weights)


def save_final_model(acc, core, cfg: Train4DConfig, ds, rgb_source, average, vocabulary, out: Path, history, progress):
    """The end of a run: the averaged weights (with weight averaging), BatchNorm statistics recomputed over the
    training split, the full vocabulary; saved as ``<out>/model`` with ``loss.png`` (main process)."""
    final = out / "model"
    if average is not None:
        average.copy_to_model()  # then BatchNorm statistics are computed for the averaged weights
    if acc.is_main_process:
        if cfg.bn_windows > 0:
            from spade4d.training.batchnorm import recalibrate_batchnorm

            recalibrate_batchnorm(core, ds, max_windows=cfg.bn_windows, rgb_source=rgb_source, progress=progress)
        core.set_vocabulary(*vocabulary)  # the saved model scores every name
        core.save_pretrained(final)
        plot_losses(history, out / "loss.png", "4D fine-tuning losses")
    return final


def finetune_4d(
    root: str | os.PathLike,
    out: str | os.PathLike,
    cfg: Train4DConfig,
    split: str = "train",
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    progress: bool = True,
    init_from_2d: str | os.PathLike | None = None,
    rgb_root: str | os.PathLike | None = None,
    fmt: str = "spade4d-pc",
    annotation: str | os.PathLike | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train on ``root`` (a point-cloud layout of docs/formats.md, ``fmt``) into ``out``. ``init_from_2d``: a 2D
    core folder (``pretrain-2d``) whose dimension-invariant tensors initialise the model (``transfer.json`` lists them);
    with ``cfg.lift`` its pixel features are also lifted onto the points from the RGB frames in ``rgb_root``
    (GTA layout; default: ``<root>/../psg4d_gta`` when it exists). ``stop_after``: stop at this step of the
    schedule, checkpointed there and with no model saved (``model_dir`` None); ``resume`` continues it as if
    uninterrupted, and :func:`spade4d.training.reproduce.rerun` uses it to repeat a run's first steps."""
    from accelerate.utils import set_seed

    root, out = Path(root), Path(out)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ds = open_point_clouds(fmt, root, split, annotation)
    if len(ds) == 0:
        raise TrainError(f"{root}: split {split!r} has no sequences")
    classes, predicates = _vocabulary(root, ds)
    acc = make_accelerator(out, cfg.mixed_precision, cfg.clips_per_step)
    set_seed(cfg.seed)
    model, report = build_model(cfg, classes, predicates, init_from, init_from_2d, lambda m: main_info(acc, m))
    restrict_training(model, cfg, ds, split, lambda m: main_info(acc, m))
    rgb_source, rgb_root = training_rgb_source(ds, model, root, rgb_root)
    if model.lift is not None:  # frames come back each step, in BatchNorm recalibration and in validation
        model.lift.cache_frames(cfg.lift_cache_mb << 20)
    run = {"root": str(root), "split": split, "format": fmt, "annotation": annotation and str(annotation),
           "init_from": init_from and str(init_from), "init_from_2d": init_from_2d and str(init_from_2d),
           "rgb_root": rgb_root and str(rgb_root)}  # fmt: skip
    opt = torch.optim.AdamW(param_groups(model, cfg, report), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_warmup(cfg.steps, cfg.warmup))
    model, opt, sched = acc.prepare(model, opt, sched)
    core: Model4D = acc.unwrap_model(model)
    weights = LossWeights(**cfg.weights)

    sampler = ClipSampler(ds, cfg, rgb_source)
    core.config.frames = training_frames(sampler)
    if acc.is_main_process:
        write_run_record(out, cfg, core, run, (classes, predicates), report)
    validate = validation_pass(core, cfg, fmt, root, annotation, (classes, predicates), rgb_source, out, weights)
    average = WeightAverage(core, cfg.weight_average) if cfg.weight_average else None

    def step_fn(step: int, k: int):
        rng = np.random.default_rng([cfg.seed, step, acc.process_index, k])
        frames, targets, center = sampler(rng, core.config.classes, core.config.predicates)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return model(clip_loss, frames, targets, center, weights, cfg.points_per_frame, gen)

    settings = LoopSettings(
        cfg.steps, cfg.clips_per_step, cfg.grad_clip, cfg.log_every, cfg.checkpoint_every, cfg.keep_checkpoints,
        cfg.validate_every, stop_after or 0,
    )  # fmt: skip
    params = None
    if cfg.clip_llm_apart and core.llm is not None:  # the 4D model and the SceneLLM clipped apart
        params = [[p for n, p in core.named_parameters() if n.startswith("llm.") == llm] for llm in (False, True)]
    step, history = train_loop(acc, model, opt, sched, out, settings, step_fn, "finetune-4d", resume, progress,
                               params=params, validate=validate, average=average)  # fmt: skip
    final = None
    if step < cfg.steps:  # stopped early on purpose: the checkpoint is the result
        main_info(acc, f"[finetune-4d] stopped at step {step} of {cfg.steps}; --resume continues from {out}")
    else:
        final = save_final_model(acc, core, cfg, ds, rgb_source, average, (classes, predicates), out, history,
                                 progress)  # fmt: skip
    if core.lift is not None:
        core.lift.cache_frames(0)  # the returned model infers with memory flat in video length
    acc.wait_for_everyone()
    acc.end_training()  # closes the trackers (and, in recent accelerate, the process group): last
    return TrainResult(final, core, step, history)
