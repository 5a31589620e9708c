"""Write the synthetic world as datasets in the published formats.

Output layout under ``--out``::

    psg4d_pc/                      spade4d's own point-cloud layout (``spade4d-pc``, docs/formats.md)
        psg4d.json                 GTA-style annotation (objects.thing/stuff, split, data[])
        point_clouds/<vid>/%06d.pth  (xyz, rgb, semantic_label, instance_label) torch tensors
    psg4d_gta/                     the RGB-D frames the points were lifted from, as PSG4D-GTA writes them
        sailvos3d.json
        images/<vid>/%06d.bmp, depth/<vid>/%06d.npy (float32 NDC depth: z_ndc = d / 6 - 4e-5; sky 24e-5),
        rage_matrices/<vid>/%06d.npz (P, P_inv, VP, VP_inv; row vectors), camera/<vid>/%06d.yaml (K with the
        principal point relative to the image centre, Rt world -> camera in OpenGL axes),
        visible/<vid>/%06d.npy (thing ids), masks/<vid>/%06d.npy (things, and stuff ids that carry + 1000)
    psg4d_gta_pc/                  the same points in PSG4D's GTA point-cloud layout (``psg4d-gta-pc``)
        sailvos3d.json, <vid>/images_%06d.pth (numpy tuples, legacy torch serialisation, rgb in [-1, 1],
        xyz shifted by the frame's minimum, only things carry instance ids)
    psg/                           PSG 2D layout (docs/formats.md); the COCO root is this folder
        psg.json, images/%06d.jpg, panoptic/%06d.png
    pvsg/                          the RGB frames as a PVSG-layout video dataset (docs/formats.md, PVSG)
        pvsg.json, ego4d/videos/<vid>.mp4, ego4d/masks/<vid>/%04d.png (P-mode, pixel value = object id),
        ego4d/frames/<vid>/%04d.png (the frames, as OpenPVSG's loaders read them)
    stats.json                     object / relation counts per class and predicate, per split
    dataset.json                   preset, seed, vocabularies, the out-of-vocabulary lists (written last)

As in PSG4D-GTA, a stuff object's ``object_id`` is its pixel id + 1000 (in ``pvsg/`` every object keeps its pixel
id, since a P-mode PNG holds values below 256); ``instance_label`` in spade4d's layout
holds the annotation's ``object_id`` for things and stuff alike; ``rgb`` there is in [0, 1].
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spade4d.data.lift import lift_rgbd
from spade4d.data.psg4d import GTA_NO_INSTANCE
from spade4d.data.synthetic.relations import relation_tracks, relations_at
from spade4d.data.synthetic.sensor import look_at, render_rgbd
from spade4d.data.synthetic.world import BASE_SCRIPTS, TEMPLATES, unseen, vocabulary
from spade4d.data.torchfile import save_numpy_tuple_legacy
from spade4d.io import atomic_dir, write_json
from spade4d.structures import frames_to_spans

logger = logging.getLogger(__name__)

STUFF_MASK_OFFSET = 1000
LAYOUT_VERSION = 2  # 2: PSG4D-GTA conventions (K/Rt cameras, NDC depth, stuff ids + 1000, PSG4D point clouds)
GTA_FOLDERS = ("images", "depth", "camera", "rage_matrices", "visible", "masks")
# OpenPVSG's ``utils/rel_metrics.py`` finds a video's source folder from its id: ``P...`` is epic_kitchen, a
# 4-digit first part vidor, anything else ego4d; the synthetic ids (``test_0003_ride``) are ego4d's
PVSG_SOURCE = "ego4d"
PVSG_SOURCES = ("vidor", "epic_kitchen", "ego4d")  # LilyDaytoy/OpenPVSG datasets/datasets/pvsg_*.py
PVSG_FPS = 5


@dataclass(frozen=True)
class Preset:
    frames: int
    width: int
    height: int
    train: int
    val: int
    test: int
    images_2d: int
    width_2d: int
    height_2d: int
    voxel_size: float = 0.02  # points are voxel-downsampled at this size (metres) after lifting
    min_points: int = 8  # an object counts as visible on a frame with at least this many points
    min_pixels_2d: int = 20
    # the scripts played (world.TEMPLATES, in turn); those beyond world.BASE_SCRIPTS add their own names
    scripts: tuple[str, ...] = BASE_SCRIPTS

    def __post_init__(self) -> None:
        object.__setattr__(self, "scripts", tuple(self.scripts))  # a YAML list reads as a list

    def names(self) -> tuple[list[str], list[str]]:
        """(classes: things then stuff, predicates) of a dataset of this preset."""
        things, stuff, predicates = vocabulary(self.scripts)
        return things + stuff, predicates


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        frames=16, width=160, height=120, train=28, val=4, test=14, images_2d=420, width_2d=256, height_2d=192
    ),
    # scripts/bench_accuracy.py's split: the 9 scripts (the 7 base ones, luggage and horse) take turns, so 30 of the
    # 70 test scenes are out-of-vocabulary (ride, push, luggage, horse)
    "bench": Preset(
        frames=16,
        width=160,
        height=120,
        train=120,
        val=8,
        test=70,
        images_2d=1200,
        width_2d=256,
        height_2d=192,
        scripts=(*BASE_SCRIPTS, "luggage", "horse"),
    ),  # fmt: skip
    "small": Preset(
        frames=24, width=192, height=144, train=120, val=14, test=35, images_2d=3000, width_2d=256, height_2d=192
    ),
    "full": Preset(
        frames=32,
        width=320,
        height=240,
        train=400,
        val=50,
        test=120,
        images_2d=12000,
        width_2d=512,
        height_2d=384,
        voxel_size=0.01,
        min_points=30,
        min_pixels_2d=80,
    ),
}


def synthetic_preset(name: str, config=None, overrides=()) -> Preset:
    """The ``name`` preset (configs/synthetic/<name>.yaml), then the YAML ``config``, then ``key=value``
    ``overrides`` (``train=200 test=80``...)."""
    from spade4d.config import preset_config

    return preset_config(Preset, PRESETS, name, config, overrides)


class SyntheticError(ValueError):
    """Bad arguments to the generator."""


def split_plan(preset: Preset) -> list[tuple[str, int, str]]:
    """(split, index, template) of every 4D sequence: train leaves the out-of-vocabulary templates out."""
    held = unseen(preset.scripts)[0]
    in_vocab = [t for t in preset.scripts if t not in held]
    everything = list(preset.scripts)
    plan = []
    for split, n, pool in (
        ("train", preset.train, in_vocab),
        ("val", preset.val, everything),
        ("test", preset.test, everything),
    ):
        plan += [(split, i, pool[i % len(pool)]) for i in range(n)]
    return plan


def _seq_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, {"train": 0, "val": 1, "test": 2, "2d": 3}[split], index])


def _fill_gaps(on: np.ndarray, gap: int = 1) -> np.ndarray:
    """Close holes of at most ``gap`` frames in a frame indicator (flicker at the threshold of a rule)."""
    on = on.copy()
    spans = frames_to_spans(on)
    for (_, e0), (s1, _) in zip(spans, spans[1:]):
        if s1 - e0 - 1 <= gap:
            on[e0 + 1 : s1] = True
    return on


GTA_NEAR = 0.15  # near plane of the synthetic reverse-Z projection (z_ndc = near / depth)


def gta_camera(K: np.ndarray, world_from_camera: np.ndarray, w: int, h: int) -> tuple[str, dict[str, np.ndarray]]:
    """The camera ``.yaml`` text and ``rage_matrices`` of a pinhole camera, as SAIL-VOS 3D writes them.

    ``P`` maps OpenGL camera points (row vectors) to clip space so that ``x_ndc = 2u / (W - 1) - 1``,
    ``y_ndc = 1 - 2v / (H - 1)`` for the pixel (u, v) that ``K`` gives, and ``z_ndc = near / depth`` (reverse Z,
    infinite far plane); ``VP`` adds the world -> camera transform."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    P = np.zeros((4, 4))
    P[0, 0], P[2, 0] = 2 * fx / (w - 1), 1 - 2 * cx / (w - 1)
    P[1, 1], P[2, 1] = 2 * fy / (h - 1), 2 * cy / (h - 1) - 1
    P[3, 2], P[2, 3] = GTA_NEAR, -1.0
    camera_from_world = np.diag([1.0, -1.0, -1.0, 1.0]) @ np.linalg.inv(world_from_camera)  # OpenGL axes
    VP = camera_from_world.T @ P
    rage = {"P": P, "P_inv": np.linalg.inv(P), "VP": VP, "VP_inv": np.linalg.inv(VP)}
    K_rel = np.array(K, dtype=np.float64)
    K_rel[0, 2] -= w / 2.0
    K_rel[1, 2] -= h / 2.0

    def rows(m: np.ndarray) -> str:
        return "".join(f"- [{', '.join(f'{x:.17g}' for x in row)}]\n" for row in m)

    return f"K:\n{rows(K_rel)}Rt:\n{rows(camera_from_world[:3])}", rage


