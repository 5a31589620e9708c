"""Hungarian matching of query tubes to GT tubes, and the 4D training losses.

Matching is done once per clip over whole tubes: the cost of (query q, GT object g) is
``w_class * (-p_q(class_g)) + w_mask * mean over frames of (BCE + Dice)(mask_q,t, mask_g,t)`` on sampled points,
so a query is held to the same object in every frame (and every window) of the clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


@dataclass
class LossWeights:
    cls: float = 2.0
    no_object: float = 0.1
    bce: float = 5.0
    dice: float = 5.0
    relation: float = 2.0
    relation_pos_weight: float = 5.0
    semantic: float = 1.0  # dense per-point class loss (auxiliary: fast to learn, and it names tubes)
    llm: float = 1.0  # SceneLLM: language-model loss on the serialised scene graph
    llm_mask: float = 5.0  # SceneLLM: mask losses (BCE + Dice) of the <obj> queries
    # deep supervision (Mask2Former): the class and mask losses of every decoder layer but the last, matched per
    # layer, times this factor (1: each layer weighs as the last one); 0: the last layer only
    deep: float = 0.0
    # Hungarian matching costs, separate from the loss weights: a stage that switches a loss off (weight 0)
    # still matches queries by class and mask (Mask2Former's costs: class 2, mask BCE 5, Dice 5)
    match_cls: float = 2.0
    match_bce: float = 5.0
    match_dice: float = 5.0


def batch_bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, S) logits, (G, S) {0,1} targets -> (Q, G) mean BCE of every pair."""
    S = max(logits.shape[1], 1)
    pos, neg = F.softplus(-logits), F.softplus(logits)
    return (pos @ targets.T + neg @ (1 - targets).T) / S


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid()
    num = 2 * p @ targets.T
    den = p.sum(1)[:, None] + targets.sum(1)[None, :]
    return 1 - (num + 1) / (den + 1)


def mask_match_cost(logits: torch.Tensor, targets: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """(Q, S) logits, (G, S) targets -> (Q, G) mask part of the matching cost."""
    return w.match_bce * batch_bce_cost(logits, targets) + w.match_dice * batch_dice_cost(logits, targets)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Row-wise Dice loss, (K, S) -> (K,)."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(1) + 1) / (p.sum(1) + targets.sum(1) + 1)


@torch.no_grad()
def hungarian_match(
    class_prob: torch.Tensor, gt_classes: torch.Tensor, mask_costs: torch.Tensor, w: LossWeights
) -> tuple[np.ndarray, np.ndarray]:
    """``class_prob`` (Q, C+1), ``gt_classes`` (G,), ``mask_costs`` (Q, G) -> matched (query idx, GT idx)."""
    if len(gt_classes) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cost = -w.match_cls * class_prob[:, gt_classes] + mask_costs
    q, g = linear_sum_assignment(cost.float().cpu().numpy())
    return q.astype(np.int64), g.astype(np.int64)
