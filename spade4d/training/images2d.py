"""2D training samples from a PSG-layout dataset: images at the model's input size, masks on its feature grid,
relations and a caption written from the scene graph. Loaded on demand (the real PSG has 49k images); small
sets are kept in memory after the first read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spade4d.data.psg import PSGDataset
from spade4d.data.psg4d import DatasetError
from spade4d.models.diffusion_backbone import caption_of


@dataclass
class ImageSample:
    image_id: str
    image: torch.Tensor  # (3, H, W) float in [0, 1] at the model's input size
    size: tuple[int, int]  # the original (H, W)
    labels: list[str]
    masks: torch.Tensor  # (G, h, w) coverage fractions on the feature grid
    relations: list[tuple[int, int, str]]  # (subject, object, predicate)

    @property
    def caption(self) -> str:
        return caption_of(self.labels, [(s, p, o) for s, o, p in self.relations])

    def relation_prompt(self, k: int = 0) -> str:
        """ "<subject> <predicate> <object>" of relation ``k`` (the class list when there is none)."""
        if not self.relations:
            return ", ".join(self.labels)
        s, o, p = self.relations[k % len(self.relations)]
        return f"{self.labels[s]} {p} {self.labels[o]}".replace("_", " ")


class ImageSet:
    def __init__(
        self,
        psg_json: str | os.PathLike,
        coco_root: str | os.PathLike,
        split: str,
        image_size: tuple[int, int],
        grid_size: tuple[int, int],
        cache: bool | None = None,
    ):
        self.ds = PSGDataset(psg_json, coco_root, split)
        self.coco_root = Path(coco_root)
        self.image_size, self.grid_size = tuple(image_size), tuple(grid_size)
        self.cache = len(self.ds) <= 5000 if cache is None else cache
        self._cache: dict[int, ImageSample] = {}

    @property
    def classes(self) -> list[str]:
        return self.ds.classes

    @property
    def predicates(self) -> list[str]:
        return self.ds.predicates

    def __len__(self) -> int:
        return len(self.ds)

    def graph(self, i: int):
        return self.ds[i]

    def __getitem__(self, i: int) -> ImageSample:
        if i in self._cache:
            return self._cache[i]
        from PIL import Image, UnidentifiedImageError

        g = self.ds[i]
        path = self.coco_root / g.file_name
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"{path}: cannot read the image of {g.image_id!r} ({e})") from None
        if rgb.shape[:2] != (g.height, g.width):
            raise DatasetError(
                f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, the annotation says {g.width}x{g.height}"
            )
        img = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0
        img = F.interpolate(img, size=self.image_size, mode="area")[0]
        masks = g.masks()
        m = torch.from_numpy(masks).float()[:, None] if len(masks) else torch.zeros((0, 1, g.height, g.width))
        m = F.interpolate(m, size=self.grid_size, mode="area")[:, 0] if len(m) else torch.zeros((0, *self.grid_size))
        s = ImageSample(
            g.image_id,
            img,
            (g.height, g.width),
            g.labels,
            m,
            [(r.subject, r.object, r.predicate) for r in g.relations],
        )
        if self.cache:
            self._cache[i] = s
        return s

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, list[ImageSample]]:
        samples = [self[i] for i in indices]
        return torch.stack([s.image for s in samples]), samples
