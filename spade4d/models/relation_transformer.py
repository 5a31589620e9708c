"""The spatial-aware relation graph transformer (RGT), shared by the 2D and the 4D model.

Nodes are object instances (query states) with soft masks over a set of locations (pixels in 2D, points in 3D).
From the masks the RGT computes a spatial graph whose edge features are *dimension- and scale-invariant*, so the
same weights read an image and a point cloud:

* centroid offset split into a horizontal distance and a signed vertical offset (image "up" is -y; the point
  cloud's is +z), and the full distance, each divided by the two objects' radii (r_i + r_j);
* log radius ratio; soft mask IoU; the fraction of each mask inside the other (overlap / containment).

Neighbours are instances whose masks touch (overlap above ``touch``) or whose centroids are closer than
``near`` times their summed radii; every edge also carries a learned soft weight. Each layer runs a local graph
convolution over neighbours (messages from node and edge features, weighted by the soft edge weights), then
multi-head attention separately over neighbours and over non-neighbours (long range), both with per-head edge
biases, then an FFN. Relation queries for ordered pairs come from both nodes and their edge.
Everything is a function of unordered node sets and pairwise terms, so the output is equivariant to node order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EDGE_FEATURES = 7


def _wide(masks: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both in one dtype of at least float32 (autocast may hand in bf16/fp16 masks)."""
    dtype = torch.promote_types(torch.promote_types(masks.dtype, coords.dtype), torch.float32)
    return masks.to(dtype), coords.to(dtype)


def node_geometry(soft_masks: torch.Tensor, coords: torch.Tensor, valid: torch.Tensor | None = None):
    """soft masks (B, N, P) in [0, 1] over locations ``coords`` (B, P, 3) given as (horizontal, horizontal, up);
    ``valid`` (B, P) marks real locations. Returns centroid (B, N, 3), radius (B, N), area (B, N), in float32 or
    wider (under autocast too: the radius is a difference of second moments)."""
    soft_masks, coords = _wide(soft_masks, coords)
    m = soft_masks if valid is None else soft_masks * valid[:, None, :].to(soft_masks)
    area = m.sum(-1)
    w = m / area[..., None].clamp_min(1e-6)
    centroid = torch.einsum("bnp,bpc->bnc", w, coords)
    sq = torch.einsum("bnp,bp->bn", w, (coords * coords).sum(-1)) - (centroid * centroid).sum(-1)
    return centroid, sq.clamp_min(1e-8).sqrt(), area


