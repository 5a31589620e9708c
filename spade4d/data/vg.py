"""VG-150 reader (docs/formats.md): ``VG-SGG-with-attri.h5`` + ``VG-SGG-dicts-with-attri.json`` +
``image_data.json``, as a dataset of :class:`SceneGraph2D` whose masks are the boxes (VG has no masks; evaluate
it with ``iou_type="box"``).

``boxes_1024`` are (x centre, y centre, w, h) in a frame whose longest side is 1024; they are converted to
xyxy and rescaled to the image size from ``image_data.json``. Labels and predicates are 1-based in the h5 and are
mapped to names through the dicts. Split: ``split == 0`` train, ``2`` test; images without boxes, and images
without relations unless asked for, are dropped. ``val`` is the first ``num_val`` (5,000) remaining training
images and ``train`` then the rest, as Scene-Graph-Benchmark's loader does; ``num_val=0`` keeps them all in train.

``image_data.json`` lists 108,077 images and the h5 108,073 rows: the four corrupted images (``image_id`` 1592,
1722, 4616, 4617) are removed from the image list before it is aligned row by row with the h5 (docs/formats.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from spade4d.data.files import DatasetError, load_json
from spade4d.structures import Object2D, Relation2D, SceneGraph2D

BOX_SCALE = 1024
CORRUPTED_IMAGE_IDS = frozenset({1592, 1722, 4616, 4617})  # dropped from image_data.json before alignment
NUM_VAL_IMAGES = 5000


def boxes_to_image(boxes_1024: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) xc, yc, w, h at the 1024 scale -> (N, 4) float xyxy in image pixels."""
    b = np.asarray(boxes_1024, dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    return xyxy * (max(width, height) / BOX_SCALE)


def box_mask(box: np.ndarray, height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((height, width), dtype=bool)
    m[
        max(int(np.floor(y0)), 0) : min(int(np.ceil(y1)), height),
        max(int(np.floor(x0)), 0) : min(int(np.ceil(x1)), width),
    ] = True
    return m


class VG150:
    def __init__(
        self,
        h5_path: str | os.PathLike,
        dicts_path: str | os.PathLike,
        image_data: str | os.PathLike,
        split: str | None = "test",
        keep_without_relations: bool = False,
        num_val: int = NUM_VAL_IMAGES,
    ):
        import h5py

        self.h5_path = Path(h5_path)
        if not self.h5_path.is_file():
            raise DatasetError(f"{self.h5_path}: file not found")
        dicts = load_json(dicts_path)
        try:
            self.idx_to_label = {int(k): v for k, v in dicts["idx_to_label"].items()}
            self.idx_to_predicate = {int(k): v for k, v in dicts["idx_to_predicate"].items()}
        except KeyError as e:
            raise DatasetError(f"{dicts_path}: missing {e.args[0]!r}") from None
        self.classes = [self.idx_to_label[k] for k in sorted(self.idx_to_label)]
        self.predicates = [self.idx_to_predicate[k] for k in sorted(self.idx_to_predicate)]
        images = load_json(image_data)
        if not isinstance(images, list) or not all(isinstance(im, dict) for im in images):
            raise DatasetError(f"{image_data}: expected a list of image records")
        self.images = [im for im in images if im.get("image_id") not in CORRUPTED_IMAGE_IDS]
        try:
            with h5py.File(self.h5_path, "r") as f:
                self.split_arr = f["split"][:]
                self.first_box, self.last_box = f["img_to_first_box"][:], f["img_to_last_box"][:]
                self.first_rel, self.last_rel = f["img_to_first_rel"][:], f["img_to_last_rel"][:]
                self.labels = f["labels"][:, 0]
                self.boxes = f["boxes_1024"][:]
                self.rels = f["relationships"][:]
                self.preds = f["predicates"][:, 0]
        except KeyError as e:
            raise DatasetError(f"{self.h5_path}: missing dataset {e}") from None
        except OSError as e:
            raise DatasetError(f"{self.h5_path}: unreadable HDF5 file ({e})") from None
        if len(self.images) != len(self.split_arr):
            dropped = len(images) - len(self.images)
            raise DatasetError(
                f"{image_data}: {len(self.images)} images (after dropping {dropped} corrupted ones) but the h5 has "
                f"{len(self.split_arr)} rows"
            )
        wanted = {"train": 0, "val": 0, "test": 2, None: None}.get(split, -1)
        if wanted == -1:
            raise DatasetError(f"{self.h5_path}: unknown split {split!r} (train | val | test)")
        rows = np.arange(len(self.split_arr))
        if wanted is not None:
            rows = rows[self.split_arr == wanted]
            rows = rows[self.first_box[rows] >= 0]
        if not keep_without_relations:
            rows = rows[self.first_rel[rows] >= 0]
        if split == "val":
            rows = rows[:num_val]
        elif split == "train":
            rows = rows[num_val:]
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[SceneGraph2D]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> SceneGraph2D:
        row = int(self.rows[i])
        info = self.images[row]
        w, h = int(info["width"]), int(info["height"])
        where = f"{self.h5_path} [image {info.get('image_id', row)}]"
        b0, b1 = int(self.first_box[row]), int(self.last_box[row])
        objects = []
        if b0 >= 0:
            for k, box in zip(range(b0, b1 + 1), boxes_to_image(self.boxes[b0 : b1 + 1], w, h)):
                lab = int(self.labels[k])
                if lab not in self.idx_to_label:
                    raise DatasetError(f"{where}: box {k} label {lab} is not in idx_to_label")
                objects.append(Object2D(self.idx_to_label[lab], box_mask(box, h, w)))
        rels = []
        r0, r1 = int(self.first_rel[row]), int(self.last_rel[row])
        if r0 >= 0:
            for k in range(r0, r1 + 1):
                s, o = (int(x) - b0 for x in self.rels[k])
                if not (0 <= s < len(objects) and 0 <= o < len(objects)):
                    raise DatasetError(
                        f"{where}: relation {k} box indices {self.rels[k].tolist()} outside "
                        f"the image's boxes {b0}..{b1}"
                    )
                p = int(self.preds[k])
                if p not in self.idx_to_predicate:
                    raise DatasetError(f"{where}: relation {k} predicate {p} is not in idx_to_predicate")
                rels.append(Relation2D(s, o, self.idx_to_predicate[p]))
        return SceneGraph2D(str(info.get("image_id", row)), h, w, objects, rels)
