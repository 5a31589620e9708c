"""Object queries decoding masks from a set of feature keys (Mask2Former-style masked attention).

:class:`QueryLayer` is the unit the 2D and the 4D decoders share (cross-attention to the keys, self-attention
among the queries, FFN); its parameters have the same names and shapes in both, which is what lets the 2D→4D
transfer move them. The 4D decoder adds a temporal aggregator to each layer (see ``model4d.py``).
"""

from __future__ import annotations

import torch
from torch import nn


class QueryLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))

    def attend(self, x, qpos, keys, key_pad, attn_mask, key_pos=None):
        """x (B, Q, D); keys (B, M, D); key_pad (B, M) True = padding; attn_mask (B*heads, Q, M) True = blocked."""
        k = keys if key_pos is None else keys + key_pos
        h, _ = self.cross(x + qpos, k, keys, key_padding_mask=key_pad, attn_mask=attn_mask)
        x = self.norms[0](x + h)
        h, _ = self.self_attn(x + qpos, x + qpos, x)
        x = self.norms[1](x + h)
        return self.norms[2](x + self.ffn(x))

    def forward(self, x, qpos, keys, key_pad, attn_mask, key_pos=None):
        return self.attend(x, qpos, keys, key_pad, attn_mask, key_pos)


def next_attention_mask(logits: torch.Tensor, key_pad: torch.Tensor, heads: int) -> torch.Tensor:
    """The masked-attention mask for the next layer from mask logits ``(B, Q, M)`` over keys whose column 0 is
    the always-visible null key. A query whose mask covers no key sees every key (as in Mask2Former): without
    this, queries start blind (random masks are mostly empty) and never learn to localise."""
    blocked = (logits.detach() < 0) | key_pad[:, None, :]
    blind = blocked[:, :, 1:].all(-1, keepdim=True)
    blocked = torch.where(blind, key_pad[:, None, :].expand_as(blocked), blocked)
    blocked[:, :, 0] = False
    return blocked.repeat_interleave(heads, 0)


class QueryDecoder2D(nn.Module):
    """``num_queries`` learned queries over the pixel keys of each image: states, mask logits, mask-pooled keys."""

    def __init__(self, num_queries: int, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(num_queries, dim))  # unit scale: queries must differ from the start
        self.query_pos = nn.Parameter(torch.randn(num_queries, dim))
        self.null_key = nn.Parameter(torch.zeros(dim))
        self.layers = nn.ModuleList(QueryLayer(dim, heads, ffn_dim) for _ in range(layers))
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, keys: torch.Tensor, key_pos: torch.Tensor | None = None):
        """keys (B, M, D) -> states (B, Q, D), mask logits (B, Q, M), mask-pooled keys (B, Q, D)."""
        B = keys.shape[0]
        keys_n = torch.cat([self.null_key.expand(B, 1, -1), keys], 1)
        pos_n = None if key_pos is None else torch.cat([torch.zeros_like(key_pos[:, :1]), key_pos], 1)
        pad = torch.zeros(keys_n.shape[:2], dtype=torch.bool, device=keys.device)
        x = self.query[None].expand(B, -1, -1)
        qpos = self.query_pos[None].expand(B, -1, -1)
        attn_mask = None
        for layer in self.layers:
            x = layer(x, qpos, keys_n, pad, attn_mask, pos_n)
            logits = torch.einsum("bqd,bmd->bqm", self.mask_embed(x), keys_n)
            attn_mask = next_attention_mask(logits, pad, self.heads)
        mask_logits = logits[:, :, 1:]
        w = mask_logits.sigmoid()
        pooled = torch.einsum("bqm,bmd->bqd", w, keys) / w.sum(-1, keepdim=True).clamp_min(1e-3)
        return x, mask_logits, pooled
