"""2D features lifted onto points: the 2D core's frozen backbone + pixel decoder run on the RGB frame a point
cloud came from, and each point takes the feature at its pixel (bilinear), found by projecting the point with
the frame's camera (see :mod:`spade4d.data.cameras`)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.models.diffusion_backbone import BackboneConfig, DiffusionBackbone


class FrameFeatureCache:
    """Pixel feature maps of frames already seen, keyed by the frame's bytes, least recently used dropped first
    beyond ``max_bytes``. The lift is frozen and has no randomness, so a frame read again (a later training
    step, BatchNorm recalibration, validation) needs no second backbone pass; training turns it on
    (``Train4DConfig.lift_cache_mb``), inference leaves it off so memory stays flat in video length."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self.maps: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        data = image.detach().cpu().contiguous().numpy()
        return hashlib.blake2b(data.tobytes(), digest_size=16).digest() + repr(tuple(data.shape)).encode()

    def get(self, key: bytes) -> torch.Tensor | None:
        hit = self.maps.get(key)
        if hit is not None:
            self.maps.move_to_end(key)
        return hit

    def put(self, key: bytes, feats: torch.Tensor) -> None:
        size = feats.numel() * feats.element_size()
        if size > self.max_bytes:
            return
        self.maps[key] = feats
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.maps.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


class LiftedFeatures(nn.Module):
    def __init__(self, backbone: DiffusionBackbone, pixel: nn.Module, dim: int):
        super().__init__()
        self.backbone, self.pixel, self.dim = backbone, pixel, dim
        self.cache: FrameFeatureCache | None = None
        self.requires_grad_(False)
        self.eval()

    def cache_frames(self, max_bytes: int) -> None:
        """Keep up to ``max_bytes`` of frames' feature maps (0: none) for frames read again."""
        self.cache = FrameFeatureCache(max_bytes) if max_bytes > 0 else None

    def feature_maps(self, images: torch.Tensor, device) -> torch.Tensor:
        """(T, D, h, w): the pixel decoder's output for each image, from the cache where it has them."""
        if self.cache is None:
            return self.pixel(self.backbone(images.to(device)))
        keys = [FrameFeatureCache.key(im) for im in images]
        maps = [self.cache.get(k) for k in keys]
        todo = [i for i, m in enumerate(maps) if m is None]
        self.cache.hits += len(images) - len(todo)
        self.cache.misses += len(todo)
        if todo:
            new = self.pixel(self.backbone(images[todo].to(device)))
            for i, f in zip(todo, new):
                maps[i] = f
                self.cache.put(keys[i], f)
        return torch.stack(maps)

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
        feats = self.feature_maps(images, frame.device)  # (T, D, h, w)
        inside = torch.isfinite(uv).all(1) & (uv.abs() <= 1).all(1)
        for t in range(feats.shape[0]):
            sel = torch.nonzero((frame == t) & inside).squeeze(1)
            if len(sel) == 0:
                continue
            grid = uv[sel][None, None].to(feats)
            sampled = F.grid_sample(feats[t : t + 1], grid, mode="bilinear", align_corners=False)[0, :, 0].T
            out[sel] = F.layer_norm(sampled, (self.dim,))
        return out
