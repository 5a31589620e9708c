"""PSG reader (docs/formats.md, the OpenPSG ``psg.json`` layout) as a dataset of :class:`SceneGraph2D`.

Masks are decoded lazily, one image per item, from the COCO panoptic PNGs (id = R + 256 G + 256^2 B), so
memory stays flat over the 49k images. Split: ``test`` is ``image_id in test_image_ids``, ``train`` the rest;
images without relations are dropped (the official test split: 2,186 ids, 2,177 with relations).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spade4d.data.files import DatasetError, load_json
from spade4d.structures import Object2D, Relation2D, SceneGraph2D, StructureError, as_int


def read_panoptic_ids(path: str | os.PathLike) -> np.ndarray:
    """(H, W) int64 segment ids of a COCO panoptic PNG."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: panoptic PNG not found")
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DatasetError(f"{path}: a {im.format} image, expected a COCO panoptic PNG")
            if im.mode not in ("RGB", "RGBA"):
                raise DatasetError(
                    f"{path}: a {im.mode}-mode image, expected an RGB panoptic PNG (id = R + 256 G + ...)"
                )
            rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable or truncated PNG ({e})") from None
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


class PSGDataset:
    def __init__(
        self,
        psg_json: str | os.PathLike,
        coco_root: str | os.PathLike,
        split: str | None = "test",
        keep_without_relations: bool = False,
    ):
        self.json_path = Path(psg_json)
        self.coco_root = Path(coco_root)
        self.split = split
        ann = load_json(self.json_path)
        try:
            self.thing_classes = list(ann["thing_classes"])
            self.stuff_classes = list(ann["stuff_classes"])
            self.predicates = list(ann["predicate_classes"])
            data = ann["data"]
            test_ids = set(map(str, ann["test_image_ids"]))
        except KeyError as e:
            raise DatasetError(f"{self.json_path}: missing top-level key {e.args[0]!r}") from None
        self.classes = self.thing_classes + self.stuff_classes
        if split == "test":
            data = [d for d in data if str(d["image_id"]) in test_ids]
        elif split == "train":
            data = [d for d in data if str(d["image_id"]) not in test_ids]
        elif split is not None:
            raise DatasetError(f"{self.json_path}: unknown split {split!r} (train | test)")
        if not keep_without_relations:
            data = [d for d in data if d.get("relations")]
        self.entries = data

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[SceneGraph2D]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> SceneGraph2D:
        d = self.entries[i]
        where = f"{self.json_path} [image {d.get('image_id')!r}]"
        try:
            h, w = int(d["height"]), int(d["width"])
            if (
                d["pan_seg_file_name"] is None
            ):  # box-only entries (explicitly null) (VG converted by `spade4d convert vg`)
                return self._box_only(d, h, w, where)
            ids = read_panoptic_ids(self.coco_root / d["pan_seg_file_name"])
            if ids.shape != (h, w):
                raise DatasetError(
                    f"{self.coco_root / d['pan_seg_file_name']}: size {ids.shape[::-1]} but the annotation says {w}x{h}"
                )
            objects, seen = [], set()
            for k, seg in enumerate(d["segments_info"]):
                cat = as_int(seg["category_id"], f"segment {k} category_id", "")
                if not 0 <= cat < len(self.classes):
                    raise DatasetError(f"{where}: segment {k} category_id {cat} outside 0..{len(self.classes) - 1}")
                sid = as_int(seg["id"], f"segment {k} id", "")
                if sid in seen:
                    raise DatasetError(f"{where}: segment id {sid} appears twice in segments_info")
                seen.add(sid)
                mask = ids == sid
                if not mask.any():
                    raise DatasetError(f"{where}: segment {k} id {sid} has no pixel in {d['pan_seg_file_name']}")
                objects.append(Object2D(label=self.classes[cat], mask=mask))
            rels = []
            for k, rel in enumerate(d.get("relations", [])):
                if not isinstance(rel, (list, tuple)) or len(rel) != 3:
                    raise DatasetError(f"{where}: relation {k} {rel!r} is not [subject, object, predicate]")
                s, o, p = (as_int(x, f"relation {k} index", "") for x in rel)
                if not 0 <= p < len(self.predicates):
                    raise DatasetError(f"{where}: relation {k} predicate {p} outside 0..{len(self.predicates) - 1}")
                rels.append(Relation2D(s, o, self.predicates[p]))
            return SceneGraph2D(str(d["image_id"]), h, w, objects, rels, file_name=d.get("file_name", ""))
        except KeyError as e:
            raise DatasetError(f"{where}: missing field {e.args[0]!r}") from None
        except (StructureError, TypeError) as e:
            raise DatasetError(f"{where}: {e}") from None

    def _box_only(self, d: dict, h: int, w: int, where: str) -> SceneGraph2D:
        from spade4d.data.vg import box_mask

        objects = [
            Object2D(self.classes[int(a["category_id"])], box_mask(np.asarray(a["bbox"], float), h, w))
            for a in d["annotations"]
        ]
        rels = [Relation2D(int(s), int(o), self.predicates[int(p)]) for s, o, p in d.get("relations", [])]
        try:
            return SceneGraph2D(str(d["image_id"]), h, w, objects, rels, file_name=d.get("file_name", ""))
        except StructureError as e:
            raise DatasetError(f"{where}: {e}") from None