def gta_depth(depth: np.ndarray) -> np.ndarray:
    """Metric depth (0: no return) as a SAIL-VOS 3D depth file: ``6 * (z_ndc + 4e-5)``, sky exactly 24e-5."""
    with np.errstate(divide="ignore"):
        d = 6.0 * (GTA_NEAR / depth.astype(np.float64) + 4e-5)
    return np.where(depth > 0, d, 24e-5).astype(np.float32)


def psg4d_point_tuple(lifted, instance: np.ndarray, semantic: np.ndarray) -> tuple:
    """A frame's points as PSG4D's GTA generator saved them: float64 xyz shifted by the frame's own minimum,
    float64 rgb in [-1, 1], semantic 25 where no instance, instance -100 where none (only things)."""
    xyz = lifted.xyz.astype(np.float64)
    if len(xyz):
        xyz = xyz - xyz.min(0)
    rgb = lifted.rgb.astype(np.float64) * 2.0 - 1.0
    return xyz, rgb, semantic.astype(np.int64), instance.astype(np.int64)


def write_gta_frame(gta: Path, vid: str, name: str, fr, ids_map: np.ndarray, things: list[int]) -> None:
    """One rendered frame as PSG4D-GTA stores it: BMP image, NDC depth, visible (things only) and full masks,
    the SAIL-VOS camera yaml and the rage matrices."""
    import imageio.v2 as imageio

    imageio.imwrite(gta / "images" / vid / f"{name}.bmp", fr.rgb)
    np.save(gta / "depth" / vid / f"{name}.npy", gta_depth(fr.depth))
    thing_map = np.where(np.isin(ids_map, things), ids_map, 0).astype(np.uint16)
    np.save(gta / "visible" / vid / f"{name}.npy", thing_map)
    np.save(gta / "masks" / vid / f"{name}.npy", ids_map.astype(np.uint16))
    height, width = ids_map.shape
    cam_yaml, rage = gta_camera(fr.K, fr.world_from_camera, width, height)
    (gta / "camera" / vid / f"{name}.yaml").write_text(cam_yaml)
    np.savez(gta / "rage_matrices" / vid / f"{name}.npz", **rage)