def edge_features(soft_masks: torch.Tensor, coords: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, N, EDGE_FEATURES) invariant edge features (see the module docstring); ``[b, i, j]`` is i -> j.
    Computed in float32 or wider."""
    soft_masks, coords = _wide(soft_masks, coords)
    m = soft_masks if valid is None else soft_masks * valid[:, None, :].to(soft_masks)
    centroid, radius, area = node_geometry(soft_masks, coords, valid)
    d = centroid[:, None, :, :] - centroid[:, :, None, :]  # (B, N, N, 3): offset from i to j
    scale = (radius[:, :, None] + radius[:, None, :]).clamp_min(1e-6)
    horizontal = d[..., :2].norm(dim=-1) / scale
    vertical = d[..., 2] / scale
    dist = d.norm(dim=-1) / scale
    ratio = torch.log((radius[:, None, :] + 1e-6) / (radius[:, :, None] + 1e-6)).clamp(-5, 5)
    inter = torch.einsum("bip,bjp->bij", m, m)
    a_i, a_j = area[:, :, None], area[:, None, :]
    iou = inter / (a_i + a_j - inter).clamp_min(1e-6)
    in_j = inter / a_i.clamp_min(1e-6)  # share of i inside j
    j_in = inter / a_j.clamp_min(1e-6)
    feats = torch.stack(
        [horizontal.clamp(max=10), vertical.clamp(-10, 10), dist.clamp(max=10), ratio, iou, in_j, j_in], -1
    )
    return feats


class EdgeAttention(nn.Module):
    """Multi-head attention among nodes with an additive per-head bias from edge embeddings and a node mask."""

    def __init__(self, dim: int, heads: int, edge_dim: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.bias = nn.Linear(edge_dim, heads)

    def forward(self, h: torch.Tensor, edge: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, N, D = h.shape
        q, k, v = self.qkv(h).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(D // self.heads) + self.bias(edge).permute(0, 3, 1, 2)
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
        attn = logits.softmax(-1)
        attn = torch.nan_to_num(attn)  # rows with nothing allowed contribute nothing
        return self.out((attn @ v).transpose(1, 2).reshape(B, N, D))


class RGTLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, edge_dim: int):
        super().__init__()
        self.message = nn.Linear(dim, dim)
        self.edge_message = nn.Linear(edge_dim, dim)
        self.update = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.near = EdgeAttention(dim, heads, edge_dim)
        self.far = EdgeAttention(dim, heads, edge_dim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))

    def forward(self, h, edge, weight, near, far):
        # local graph convolution: normalised soft-weighted messages from neighbours
        a = weight * near
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-6)
        msg = a @ self.message(h) + torch.einsum("bij,bije->bie", a, self.edge_message(edge))
        h = self.norms[0](h + self.update(torch.cat([h, msg], -1)))
        # attention, separately over neighbours and over the rest (long range)
        h = self.norms[1](h + self.near(h, edge, near) + self.far(h, edge, far))
        return self.norms[2](h + self.ffn(h))


class RelationGraphTransformer(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        heads: int = 4,
        ffn_dim: int = 192,
        layers: int = 2,
        edge_dim: int = 32,
        near: float = 1.5,
        touch: float = 0.05,
    ):
        super().__init__()
        self.near_factor, self.touch = near, touch
        self.edge_embed = nn.Sequential(nn.Linear(EDGE_FEATURES, edge_dim), nn.ReLU(), nn.Linear(edge_dim, edge_dim))
        self.edge_weight = nn.Linear(edge_dim, 1)
        self.layers = nn.ModuleList(RGTLayer(dim, heads, ffn_dim, edge_dim) for _ in range(layers))
        self.pair = nn.Sequential(nn.Linear(2 * dim + edge_dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def graph(self, soft_masks, coords, valid=None):
        """Edge features (B, N, N, F), neighbour and non-neighbour masks (B, N, N) bool (self in both)."""
        feats = edge_features(soft_masks, coords, valid)
        N = soft_masks.shape[1]
        eye = torch.eye(N, dtype=torch.bool, device=soft_masks.device)
        touching = torch.maximum(feats[..., 5], feats[..., 6]) > self.touch
        near = (touching | (feats[..., 2] < self.near_factor)) & ~eye
        return feats, near | eye, ~near

    def forward(
        self,
        nodes: torch.Tensor,
        soft_masks: torch.Tensor,
        coords: torch.Tensor,
        pairs: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """nodes (B, N, D), soft masks (B, N, P), coords (B, P, 3) (horizontal, horizontal, up), ordered pairs
        (R, 2) of node indices -> relation queries (B, R, D)."""
        feats, near, far = self.graph(soft_masks.detach(), coords, valid)
        edge = self.edge_embed(feats)
        weight = torch.sigmoid(self.edge_weight(edge)).squeeze(-1)
        h = nodes
        for layer in self.layers:
            h = layer(h, edge, weight, near, far)
        s, o = pairs[:, 0], pairs[:, 1]
        return self.pair(torch.cat([h[:, s], h[:, o], edge[:, s, o]], -1))


def image_coords(h: int, w: int, device=None) -> torch.Tensor:
    """(h*w, 3) location coordinates of an image grid in the RGT convention: (x, 0, up = -y), in pixels."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs.flatten().float(), torch.zeros(h * w, device=device), -ys.flatten().float()], -1)


def masks_for_graph(mask_logits: torch.Tensor) -> torch.Tensor:
    """Soft masks for the graph from mask logits (no gradient: the geometry steers, it is not trained through)."""
    return F.sigmoid(mask_logits.detach())
