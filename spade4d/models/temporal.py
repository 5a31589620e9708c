"""The temporal aggregation module: what carries an object query's identity and state across frames and windows.

Every object query keeps one state per frame of a window. :class:`TemporalAggregator` lets each query's states
attend over the query's own frames (a sinusoidal encoding of the frame index tells them apart) and over one memory
token: the query's summary from the previous window. It runs inside every 4D decoder layer (after the
per-frame cross- and self-attention), so query q stays the same object over the whole sequence without a tracker.
The video model reuses it unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_encoding(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of integer positions (...,) -> (..., dim)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half).to(pos.device)
    ang = pos.float()[..., None] * freq  # (..., half)
    return torch.cat([ang.sin(), ang.cos()], -1)


class TemporalAggregator(nn.Module):
    """Attention over one query's frames (plus a carried memory token) with a temporal position encoding."""

    def __init__(self, *, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.mem_pos = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, times: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x (T, Q, D), times (T,) frame indices, memory (Q, D) -> (T, Q, D)."""
        T, Q, D = x.shape
        seq = x.transpose(0, 1)  # (Q, T, D): one sequence of frames per query
        pos = sine_encoding(times, D)[None].expand(Q, -1, -1)  # (Q, T, D)
        keys = torch.cat([(memory + self.mem_pos)[:, None], seq + pos], 1)  # (Q, T+1, D)
        h, _ = self.attn(seq + pos, keys, torch.cat([memory[:, None], seq], 1))
        seq = self.norm1(seq + h)
        seq = self.norm2(seq + self.ffn(seq))
        return seq.transpose(0, 1)  # (T, Q, D)
