"""VG-150 -> a PSG-style ``psg.json`` with box masks (``pan_seg_file_name: null``; boxes in ``annotations``),
so 2D pretraining reads VG through the PSG reader."""

from __future__ import annotations

import os

import numpy as np

from spade4d.data.vg import VG150, boxes_to_image
from spade4d.io import write_json


def vg_to_psg_json(
    h5: str | os.PathLike,
    dicts: str | os.PathLike,
    image_data: str | os.PathLike,
    out: str | os.PathLike,
    progress: bool = True,
) -> int:
    from tqdm import tqdm

    vg = VG150(h5, dicts, image_data, split=None)
    data, test_ids = [], []
    for row in tqdm(vg.rows, desc="vg", disable=not progress):
        info = vg.images[int(row)]
        w, h = int(info["width"]), int(info["height"])
        b0, b1 = int(vg.first_box[row]), int(vg.last_box[row])
        boxes = boxes_to_image(vg.boxes[b0 : b1 + 1], w, h) if b0 >= 0 else np.zeros((0, 4))
        labels = vg.labels[b0 : b1 + 1] if b0 >= 0 else []
        r0, r1 = int(vg.first_rel[row]), int(vg.last_rel[row])
        rels = []
        if r0 >= 0:
            rels = [
                [int(s) - b0, int(o) - b0, int(p) - 1] for (s, o), p in zip(vg.rels[r0 : r1 + 1], vg.preds[r0 : r1 + 1])
            ]
        image_id = str(info.get("image_id", row))
        data.append(
            {
                "file_name": info.get("url", "").split("/")[-1] or f"{image_id}.jpg",
                "height": h,
                "width": w,
                "image_id": image_id,
                "pan_seg_file_name": None,
                "segments_info": [
                    {"id": k + 1, "category_id": int(c) - 1, "iscrowd": 0, "isthing": 1} for k, c in enumerate(labels)
                ],
                "annotations": [
                    {"bbox": [float(x) for x in b], "bbox_mode": 0, "category_id": int(c) - 1}
                    for b, c in zip(boxes, labels)
                ],
                "relations": rels,
            }
        )
        if int(vg.split_arr[row]) == 2:
            test_ids.append(image_id)
    write_json(
        out,
        {
            "thing_classes": vg.classes,
            "stuff_classes": [],
            "predicate_classes": vg.predicates,
            "test_image_ids": test_ids,
            "data": data,
        },
    )
    return len(data)
