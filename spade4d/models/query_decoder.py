"""Object queries decoding masks from a set of feature keys (Mask2Former-style masked attention).

:class:`QueryLayer` is the unit the 2D and the 4D decoders share (cross-attention to the keys, self-attention
among the queries, FFN); its parameters have the same names and shapes in both, which is what lets the 2D→4D
transfer move them. :class:`QueryDecoder2D` decodes images; :class:`QueryDecoder4D` decodes the frames of a window
of points, with a :class:`~spade4d.models.temporal.TemporalAggregator` in each layer so that query q is the same
object in every frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.models.mask_decoder_3d import MaskDecoder3D
from spade4d.models.temporal import TemporalAggregator


def cross_attention(
    mha: nn.MultiheadAttention,
    x: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_pad: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mha(x, k, v)[0]`` for a few queries over many keys, on ``mha``'s own parameters, without projecting the
    keys. With Q queries and M keys of width D, the module projects every key and value (2·M·D² products); here
    each head's projected query is folded into the key projection instead, ``(q W_k) k^T``, and the attention
    weights are applied to the raw values before their projection, ``(P v) W_v + b_v`` (the rows of P sum to
    one). The key bias adds the same amount to every score of a query, which softmax ignores. Same values up to
    rounding, same gradients (the key bias's is zero either way), a few times faster for Q ≪ M.

    x (B, Q, D); k, v (B, M, D); key_pad (B, M) True = padding; attn_mask True = blocked, either (B, Q, M) for
    every head or (B·heads, Q, M) per head, heads batch-major as in ``nn.MultiheadAttention``. Modules with
    separate key/value widths, without biases or with dropout run their own forward instead."""
    B, Q, D = x.shape
    M, H = k.shape[1], mha.num_heads
    if mha.in_proj_weight is None or mha.in_proj_bias is None or (mha.training and mha.dropout > 0):
        # a module this shortcut does not cover (separate key/value widths, no biases, dropout): its own forward
        if attn_mask is not None and attn_mask.shape[0] == B and H > 1:
            attn_mask = attn_mask.repeat_interleave(H, 0)
        return mha(x, k, v, key_padding_mask=key_pad, attn_mask=attn_mask, need_weights=False)[0]
    dh = D // H
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, _, b_v = mha.in_proj_bias.chunk(3)
    q = (F.linear(x, w_q, b_q) * dh**-0.5).view(B, Q, H, dh).transpose(1, 2)  # (B, H, Q, dh)
    a = (q @ w_k.view(H, dh, D)).reshape(B, H * Q, D)  # each head's query in key space
    scores = (a @ k.transpose(1, 2)).view(B, H, Q, M)
    blocked = None if key_pad is None else key_pad[:, None, None, :]
    if attn_mask is not None:
        m = attn_mask.view(B, -1, Q, M)  # heads: H, or 1 (the same mask for all)
        blocked = m if blocked is None else m | blocked
    if blocked is not None:  # as an additive -inf bias, built at the mask's size and broadcast over the heads
        scores = scores + torch.zeros(blocked.shape, dtype=scores.dtype, device=scores.device).masked_fill_(
            blocked, float("-inf")
        )
    pv = scores.softmax(-1).view(B, H * Q, M) @ v  # (B, H*Q, D): attention over the raw values
    out = pv.view(B, H, Q, D) @ w_v.view(H, dh, D).transpose(1, 2) + b_v.view(H, 1, dh)  # (B, H, Q, dh)
    return mha.out_proj(out.transpose(1, 2).reshape(B, Q, D))


class QueryLayer(nn.Module):
    """Cross-attention to the keys, self-attention among the queries, FFN (post-norm, as Mask2Former)."""

    def __init__(self, *, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))

    def attend(self, x, qpos, keys, key_pad, attn_mask, key_pos=None):
        """x (B, Q, D); keys (B, M, D); key_pad (B, M) True = padding; attn_mask (B, Q, M) True = blocked."""
        k = keys if key_pos is None else keys + key_pos
        h = cross_attention(self.cross, x + qpos, k, keys, key_pad, attn_mask)
        x = self.norms[0](x + h)
        h, _ = self.self_attn(x + qpos, x + qpos, x)
        x = self.norms[1](x + h)
        return self.norms[2](x + self.ffn(x))

    def forward(self, x, qpos, keys, key_pad, attn_mask, key_pos=None):
        return self.attend(x, qpos, keys, key_pad, attn_mask, key_pos)


def next_attention_mask(logits: torch.Tensor, key_pad: torch.Tensor) -> torch.Tensor:
    """The masked-attention mask ``(B, Q, M)`` (True = blocked, the same for every head) for the next layer from
    mask logits ``(B, Q, M)`` over keys whose column 0 is the always-visible null key. A query whose mask covers
    no key sees every key (as in Mask2Former): without this, queries start blind (random masks are mostly empty)
    and never learn to localise."""
    blocked = (logits.detach() < 0) | key_pad[:, None, :]
    blind = blocked[:, :, 1:].all(-1, keepdim=True)
    blocked = torch.where(blind, key_pad[:, None, :].expand_as(blocked), blocked)
    blocked[:, :, 0] = False
    return blocked