def make_sequence(args: tuple) -> dict[str, Any]:
    """Simulate, render, lift and write one sequence; return its annotation entry and statistics."""
    import torch

    out, seed, split, index, template, preset, noise = args
    preset = Preset(**preset)
    rng = _seq_rng(seed, split, index)
    scene = TEMPLATES[template](preset.frames, rng)
    vid = f"{split}_{index:04d}_{template}"
    T = preset.frames
    pc_dir = Path(out) / "psg4d_pc" / "point_clouds" / vid
    gta_pc_dir = Path(out) / "psg4d_gta_pc" / vid
    gta = Path(out) / "psg4d_gta"
    for d in (pc_dir, gta_pc_dir, *(gta / k / vid for k in GTA_FOLDERS)):
        d.mkdir(parents=True, exist_ok=True)
    # object ids as PSG4D-GTA has them: a stuff object's id is its pixel id + 1000
    gid = {a.oid: a.oid + (0 if a.is_thing else STUFF_MASK_OFFSET) for a in scene.actors}
    id_map = np.zeros(max(gid) + 1, dtype=np.int64)
    for oid, g in gid.items():
        id_map[oid] = g
    label_of = {gid[a.oid]: a.label for a in scene.actors}
    sem_of = np.full(max(label_of) + 1, -100, dtype=np.int64)
    for g, lab in label_of.items():
        sem_of[g] = preset.names()[0].index(lab)
    stuff = {gid[a.oid] for a in scene.actors if not a.is_thing}
    things = sorted(set(label_of) - stuff)
    visible = {oid: np.zeros(T, dtype=bool) for oid in label_of}
    counts, video = [], []
    for t in range(T):
        fr = render_rgbd(scene, t, preset.width, preset.height, noise=noise, rng=rng)
        ids_map = id_map[fr.instance]  # (H, W) object ids, 0 = none
        lifted = lift_rgbd(
            fr.rgb, fr.depth, fr.K, fr.world_from_camera, instance=ids_map, voxel_size=preset.voxel_size or None
        )
        inst = lifted.instance
        labelled = inst > 0
        instance = np.where(labelled, inst, -100)
        semantic = np.where(labelled, sem_of[np.clip(inst, 0, None)], -100)
        ids, n = np.unique(inst[labelled], return_counts=True)
        for oid, c in zip(ids, n):
            visible[int(oid)][t] = c >= preset.min_points
        counts.append(len(lifted))
        torch.save(
            (
                torch.from_numpy(lifted.xyz),
                torch.from_numpy(lifted.rgb),
                torch.from_numpy(semantic),
                torch.from_numpy(instance),
            ),
            pc_dir / f"{t:06d}.pth",
        )
        is_thing = np.isin(instance, things)
        save_numpy_tuple_legacy(
            gta_pc_dir / f"images_{t:06d}.pth",
            psg4d_point_tuple(
                lifted,
                np.where(is_thing, instance, -100),
                np.where(is_thing, semantic, GTA_NO_INSTANCE),
            ),
        )
        write_gta_frame(gta, vid, f"{t:06d}", fr, ids_map, things)
        video.append((fr.rgb, fr.instance))

    objects = [oid for oid in label_of if visible[oid].any()]
    relations = []
    min_len = 2 if T >= 8 else 1
    for (s, p, o), on in sorted(((gid[s], p, gid[o]), on) for (s, p, o), on in relation_tracks(scene).items()):
        if s not in objects or o not in objects:
            continue
        on = _fill_gaps(on & visible[s] & visible[o])
        for start, end in frames_to_spans(on, min_length=min_len):
            relations.append([s, p, o, [start, end]])
    entry = {
        "video_id": vid,
        "template": template,
        "meta": {"num_frames": T, "width": preset.width, "height": preset.height, "points_per_frame": counts},
        "object": [{"object_id": oid, "category": label_of[oid], "is_thing": oid not in stuff} for oid in objects],
        "relations": relations,
    }
    return {"split": split, "entry": entry, "pvsg": write_pvsg_video(Path(out) / "pvsg", entry, video, gid)}


