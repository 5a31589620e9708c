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


class SceneGraphHead(nn.Module):
    def __init__(self, dim: int, text_dim: int):
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