class QueryDecoder2D(nn.Module):
    """``num_queries`` learned queries over the pixel keys of each image: states, mask logits, mask-pooled keys."""

    def __init__(self, *, num_queries: int, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(num_queries, dim))  # unit scale: queries must differ from the start
        self.query_pos = nn.Parameter(torch.randn(num_queries, dim))
        self.null_key = nn.Parameter(torch.zeros(dim))
        self.layers = nn.ModuleList(QueryLayer(dim=dim, heads=heads, ffn_dim=ffn_dim) for _ in range(layers))
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
            attn_mask = next_attention_mask(logits, pad)
        mask_logits = logits[:, :, 1:]
        w = mask_logits.sigmoid()
        pooled = torch.einsum("bqm,bmd->bqd", w, keys) / w.sum(-1, keepdim=True).clamp_min(1e-3)
        return x, mask_logits, pooled


class TemporalQueryLayer(QueryLayer):
    """The 2D core's query layer plus a temporal aggregator (queries of one frame attend within the frame, then
    over their own frames and the memory)."""

    def __init__(self, *, dim: int, heads: int, ffn_dim: int):
        super().__init__(dim=dim, heads=heads, ffn_dim=ffn_dim)
        self.temporal = TemporalAggregator(dim=dim, heads=heads, ffn_dim=ffn_dim)

    def forward(self, x, qpos, keys, key_pad, attn_mask, times, memory):
        # x (T, Q, D); keys (T, M, D); key_pad (T, M) True = padding; attn_mask (T, Q, M) True = blocked
        return self.temporal(self.attend(x, qpos, keys, key_pad, attn_mask), times, memory)


class QueryDecoder4D(nn.Module):
    """``num_queries`` learned queries over the voxels of each frame of a window; the same queries in every
    frame, a memory from the previous window both initialising them (through a zero-initialised gate) and taking
    part in the temporal attention."""

    def __init__(self, *, num_queries: int, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(num_queries, dim))  # unit scale: queries must differ from the start
        self.query_pos = nn.Parameter(torch.randn(num_queries, dim))
        self.null_key = nn.Parameter(torch.zeros(dim))  # always visible: empty frames and fully masked rows stay finite
        self.layers = nn.ModuleList(TemporalQueryLayer(dim=dim, heads=heads, ffn_dim=ffn_dim) for _ in range(layers))
        self.mask_embed = MaskDecoder3D(dim=dim)
        self.carry = nn.Linear(dim, dim)  # previous window's summary -> next window's query init (zero-init: a gate)
        nn.init.zeros_(self.carry.weight)
        nn.init.zeros_(self.carry.bias)

    def forward(self, keys, key_pad, times, memory, intermediate: bool = False):
        """keys (T, M, D) voxel features per frame, key_pad (T, M), times (T,), memory (Q, D) -> the (T, Q, D)
        states and the (Q, D) mask-pooled voxel features of each query over the window; with ``intermediate``
        also a list of (states, pooled) after every layer but the last (deep supervision in training)."""
        T = keys.shape[0]
        keys = torch.cat([self.null_key.expand(T, 1, -1), keys], 1)  # (T, 1 + M, D): the null key at 0
        key_pad = torch.cat([torch.zeros(T, 1, dtype=torch.bool, device=keys.device), key_pad], 1)
        x = (self.query + self.carry(memory))[None].expand(T, -1, -1)  # (T, Q, D)
        qpos = self.query_pos[None].expand(T, -1, -1)
        attn_mask = None
        layers = []
        for i, layer in enumerate(self.layers):
            x = layer(x, qpos, keys, key_pad, attn_mask, times, memory)
            logits = self.mask_embed.voxel_logits(x, keys)  # (T, Q, 1 + M)
            attn_mask = next_attention_mask(logits, key_pad)
            if intermediate and i < len(self.layers) - 1:
                layers.append((x, _mask_pooled(logits, keys, key_pad)))
        pooled = _mask_pooled(logits, keys, key_pad)
        return (x, pooled, layers) if intermediate else (x, pooled)


def _mask_pooled(logits: torch.Tensor, keys: torch.Tensor, key_pad: torch.Tensor) -> torch.Tensor:
    """Each query's voxel features averaged under its (soft) mask over the window's frames: logits (T, Q, 1 + M)
    and keys (T, 1 + M, D) with the null key at 0, key_pad (T, 1 + M) -> (Q, D)."""
    w = logits[:, :, 1:].sigmoid() * (~key_pad[:, None, 1:])  # (T, Q, M)
    return torch.einsum("tqm,tmd->qd", w, keys[:, 1:]) / w.sum((0, 2))[:, None].clamp_min(1e-3)