def write_pvsg_video(root: Path, entry: dict, video: list, gid: dict[int, int]) -> dict[str, Any]:
    """One sequence's RGB frames and pixel ids as PVSG stores a video (an mp4 and one P-mode PNG per frame whose
    value is the object id); returns its ``pvsg.json`` entry (relations grouped per triplet with their spans).
    ``gid``: pixel id -> the object id of the GTA-style annotation (``entry``)."""
    import imageio.v2 as imageio
    from PIL import Image

    pixel_id = {g: oid for oid, g in gid.items()}

    vid = entry["video_id"]
    src = root / PVSG_SOURCE
    for folder in ("masks", "frames"):
        (src / folder / vid).mkdir(parents=True, exist_ok=True)
    (src / "videos").mkdir(parents=True, exist_ok=True)
    palette = np.random.default_rng(0).integers(40, 256, (256, 3), dtype=np.uint8)
    palette[0] = 0
    for t, (rgb, ids) in enumerate(video):
        im = Image.fromarray(ids.astype(np.uint8), mode="P")
        im.putpalette(palette.reshape(-1).tolist())
        im.save(src / "masks" / vid / f"{t:04d}.png")
        # the extracted frames OpenPVSG's image and video datasets read (<source>/frames/<vid>/%04d.png)
        Image.fromarray(rgb).save(src / "frames" / vid / f"{t:04d}.png")
    frames = [rgb for rgb, _ in video]
    imageio.mimsave(src / "videos" / f"{vid}.mp4", frames, fps=PVSG_FPS, quality=9, macro_block_size=2)
    spans: dict[tuple[int, int, str], list[list[int]]] = {}
    for s, p, o, span in entry["relations"]:
        spans.setdefault((pixel_id[s], pixel_id[o], p), []).append(list(span))
    meta = entry["meta"]
    return {
        "video_id": vid,
        "meta": {"height": meta["height"], "width": meta["width"], "fps": PVSG_FPS, "num_frames": meta["num_frames"]},
        "objects": [
            {"object_id": pixel_id[o["object_id"]], "category": o["category"], "is_thing": o["is_thing"]}
            for o in entry["object"]
        ],
        "relations": [[s, o, p, sp] for (s, o, p), sp in spans.items()],
    }


