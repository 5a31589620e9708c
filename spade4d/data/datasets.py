"""Opening a 4D dataset by its format name, as every command and the demo do (docs/formats.md).

``synthetic`` is a ``make-synthetic`` folder: its points are ``<root>/psg4d_pc`` (spade4d's layout) and its RGB
frames + cameras ``<root>/psg4d_gta`` (PSG4D-GTA's layout). The RGB-D formats are read through ``convert``
first: the 4D model and the 4D evaluation read point clouds.
"""

from __future__ import annotations

import os
from pathlib import Path

# the point-cloud layouts; "psg4d-pc" is the earlier name of "spade4d-pc"
POINT_FORMATS = ("spade4d-pc", "psg4d-gta-pc", "psg4d-hoi-pc", "synthetic", "psg4d-pc")
FORMATS_4D = (*POINT_FORMATS, "psg4d-gta", "psg4d-hoi", "pvsg")


def point_cloud_root(fmt: str, root: str | os.PathLike) -> Path:
    """Where a dataset's point clouds are; the RGB-D formats are refused with the command that converts them."""
    if fmt == "synthetic":
        return Path(root) / "psg4d_pc"
    if fmt in POINT_FORMATS:
        return Path(root)
    raise ValueError(
        f"--format {fmt}: 4D evaluation and the 4D model read point clouds; convert {fmt} data first "
        f"(spade4d convert {fmt}) and pass --format spade4d-pc"
    )


def rgb_root(fmt: str, root: str | os.PathLike, explicit: str | os.PathLike | None = None) -> Path | None:
    """Where the RGB frames + cameras behind the points are (for models that lift 2D features), if known."""
    if explicit:
        return Path(explicit)
    if fmt == "synthetic":
        return Path(root) / "psg4d_gta"
    return None


def open_4d_dataset(fmt: str, root: str | os.PathLike, split: str | None, annotation: str | None = None):
    """A (PointSequence, SceneGraph4D) dataset of the split, by format name."""
    from spade4d.data.psg4d import open_point_clouds

    pc_root = point_cloud_root(fmt, root)
    return open_point_clouds("spade4d-pc" if fmt == "synthetic" else fmt, pc_root, split, annotation)


def model_rgb_source(model, fmt: str, root: str | os.PathLike, explicit: str | os.PathLike | None = None):
    """The RGB frames + cameras a model that lifts 2D features reads (None for the other models)."""
    if model.lift is None:
        return None
    from spade4d.data.cameras import CameraFrames

    where = rgb_root(fmt, root, explicit)
    if where is None:
        raise ValueError("the model lifts 2D features; pass --rgb-root (the RGB frames + cameras)")
    return CameraFrames(where)


def dataset_notes(ds) -> list[str]:
    """What a user of a split should know: frames missing on disk, GT relations no prediction can recall."""
    st = getattr(ds, "stats", {})
    notes = []
    if st.get("missing_frames"):
        notes.append(f"{st['missing_frames']} frames are missing on disk and were read as empty frames")
    if st.get("unrecallable_relations"):
        notes.append(
            f"{st['unrecallable_relations']} of {st['gt_relations']} GT relations cannot be recalled: one of "
            "their objects has no points in their frames (PSG4D-GTA point clouds hold no stuff points)"
        )
    return notes
