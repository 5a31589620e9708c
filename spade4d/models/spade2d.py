"""The 2D scene-graph model (the shared 2D core): DiffusionBackbone -> PixelDecoder -> QueryDecoder2D ->
SceneGraphHead (objects) and RelationGraphTransformer + SceneGraphHead (predicates).

Images go in as ``(B, 3, H, W)`` floats in [0, 1]; masks come out on the backbone's finest feature grid and are
resized to each image's size for predictions. A checkpoint is a folder: ``config.json`` (``model_type``
``spade4d-2d``), ``model.safetensors`` (everything but the backbone) and ``backbone/`` (the diffusion backbone's
own folder: its UNet for the tiny kind, its LoRA adapter in peft format, its prompt MLP).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.models.diffusion_backbone import BackboneConfig, DiffusionBackbone
from spade4d.models.pretrained import PretrainedMixin
from spade4d.models.query_decoder import QueryDecoder2D
from spade4d.models.relation_transformer import RelationGraphTransformer, image_coords, masks_for_graph
from spade4d.models.sg_head import OpenVocabulary, SceneGraphHead
from spade4d.models.text import TEXT_DIM
from spade4d.structures import Object2D, Relation2D, SceneGraph2D

BACKBONE_DIR = "backbone"


class Model2DError(ValueError):
    """A 2D model cannot be built or loaded; the message names the file."""


@dataclass
class Spade2DConfig:
    classes: list[str] = field(default_factory=list)
    predicates: list[str] = field(default_factory=list)
    backbone: dict = field(default_factory=dict)  # BackboneConfig as a dict
    dim: int = 96
    num_queries: int = 16
    decoder_layers: int = 3
    heads: int = 4
    ffn_dim: int = 192
    rgt_layers: int = 2
    text_dim: int = TEXT_DIM
    text_model: str | None = None
    # inference
    object_threshold: float = 0.3
    predicates_per_pair: int = 3
    max_relations: int = 100

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes) or len(set(self.predicates)) != len(self.predicates):
            raise Model2DError("class and predicate names must be unique")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Spade2DConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def sine_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """(h*w, dim) sinusoidal encoding of (y, x) on a unit-normalised grid."""
    q = dim // 4
    freq = torch.exp(-math.log(1000.0) * torch.arange(q, dtype=torch.float32, device=device) / q) * 2 * math.pi
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, h, device=device), torch.linspace(0, 1, w, device=device), indexing="ij"
    )
    parts = [f(a.flatten()[:, None] * freq) for a in (ys, xs) for f in (torch.sin, torch.cos)]
    out = torch.cat(parts, -1)
    return F.pad(out, (0, dim - out.shape[1]))


class PixelDecoder(nn.Module):
    """Up-block features (coarse to fine) -> one ``dim``-channel map on the finest grid (FPN-style sum)."""

    def __init__(self, *, in_channels: list[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.out = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(8, dim), nn.ReLU(), nn.Conv2d(dim, dim, 1)
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[-1].shape[-2:]
        x = 0
        for lat, f in zip(self.lateral, feats):
            y = lat(f)
            x = x + (F.interpolate(y, size=size, mode="bilinear", align_corners=False) if y.shape[-2:] != size else y)
        return self.out(x)


@dataclass
class Output2D:
    states: torch.Tensor  # (B, Q, D)
    mask_logits: torch.Tensor  # (B, Q, h, w)
    class_logits: torch.Tensor  # (B, Q, C + 1)
    pixel: torch.Tensor  # (B, D, h, w)


class Spade2D(PretrainedMixin, OpenVocabulary, nn.Module):
    """The shared 2D core (module docstring); saved and loaded as a folder (:class:`PretrainedMixin`)."""

    model_type = "spade4d-2d"
    required_dirs = (BACKBONE_DIR,)
    skip_prefixes = ("backbone.",)
    error = Model2DError
    card_title = "spade4d 2D scene-graph core"
    card_load = 'from spade4d.models.spade2d import Spade2D\n\nmodel = Spade2D.from_pretrained("{name}")'

    def __init__(
        self,
        config: Spade2DConfig,
        backbone: DiffusionBackbone | None = None,
        class_embed: torch.Tensor | None = None,
        predicate_embed: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = cfg = config
        if not cfg.classes or not cfg.predicates:
            raise Model2DError("the model needs class and predicate names")
        if backbone is None:
            bcfg = BackboneConfig.from_dict({**cfg.backbone, "vocabulary": cfg.classes})
            backbone = DiffusionBackbone.tiny(bcfg)
        elif not backbone.config.vocabulary:
            backbone.set_vocabulary(cfg.classes)
        cfg.backbone = backbone.config.to_dict()
        self.backbone = backbone
        self.pixel = PixelDecoder(in_channels=backbone.feature_channels, dim=cfg.dim)
        self.decoder = QueryDecoder2D(
            num_queries=cfg.num_queries, dim=cfg.dim, heads=cfg.heads, ffn_dim=cfg.ffn_dim, layers=cfg.decoder_layers
        )
        self.rgt = RelationGraphTransformer(dim=cfg.dim, heads=cfg.heads, ffn_dim=cfg.ffn_dim, layers=cfg.rgt_layers)
        self.head = SceneGraphHead(dim=cfg.dim, text_dim=cfg.text_dim)
        self._init_vocabulary(class_embed, predicate_embed)

    # --- forward ------------------------------------------------------------------------------------------------
    def pixel_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w): the fused backbone features the queries read (also what the 4D model lifts)."""
        return self.pixel(self.backbone(images))

    def forward(self, images: torch.Tensor) -> Output2D:
        pix = self.pixel_features(images)
        B, D, h, w = pix.shape
        keys = pix.flatten(2).transpose(1, 2)
        pos = sine_2d(h, w, D, pix.device)[None].expand(B, -1, -1)
        states, mask_logits, pooled = self.decoder(keys, pos)
        class_logits = self.head.object_logits(states, pooled, self.class_embed)
        return Output2D(states, mask_logits.view(B, -1, h, w), class_logits, pix)

    def relation_logits(self, out: Output2D, pairs: torch.Tensor) -> torch.Tensor:
        """(B, R, P) predicate logits for ordered query pairs (R, 2)."""
        B, Q, h, w = out.mask_logits.shape
        coords = image_coords(h, w, out.states.device)[None].expand(B, -1, -1)
        rel = self.rgt(out.states, masks_for_graph(out.mask_logits.flatten(2)), coords, pairs)
        return self.head.predicate_logits(rel, self.predicate_embed)

    # --- inference ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor, sizes: list[tuple[int, int]], image_ids: list[str]) -> list[SceneGraph2D]:
        """Scene graphs of a batch; ``sizes`` are the original (H, W) the masks are resized to."""
        cfg = self.config
        out = self.forward(images.to(self.device))
        prob = out.class_logits.softmax(-1)
        Q = prob.shape[1]
        pairs = torch.tensor([(s, o) for s in range(Q) for o in range(Q) if s != o], device=prob.device)
        rel_prob = self.relation_logits(out, pairs).sigmoid()  # (B, R, P)
        graphs = []
        for b, ((H, W), iid) in enumerate(zip(sizes, image_ids)):
            score, label = prob[b, :, :-1].max(-1)
            masks = F.interpolate(out.mask_logits[b : b + 1], size=(H, W), mode="bilinear", align_corners=False)[0] > 0
            keep = [q for q in torch.argsort(score, descending=True).tolist()
                    if score[q] >= cfg.object_threshold and masks[q].any()]  # fmt: skip
            index = {q: k for k, q in enumerate(keep)}
            objects = [Object2D(cfg.classes[int(label[q])], masks[q].cpu().numpy(), float(score[q])) for q in keep]
            cands = []
            for r, (s, o) in enumerate(pairs.tolist()):
                if s in index and o in index:
                    top = torch.topk(rel_prob[b, r], min(cfg.predicates_per_pair, rel_prob.shape[-1]))
                    for p, v in zip(top.indices.tolist(), top.values.tolist()):
                        cands.append((v * float(score[s]) * float(score[o]), index[s], index[o], p))
            cands.sort(key=lambda c: -c[0])
            rels = [Relation2D(s, o, cfg.predicates[p], sc) for sc, s, o, p in cands[: cfg.max_relations]]
            graphs.append(SceneGraph2D(iid, H, W, objects, rels))
        return graphs

    # --- persistence ------------------------------------------------------------------------------------------
    # --- persistence (PretrainedMixin hooks) ---------------------------------------------------------------------
    def _saved_config(self) -> dict:
        self.config.backbone = self.backbone.config.to_dict()
        return self.config.to_dict()

    def _save_parts(self, tmp: Path) -> None:
        self.backbone.save_pretrained(tmp / BACKBONE_DIR)

    def _card_facts(self) -> list[tuple[str, str]]:
        c = self.config
        return [
            ("classes", str(len(c.classes))),
            ("predicates", str(len(c.predicates))),
            ("diffusion backbone", f"{self.backbone.config.kind}, {self.backbone.config.image_size} px"),
            ("queries", str(c.num_queries)),
        ]

    @classmethod
    def _from_saved(cls, path: Path, d: dict, state: dict) -> Spade2D:
        from spade4d.models.weights import WeightsError, build_config

        try:
            config = build_config(Spade2DConfig, d, path / cls.config_name)
        except WeightsError as e:
            raise Model2DError(str(e)) from None
        backbone = DiffusionBackbone.from_pretrained(path / BACKBONE_DIR)
        try:
            return cls(config, backbone, class_embed=state["class_embed"], predicate_embed=state["predicate_embed"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise Model2DError(f"{path}: config and weights do not build a model ({type(e).__name__}: {e})") from None