def make_image(args: tuple) -> dict[str, Any]:
    """One 2D sample: a random frame of a fresh scene from a random viewpoint, with its panoptic map."""
    import imageio.v2 as imageio

    out, seed, index, template, preset = args
    preset = Preset(**preset)
    classes, predicates = preset.names()
    rng = _seq_rng(seed, "2d", index)
    scene = TEMPLATES[template](12, rng)
    t = int(rng.integers(scene.num_frames))
    jitter = np.array([rng.normal(0, 0.4), rng.normal(0, 0.4), rng.normal(0, 0.2)])
    pose = look_at(scene.eye[t] + jitter, scene.target[t] + np.array([*rng.normal(0, 0.3, 2), 0.0]))
    fr = render_rgbd(scene, t, preset.width_2d, preset.height_2d, rng=rng, pose=pose)
    ids, area = np.unique(fr.instance[fr.instance > 0], return_counts=True)
    visible = {int(i): int(a) for i, a in zip(ids, area) if a >= preset.min_pixels_2d}
    actors = [a for a in scene.actors if a.oid in visible]
    order = {a.oid: k for k, a in enumerate(actors)}
    pan = np.zeros((*fr.instance.shape, 3), dtype=np.uint8)
    segments, annotations = [], []
    for a in actors:
        m = fr.instance == a.oid
        seg_id = a.oid  # id = R + 256 G + 256^2 B; ids here are small, so R alone holds them
        pan[m] = (seg_id % 256, (seg_id // 256) % 256, seg_id // 65536)
        ys, xs = np.nonzero(m)
        cat = classes.index(a.label)
        segments.append(
            {"id": seg_id, "category_id": cat, "iscrowd": 0, "isthing": int(a.is_thing), "area": int(m.sum())}
        )
        annotations.append(
            {
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                "bbox_mode": 0,
                "category_id": cat,
            }
        )
    rels = sorted(
        (order[s], order[o], predicates.index(p)) for s, p, o in relations_at(scene, t) if s in order and o in order
    )
    name = f"{index:06d}"
    imageio.imwrite(Path(out) / "psg" / "images" / f"{name}.jpg", fr.rgb, quality=92)
    imageio.imwrite(Path(out) / "psg" / "panoptic" / f"{name}.png", pan)
    return {
        "file_name": f"images/{name}.jpg",
        "height": preset.height_2d,
        "width": preset.width_2d,
        "image_id": name,
        "coco_image_id": name,
        "pan_seg_file_name": f"panoptic/{name}.png",
        "segments_info": segments,
        "annotations": annotations,
        "relations": [list(r) for r in rels],
        "template": template,
    }


def _stats(split_entries: dict[str, list[dict]], images: list[dict], p: Preset) -> dict[str, Any]:
    classes, predicates = p.names()
    stats: dict[str, Any] = {}
    for split, entries in split_entries.items():
        cls = Counter(o["category"] for e in entries for o in e["object"])
        pred = Counter(r[1] for e in entries for r in e["relations"])
        stats[split] = {
            "sequences": len(entries),
            "objects": sum(cls.values()),
            "relations": sum(pred.values()),
            "classes": dict(sorted(cls.items())),
            "predicates": dict(sorted(pred.items())),
        }
    cls2 = Counter(classes[s["category_id"]] for im in images for s in im["segments_info"])
    pred2 = Counter(predicates[r[2]] for im in images for r in im["relations"])
    stats["2d"] = {
        "images": len(images),
        "images_with_relations": sum(1 for im in images if im["relations"]),
        "objects": sum(cls2.values()),
        "relations": sum(pred2.values()),
        "classes": dict(sorted(cls2.items())),
        "predicates": dict(sorted(pred2.items())),
    }
    return stats


def format_stats(stats: dict[str, Any], p: Preset) -> str:
    classes, predicates = p.names()
    cols = ["train", "val", "test", "2d"]
    names = classes + predicates
    lines = [f"{'':>14} " + " ".join(f"{c:>7}" for c in cols)]
    for key in ("sequences", "images", "objects", "relations"):
        lines.append(f"{key:>14} " + " ".join(f"{stats[c].get(key, '-'):>7}" for c in cols))
    lines.append("-" * (15 + 8 * len(cols)))
    for n in names:
        kind = "classes" if n in classes and n not in predicates else "predicates"
        lines.append(f"{n:>14} " + " ".join(f"{stats[c][kind].get(n, 0):>7}" for c in cols))
    return "\n".join(lines)


def generate(
    out: str | os.PathLike,
    preset: str | Preset = "quick",
    seed: int = 0,
    workers: int | None = None,
    noise: float = 0.0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the synthetic datasets into ``out`` (built in a temporary sibling, renamed when complete)."""
    from tqdm import tqdm

    if isinstance(preset, Preset):
        p = preset  # named after the preset it equals (make-synthetic --config configs/synthetic/bench.yaml)
        preset = next((name for name, value in PRESETS.items() if value == p), "custom")
    elif preset in PRESETS:
        p = PRESETS[preset]
    else:
        raise SyntheticError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    _check_settings(p, seed, noise, workers)
    workers = workers or min(os.cpu_count() or 1, 4)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "psg" / "images").mkdir(parents=True)
        (tmp / "psg" / "panoptic").mkdir(parents=True)
        plan = split_plan(p)
        jobs4d = [(str(tmp), seed, s, i, tpl, asdict(p), noise) for s, i, tpl in plan]
        jobs2d = [(str(tmp), seed, i, p.scripts[i % len(p.scripts)], asdict(p)) for i in range(p.images_2d)]
        with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Serial() as pool:
            seqs = list(
                tqdm(pool.map(make_sequence, jobs4d), total=len(jobs4d), desc="4D sequences", disable=not progress)
            )
            images = list(
                tqdm(
                    pool.map(make_image, jobs2d, chunksize=8), total=len(jobs2d), desc="2D images", disable=not progress
                )
            )
        splits = _write_annotations(tmp, seqs, images, p)
        stats = _stats(splits, images, p)
        write_json(tmp / "stats.json", stats, indent=1)
        things, stuff, predicates = vocabulary(p.scripts)
        held = unseen(p.scripts)
        manifest = {
            "generator": "spade4d.data.synthetic",
            "layout_version": LAYOUT_VERSION,
            "preset": preset,
            "preset_values": asdict(p),
            "seed": seed,
            "noise": noise,
            "thing_classes": things,
            "stuff_classes": stuff,
            "predicates": predicates,
            "oov_templates": held[0],
            "oov_classes": held[1],
            "oov_predicates": held[2],
        }
        write_json(tmp / "dataset.json", manifest, indent=1)
    if progress:
        logger.info(format_stats(stats, p))
    return stats


def _check_settings(p: Preset, seed: int, noise: float, workers: int | None) -> None:
    for name in ("frames", "width", "height", "width_2d", "height_2d"):
        if getattr(p, name) <= 0:
            raise SyntheticError(f"preset {name} must be positive, got {getattr(p, name)}")
    for name in ("train", "val", "test", "images_2d"):
        if getattr(p, name) < 0:
            raise SyntheticError(f"preset {name} must be >= 0, got {getattr(p, name)}")
    if p.width % 2 or p.height % 2:
        raise SyntheticError(f"preset width and height must be even (the mp4 videos), got {p.width}x{p.height}")
    if seed < 0:
        raise SyntheticError(f"seed must be >= 0, got {seed}")
    if noise < 0:
        raise SyntheticError(f"noise must be >= 0, got {noise}")
    if workers is not None and workers < 1:
        raise SyntheticError(f"workers must be >= 1, got {workers}")
    unknown = [s for s in p.scripts if s not in TEMPLATES]
    if unknown or not p.scripts:
        raise SyntheticError(f"preset scripts must be some of {', '.join(TEMPLATES)}; got {list(p.scripts)}")


def _write_annotations(tmp: Path, seqs: list[dict], images: list[dict], p: Preset) -> dict[str, list[dict]]:
    """The 4D annotation (the same file in the three 4D layouts) and the PSG json; returns the 4D entries by split."""
    things, stuff, predicates = vocabulary(p.scripts)
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for s in seqs:
        splits[s["split"]].append(s["entry"])
    ann = {
        "objects": {"thing": things, "stuff": stuff},
        "predicates": predicates,
        "split": {k: [e["video_id"] for e in v] for k, v in splits.items()},
        "data": [e for v in splits.values() for e in v],
    }
    write_json(tmp / "psg4d_pc" / "psg4d.json", ann)
    write_json(tmp / "psg4d_gta" / "sailvos3d.json", ann)
    write_json(tmp / "psg4d_gta_pc" / "sailvos3d.json", ann)
    pvsg_parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}  # PVSG has train / val; test is ours
    for s in seqs:
        pvsg_parts[s["split"]].append(s["pvsg"]["video_id"])
    pvsg = {
        "objects": {"thing": things, "stuff": stuff},
        "relations": predicates,
        # OpenPVSG's datasets read split[source][split] for each of the three sources, so all three are listed
        "split": {src: pvsg_parts if src == PVSG_SOURCE else {k: [] for k in pvsg_parts} for src in PVSG_SOURCES},
        "data": [s["pvsg"] for s in seqs],
    }
    write_json(tmp / "pvsg" / "pvsg.json", pvsg)
    n_test = max(1, len(images) // 5)
    psg = {
        "thing_classes": things,
        "stuff_classes": stuff,
        "predicate_classes": predicates,
        "test_image_ids": [im["image_id"] for im in images[-n_test:]],
        "data": images,
    }
    write_json(tmp / "psg" / "psg.json", psg)
    return splits


class _Serial:
    """Stand-in for a process pool with one worker (no pickling, easier to debug)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def map(self, fn, items, chunksize: int = 1):  # noqa: ARG002 - same signature as Executor.map
        return map(fn, items)


def unseen_names(root) -> tuple[list[str], list[str]] | None:
    """(classes, predicates) of a generated dataset's out-of-vocabulary scripts, from its ``dataset.json`` (None
    for a folder without one)."""
    from spade4d.io import read_json

    path = Path(root) / "dataset.json"
    if not path.is_file():
        return None
    d = read_json(path)
    return list(d.get("oov_classes", [])), list(d.get("oov_predicates", []))
