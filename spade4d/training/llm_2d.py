"""The SceneLLM pretrained on 2D scene graphs, before it meets a 4D model.

The relation head reaches 4D with what it learned from the 2D images (:mod:`spade4d.training.transfer`); a SceneLLM
trained only with the 4D model sees nothing but the 4D training split. This stage gives the SceneLLM the same start:
the frozen 2D core reads every training image, its query states become the scene tokens (one per query, as the 4D
model's tube states are), and the LLM learns, by teacher forcing, to write that image's graph in the two turns of
the chain (objects at the queries they are matched to, then the relations, each over the one frame ``[0-0]``).
Only the language side trains: the ``<obj>`` mask queries need 4D masks and learn in 4D fine-tuning.

The result, ``out/model``, is a SceneLLM folder; ``finetune-4d --llm-init DIR`` (``Train4DConfig.llm_init``) starts a
4D model's SceneLLM from it. Its tensors have no shape that depends on the query count, so a core with 16 queries
initialises the SceneLLM of a 4D model with 24. docs/experiments.md, "The SceneLLM pretrained on 2D scene graphs",
has what it measured.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from spade4d.io import write_json
from spade4d.models.losses import LossWeights, hungarian_match, mask_match_cost
from spade4d.training.images2d import ImageSet
from spade4d.training.loop import LoopSettings, TrainError, cosine_warmup, finish_stage, make_accelerator, train_loop

logger = logging.getLogger(__name__)


@dataclass
class LLM2DConfig:
    llm: dict = field(default_factory=lambda: {"llm": "tiny", "chain": "two", "train_base": True})  # SceneLLMConfig
    steps: int = 1500
    batch_size: int = 4  # images per step
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 30
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    eval_batch: int = 16  # images per pass of the frozen core


@dataclass(frozen=True)
class ImageGraph:
    """One training image as the SceneLLM reads it: the core's query states and the image's graph in the chain's
    canonical order (objects by the query they are matched to; ``tubes`` those queries, increasing)."""

    states: torch.Tensor  # (Q, D)
    names: list[str]
    tubes: list[int]
    relations: list[tuple[int, str, int, list[tuple[int, int]]]]  # (subject, predicate, object, spans)


def image_graph(states: torch.Tensor, qi: np.ndarray, gi: np.ndarray, labels: list[str], relations) -> ImageGraph:
    """An image's graph in the chain's order from the matching of queries ``qi`` to GT objects ``gi``: objects
    sorted by query; ``relations`` (subject, object, predicate) over GT indices, kept when both ends are matched;
    every relation holds over the one frame 0."""
    order = gi[np.argsort(qi)]
    pos = {int(g): i for i, g in enumerate(order)}
    rels = [(pos[s], p, pos[o], [(0, 0)]) for s, o, p in relations if s in pos and o in pos and s != o]
    return ImageGraph(states, [labels[int(g)] for g in order], np.sort(qi).tolist(), rels)


@torch.no_grad()
def read_images(core, train: ImageSet, batch: int = 16, progress: bool = True) -> list[ImageGraph]:
    """Every image of ``train`` through the frozen 2D core ``core``: its query states and its graph over the queries
    that match the ground truth (the Hungarian matching of the core's own training, class + mask costs)."""
    from tqdm.auto import tqdm

    weights = LossWeights()
    cidx = {c: i for i, c in enumerate(core.config.classes)}
    graphs: list[ImageGraph] = []
    dev = next(core.parameters()).device
    core.eval()
    for a in tqdm(range(0, len(train), batch), desc="2D core on the images", disable=not progress):
        images, samples = train.batch(list(range(a, min(a + batch, len(train)))))
        out = core(images.to(dev))
        for b, s in enumerate(samples):
            known = [i for i, c in enumerate(s.labels) if c in cidx]
            labels = torch.tensor([cidx[s.labels[i]] for i in known], dtype=torch.long, device=dev)
            tgt = s.masks[known].flatten(1).to(dev)
            cost = mask_match_cost(out.mask_logits[b].flatten(1), tgt, weights)
            qi, gi = hungarian_match(out.class_logits[b].softmax(-1), labels, cost, weights)
            gi = np.asarray(known, dtype=np.int64)[gi]  # back to the image's own object indices
            graphs.append(image_graph(out.states[b].float().cpu(), qi, gi, s.labels, s.relations))
    return graphs


def pretrain_llm_2d(
    psg_json: str | os.PathLike,
    coco_root: str | os.PathLike,
    core_2d: str | os.PathLike,
    out: str | os.PathLike,
    cfg: LLM2DConfig,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train a SceneLLM (``cfg.llm``) on the train split of a PSG-format dataset read by the 2D core ``core_2d``
    (``pretrain-2d``'s model folder); returns ``out/model``. Resumable from ``out``'s checkpoints."""
    from accelerate.utils import set_seed

    from spade4d.models.scene_llm import SceneLLM, SceneLLMConfig
    from spade4d.models.spade2d import Spade2D

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "llm_2d_config.json", {**asdict(cfg), "core_2d": str(Path(core_2d).resolve())})
    core = Spade2D.from_pretrained(core_2d).to("cuda" if torch.cuda.is_available() else "cpu")
    grid = core.backbone.feature_grid
    train = ImageSet(psg_json, coco_root, "train", core.backbone.config.image_size, grid)
    if len(train) == 0:
        raise TrainError(f"{psg_json}: the train split has no images with relations")
    graphs = [g for g in read_images(core, train, cfg.eval_batch, progress) if g.names]
    if not graphs:
        raise TrainError(f"{psg_json}: the 2D core matched no object of any training image")
    del core
    set_seed(cfg.seed)
    llm = SceneLLM(SceneLLMConfig.from_dict(cfg.llm), graphs[0].states.shape[1], num_tubes=len(graphs[0].states))
    acc = make_accelerator(out)
    params = [p for p in llm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_warmup(cfg.steps, cfg.warmup))
    wrapped, opt, sched = acc.prepare(llm, opt, sched)
    model: SceneLLM = acc.unwrap_model(wrapped)

    def step_fn(step: int, k: int):
        rng = np.random.default_rng([cfg.seed, step, acc.process_index, k, 5])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        losses = []
        for i in rng.integers(len(graphs), size=cfg.batch_size).tolist():
            g = graphs[i]
            loss, _ = model.teacher_forced(g.states.to(acc.device), g.names, g.tubes, g.relations, 1, gen)
            losses.append(loss)
        return {"loss_lm": torch.stack(losses).mean()}

    settings = LoopSettings(cfg.steps, 1, 1.0, cfg.log_every, cfg.checkpoint_every, cfg.keep_checkpoints)
    step, history = train_loop(acc, wrapped, opt, sched, out, settings, step_fn, "llm-2d", resume, progress, params)
    finish_stage(acc, model, history, out, "SceneLLM on 2D scene graphs (LM loss)", save=step >= cfg.steps)
    acc.end_training()
    return out / "model"
