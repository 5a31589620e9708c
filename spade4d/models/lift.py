"""2D features lifted onto points: the 2D core's frozen backbone + pixel decoder run on the RGB frame a point
cloud came from, and each point takes the feature at its pixel (bilinear), found by projecting the point with
the frame's camera (see :mod:`spade4d.data.cameras`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.models.diffusion_backbone import BackboneConfig, DiffusionBackbone


class LiftedFeatures(nn.Module):
    def __init__(self, backbone: DiffusionBackbone, pixel: nn.Module, dim: int):
        super().__init__()
        self.backbone, self.pixel, self.dim = backbone, pixel, dim
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LiftedFeatures:  # frozen: always in eval mode
        return super().train(False)

    @classmethod
    def from_spade2d(cls, model) -> LiftedFeatures:
        import copy

        return cls(copy.deepcopy(model.backbone), copy.deepcopy(model.pixel), model.config.dim)

    @classmethod
    def from_config(cls, config_2d: dict, backbone: DiffusionBackbone | None = None) -> LiftedFeatures:
        from spade4d.models.spade2d import PixelDecoder

        if backbone is None:
            backbone = DiffusionBackbone.tiny(BackboneConfig.from_dict(config_2d["backbone"]))
        pixel = PixelDecoder(in_channels=backbone.feature_channels, dim=config_2d["dim"])
        return cls(backbone, pixel, config_2d["dim"])

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor | None, uv: torch.Tensor | None, frame: torch.Tensor, n: int
    ) -> torch.Tensor:
        """(n, dim) per-point features, layer-normalised; zeros for points without a pixel (or no images)."""
        out = torch.zeros((n, self.dim), device=frame.device)
        if images is None or uv is None or n == 0:
            return out
        feats = self.pixel(self.backbone(images.to(frame.device)))  # (T, D, h, w)
        inside = torch.isfinite(uv).all(1) & (uv.abs() <= 1).all(1)
        for t in range(feats.shape[0]):
            sel = torch.nonzero((frame == t) & inside).squeeze(1)
            if len(sel) == 0:
                continue
            grid = uv[sel][None, None].to(feats)
            sampled = F.grid_sample(feats[t : t + 1], grid, mode="bilinear", align_corners=False)[0, :, 0].T
            out[sel] = F.layer_norm(sampled, (self.dim,))
        return out
