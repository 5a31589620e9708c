"""The scene-graph head: objects and predicates scored against text embeddings (open vocabulary).

Shared by the 2D and 4D models (same parameter names and shapes, so the 2D→4D transfer moves it). Names are
never baked into weights: the logits are scaled cosine similarities to embeddings passed in, so a new name at
test time only needs its text embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.models.text import encode_texts


class OpenVocabulary:
    """Mixin of the 2D and 4D models: ``class_embed`` / ``predicate_embed`` buffers of the config's names (kept
    in the checkpoint, so a saved model scores its own names without the text encoder) and ``set_vocabulary``
    for other names at test time. Needs ``self.config`` with ``classes``, ``predicates`` and ``text_model``."""

    @property
    def device(self) -> torch.device:
        """Where the model is (its vocabulary buffers move with it); inputs on other devices are moved here."""
        return self.class_embed.device

    def _init_vocabulary(self, class_embed: torch.Tensor | None, predicate_embed: torch.Tensor | None) -> None:
        cfg = self.config
        if class_embed is None:
            class_embed = encode_texts(cfg.classes, cfg.text_model)
        if predicate_embed is None:
            predicate_embed = encode_texts(cfg.predicates, cfg.text_model)
        self.register_buffer("class_embed", class_embed.float().clone())
        self.register_buffer("predicate_embed", predicate_embed.float().clone())

    def set_vocabulary(self, classes: list[str] | None = None, predicates: list[str] | None = None) -> None:
        """Score other names (open vocabulary): re-embeds them with the text encoder."""
        if classes is not None and list(classes) != self.config.classes:
            self.class_embed = encode_texts(list(classes), self.config.text_model).to(self.class_embed.device)
            self.config.classes = list(classes)
        if predicates is not None and list(predicates) != self.config.predicates:
            emb = encode_texts(list(predicates), self.config.text_model)
            self.predicate_embed = emb.to(self.predicate_embed.device)
            self.config.predicates = list(predicates)


class SceneGraphHead(nn.Module):
    def __init__(self, *, dim: int, text_dim: int):
        super().__init__()
        self.class_proj = nn.Linear(dim, text_dim)
        self.pool_proj = nn.Linear(dim, dim)
        self.no_object = nn.Linear(dim, 1)
        self.class_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.predicate_proj = nn.Linear(dim, text_dim)
        self.predicate_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.predicate_bias = nn.Parameter(torch.tensor(-2.0))

    def object_logits(self, states: torch.Tensor, pooled: torch.Tensor, class_embed: torch.Tensor) -> torch.Tensor:
        """states, pooled (..., D) -> (..., C + 1); the last column is "no object"."""
        e = F.normalize(self.class_proj(states + self.pool_proj(pooled)), dim=-1)
        return torch.cat([self.class_scale.exp() * e @ class_embed.T, self.no_object(states)], -1)

    def predicate_logits(self, relation: torch.Tensor, predicate_embed: torch.Tensor) -> torch.Tensor:
        """relation queries (..., D) -> independent per-predicate logits (..., P) (sigmoid, multi-label)."""
        e = F.normalize(self.predicate_proj(relation), dim=-1)
        return self.predicate_scale.exp() * e @ predicate_embed.T + self.predicate_bias
