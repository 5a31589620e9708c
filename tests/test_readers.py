import json

import numpy as np
import pytest
import torch
from PIL import Image

from spade4d.data.psg import PSGDataset
from spade4d.data.psg4d import PSG4DGTA, PSG4DHOI, DatasetError, PSG4DPointCloud
from spade4d.vocab import canonical_class, canonical_predicate, normalize_name

# ---------------------------------------------------------------------------------------------------------------
# PSG
# ---------------------------------------------------------------------------------------------------------------


def write_psg(tmp_path, ids_map, segments, relations, test_ids=("1",)):
    root = tmp_path / "coco"
    (root / "pan").mkdir(parents=True, exist_ok=True)
    rgb = np.stack([ids_map % 256, (ids_map // 256) % 256, ids_map // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "pan" / "1.png")
    Image.fromarray(rgb).save(root / "pan" / "2.png")
    h, w = ids_map.shape
    entry = lambda i, rels: {  # noqa: E731
        "file_name": f"img/{i}.jpg",
        "height": h,
        "width": w,
        "image_id": i,
        "coco_image_id": i,
        "pan_seg_file_name": f"pan/{i}.png",
        "segments_info": segments,
        "annotations": [{"bbox": [0, 0, 1, 1], "bbox_mode": 0, "category_id": s["category_id"]} for s in segments],
        "relations": rels,
    }
    psg = {
        "thing_classes": ["person", "cup"],
        "stuff_classes": ["wall-other-merged"],
        "predicate_classes": ["holding", "beside"],
        "test_image_ids": list(test_ids),
        "data": [entry("1", relations), entry("2", [])],
    }
    (tmp_path / "psg.json").write_text(json.dumps(psg))
    return tmp_path / "psg.json", root


def test_psg_reader_decodes_panoptic_ids_and_split(tmp_path):
    ids = np.zeros((4, 5), np.int64)
    ids[:2, :2] = 300  # needs the G channel: 300 = 44 + 256 * 1
    ids[2:, 3:] = 7
    ids[0, 4] = 65536 + 5  # B channel
    segs = [
        {"id": 300, "category_id": 0, "iscrowd": 0, "isthing": 1, "area": 4},
        {"id": 7, "category_id": 1, "iscrowd": 0, "isthing": 1, "area": 4},
        {"id": 65541, "category_id": 2, "iscrowd": 0, "isthing": 0, "area": 1},
    ]
    pj, root = write_psg(tmp_path, ids, segs, [[0, 1, 0], [1, 2, 1]])
    ds = PSGDataset(pj, root, "test")
    assert len(ds) == 1  # image 2 has no relations and is dropped
    g = ds[0]
    assert g.labels == ["person", "cup", "wall-other-merged"]
    assert np.array_equal(g.objects[0].mask, ids == 300) and g.objects[0].mask.sum() == 4
    assert np.array_equal(g.objects[2].mask, ids == 65541) and g.objects[2].mask.sum() == 1
    assert [(r.subject, r.object, r.predicate) for r in g.relations] == [(0, 1, "holding"), (1, 2, "beside")]
    assert len(PSGDataset(pj, root, "train")) == 0
    assert len(PSGDataset(pj, root, "train", keep_without_relations=True)) == 1


def test_psg_reader_errors_name_the_file(tmp_path):
    ids = np.ones((3, 3), np.int64)
    segs = [{"id": 1, "category_id": 9, "iscrowd": 0, "isthing": 1, "area": 9}]
    pj, root = write_psg(tmp_path, ids, segs, [[0, 0, 0]])
    with pytest.raises(DatasetError, match="category_id 9 outside"):
        PSGDataset(pj, root, "test")[0]
    segs[0]["category_id"] = 0
    pj, root = write_psg(tmp_path, ids, segs, [[0, 0, 0]])
    (root / "pan" / "1.png").write_bytes((root / "pan" / "1.png").read_bytes()[:40])  # truncated
    with pytest.raises(DatasetError, match=r"1\.png: unreadable or truncated"):
        PSGDataset(pj, root, "test")[0]
    (root / "pan" / "1.png").unlink()
    with pytest.raises(DatasetError, match=r"1\.png: panoptic PNG not found"):
        PSGDataset(pj, root, "test")[0]
    with pytest.raises(DatasetError, match="nope.json: file not found"):
        PSGDataset(tmp_path / "nope.json", root)


def test_synthetic_2d_reads_through_the_psg_reader(synthetic_root):
    psg = synthetic_root / "psg"
    ds = PSGDataset(psg / "psg.json", psg, "train")
    g = ds[0]
    assert len(g.objects) > 0 and all(o.mask.any() for o in g.objects) and g.relations


# ---------------------------------------------------------------------------------------------------------------
# VG-150
# ---------------------------------------------------------------------------------------------------------------


def test_vg_reader_rescales_boxes_and_maps_names(tmp_path):
    import h5py

    from spade4d.data.vg import VG150

    with h5py.File(tmp_path / "vg.h5", "w") as f:
        f["split"] = np.array([0, 2])
        f["img_to_first_box"] = np.array([0, 2])
        f["img_to_last_box"] = np.array([1, 2])
        f["img_to_first_rel"] = np.array([0, -1])
        f["img_to_last_rel"] = np.array([0, -1])
        f["labels"] = np.array([[1], [2], [2]])
        # image 0 is 512 x 256 (longest side 512): the 1024 frame is 2x the image
        f["boxes_1024"] = np.array([[200, 100, 100, 60], [600, 300, 200, 100], [10, 10, 4, 4]])
        f["relationships"] = np.array([[1, 0]])
        f["predicates"] = np.array([[2]])
    (tmp_path / "dicts.json").write_text(
        json.dumps(
            {
                "label_to_idx": {"man": 1, "shirt": 2},
                "idx_to_label": {"1": "man", "2": "shirt"},
                "predicate_to_idx": {"on": 1, "wearing": 2},
                "idx_to_predicate": {"1": "on", "2": "wearing"},
            }
        )
    )
    (tmp_path / "image_data.json").write_text(
        json.dumps([{"image_id": 10, "width": 512, "height": 256}, {"image_id": 11, "width": 64, "height": 64}])
    )
    vg = VG150(tmp_path / "vg.h5", tmp_path / "dicts.json", tmp_path / "image_data.json", split="train", num_val=0)
    assert len(vg) == 1
    g = vg[0]
    assert (g.height, g.width) == (256, 512) and g.labels == ["man", "shirt"]
    # box 0: xc 200, yc 100, w 100, h 60 at 1024 -> xyxy (150, 70, 250, 130) / 2 = (75, 35, 125, 65)
    ys, xs = np.nonzero(g.objects[0].mask)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (75, 35, 125, 65)
    assert [(r.subject, r.object, r.predicate) for r in g.relations] == [(1, 0, "wearing")]
    assert len(VG150(tmp_path / "vg.h5", tmp_path / "dicts.json", tmp_path / "image_data.json", "test")) == 0

    from spade4d.data.vg_convert import vg_to_psg_json

    vg_to_psg_json(
        tmp_path / "vg.h5",
        tmp_path / "dicts.json",
        tmp_path / "image_data.json",
        tmp_path / "vgpsg.json",
        progress=False,
    )
    back = PSGDataset(tmp_path / "vgpsg.json", tmp_path, split="train")[0]
    assert back.labels == g.labels and np.array_equal(back.objects[0].mask, g.objects[0].mask)
    assert [(r.subject, r.object, r.predicate) for r in back.relations] == [(1, 0, "wearing")]


# ---------------------------------------------------------------------------------------------------------------
# PSG4D-GTA (the synthetic RGB-D frames) and conversion
# ---------------------------------------------------------------------------------------------------------------


def test_gta_frames_convert_to_the_generators_point_clouds(synthetic_root, tmp_path, tiny_preset):
    from spade4d.data.convert import convert_rgbd

    gta = PSG4DGTA(synthetic_root / "psg4d_gta", "test")
    ann = gta.annotation(0)
    rec = gta.frame(ann.video_id, 2)
    # stuff pixels carry id + 1000 on disk; the reader maps them back to object ids
    raw = np.load(synthetic_root / "psg4d_gta" / "masks" / ann.video_id / "000002.npy")
    assert raw.max() > 1000 and set(np.unique(rec.instance)) - {0} <= set(ann.labels)
    out = tmp_path / "pc"
    summary = convert_rgbd(gta, out, voxel_size=tiny_preset.voxel_size, split_name="test", progress=False)
    assert summary.frames_written == len(gta) * tiny_preset.frames
    mine = PSG4DPointCloud(out, "test")
    ref = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")
    for k in range(2):
        (p1, g1), (p2, g2) = mine[k], ref[ref.index_of(mine.video_ids()[k])]
        assert np.array_equal(p1.offsets, p2.offsets) and np.allclose(p1.xyz, p2.xyz, atol=1e-5)
        assert np.array_equal(p1.instance, p2.instance) and np.array_equal(p1.semantic, p2.semantic)
        assert [(r.subject, r.predicate, r.object, r.spans) for r in g1.relations] == [
            (r.subject, r.predicate, r.object, r.spans) for r in g2.relations
        ]
    # resumable: a second run writes nothing new
    again = convert_rgbd(gta, out, voxel_size=tiny_preset.voxel_size, split_name="test", progress=False)
    assert again.frames_written == 0 and again.frames_skipped_existing == summary.frames_written


def test_gta_bad_inputs(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "gta"
    shutil.copytree(synthetic_root / "psg4d_gta", root)
    gta = PSG4DGTA(root, "test")
    vid = gta.video_ids()[0]
    np.save(root / "depth" / vid / "000001.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(DatasetError, match=r"000001\.npy: depth has shape \(3, 3\)"):
        gta.frame(vid, 1)
    (root / "masks" / vid / "000002.npy").write_bytes(b"\x93NUMPY trunc")
    with pytest.raises(DatasetError, match=r"000002\.npy: unreadable or truncated"):
        gta.frame(vid, 2)
    (root / "rage_matrices" / vid / "000003.npz").unlink()  # PSG4D issue #4: frames without their matrices
    assert gta.frame(vid, 3) is None and gta.skipped == [f"{vid} frame 3 (no rage_matrices)"]
    ann = json.loads((root / "sailvos3d.json").read_text())
    e = next(d for d in ann["data"] if d["video_id"] == gta.video_ids()[1])
    e["relations"].append([e["object"][0]["object_id"], "on", 999, [0, 1]])
    (root / "sailvos3d.json").write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match="names unknown object id 999"):
        PSG4DGTA(root, "test").annotation(1)
    e["relations"][-1] = [e["object"][0]["object_id"], "on", e["object"][1]["object_id"], [3, 40]]
    (root / "sailvos3d.json").write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match=r"span \[3, 40\] lies outside frames 0..5"):
        PSG4DGTA(root, "test").annotation(1)


def test_point_cloud_reader_errors(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "pc"
    shutil.copytree(synthetic_root / "psg4d_pc", root)
    ds = PSG4DPointCloud(root, "test")
    vid = ds.video_ids()[0]
    (root / "point_clouds" / vid / "000004.pth").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"000004\.pth: not a torch.save file \(neither the zip nor the legacy"):
        ds[0]
    torch.save(
        (torch.zeros(5, 3), torch.zeros(4, 3), torch.zeros(5), torch.zeros(5)),
        root / "point_clouds" / vid / "000004.pth",
    )
    with pytest.raises(DatasetError, match=r"rgb has shape \(4, 3\), expected \(5, 3\)"):
        ds[0]
    np_tuple = (np.zeros((2, 3), np.float32), np.full((2, 3), 255.0, np.float32), np.zeros(2), np.zeros(2))
    torch.save(np_tuple, root / "point_clouds" / vid / "000004.pth")
    pts, _ = ds[0]  # numpy tuples load with the safe loader, no switch needed
    assert np.allclose(pts.frame(4)["rgb"], 1.0)  # 0-255 colours are mapped to [0, 1]
    with pytest.raises(DatasetError, match="no split 'dev'"):
        PSG4DPointCloud(root, "dev")


# ---------------------------------------------------------------------------------------------------------------
# PSG4D-HOI
# ---------------------------------------------------------------------------------------------------------------


def write_hoi(tmp_path, depth0):
    root, mroot = tmp_path / "hoi", tmp_path / "hoi_masks"
    vid = "ZY2021/H1/C1"
    (root / vid / "align_rgb").mkdir(parents=True)
    (root / vid / "align_depth").mkdir(parents=True)
    (mroot / vid / "mask").mkdir(parents=True)
    H, W = 3, 4
    for t in range(2):
        Image.fromarray(np.full((H, W, 3), 40 * (t + 1), np.uint8)).save(root / vid / "align_rgb" / f"{t:05d}.jpg")
        d = depth0 if t == 0 else np.full((H, W), 1000, np.uint16)
        Image.fromarray(d.astype(np.uint16)).save(root / vid / "align_depth" / f"{t:05d}.png")
        pix = np.zeros((H, W), np.int64)
        pix[:, :2] = 1001  # class 1 (person), object 5
        pix[2, 3] = 2002  # class 2 (bottle), object 6
        np.savez(mroot / vid / "mask" / f"{t:05d}.npz", array=pix.T)  # stored transposed
    ann = {
        "objects": ["background", "person", "bottle"],
        "split": {"test": [vid]},
        "data": [
            {
                "video_id": vid,
                "object": [{"object_id": 5, "mask_id": 1001}, {"object_id": 6, "mask_id": 2002}],
                "relations": [[5, 6, "holding", 0, 0], [5, 6, "holding", 1, 1], [5, 6, "looking at", 0, 1]],
            }
        ],
    }
    (tmp_path / "hoi.json").write_text(json.dumps(ann))
    return root, mroot, vid


def test_hoi_reader_transpose_classes_spans_and_lifting(tmp_path):
    from spade4d.data.convert import convert_rgbd

    depth0 = np.full((3, 4), 2000, np.uint16)
    depth0[0, 0] = 0  # no return
    root, mroot, vid = write_hoi(tmp_path, depth0)
    K = [[10.0, 0, 1.5], [0, 10.0, 1.0], [0, 0, 1]]
    ds = PSG4DHOI(root, mroot, tmp_path / "hoi.json", K, split="test")
    ann = ds.annotation(0)
    assert ann.num_frames == 2 and ann.labels == {5: "person", 6: "bottle"}  # mask_id % 1000
    rels = {(r.subject, r.predicate, r.object): r.spans for r in ann.relations}
    assert rels == {(5, "holding", 6): [(0, 1)], (5, "looking at", 6): [(0, 1)]}  # HOI order, spans merged
    rec = ds.frame(vid, 0, ann.mask_ids)
    assert rec.instance[2, 3] == 6 and (rec.instance[:, :2] == 5).all()  # transposed back
    summary = convert_rgbd(ds, tmp_path / "pc", split_name="test", progress=False)
    assert summary.invalid_depth_pixels == 1
    xyz, rgb, sem, inst = torch.load(tmp_path / "pc" / "point_clouds" / vid / "000000.pth")
    assert len(xyz) == 11
    # pixel (u=3, v=2) at 2 m: x = (3 - 1.5) * 2 / 10 = 0.3, y = (2 - 1) * 2 / 10 = 0.2
    k = int(torch.nonzero(inst == 6)[0, 0])
    assert xyz[k].tolist() == pytest.approx([0.3, 0.2, 2.0], abs=1e-6) and int(sem[k]) == 2


def test_hoi_nan_and_empty_frames_are_counted(tmp_path):
    from spade4d.data.convert import convert_rgbd

    root, mroot, vid = write_hoi(tmp_path, np.zeros((3, 4), np.uint16))  # frame 0: no valid depth at all
    ds = PSG4DHOI(root, mroot, tmp_path / "hoi.json", np.eye(3) * 10 + np.diag([0, 0, -9]), split="test")
    with pytest.warns(UserWarning, match=r"empty frame written: .*00000\.npz"):
        summary = convert_rgbd(ds, tmp_path / "pc", split_name="test", progress=False)
    assert len(summary.empty_frames) == 1 and summary.invalid_depth_pixels == 12
    xyz, *_ = torch.load(tmp_path / "pc" / "point_clouds" / vid / "000000.pth")
    assert xyz.shape == (0, 3)


def test_nan_depth_is_dropped_by_lifting():
    from spade4d.data.lift import lift_rgbd

    d = np.ones((2, 2), np.float32)
    d[0, 1] = np.nan
    f = lift_rgbd(np.zeros((2, 2, 3), np.uint8), d, np.eye(3))
    assert len(f) == 3 and f.dropped_invalid == 1 and np.isfinite(f.xyz).all()


# ---------------------------------------------------------------------------------------------------------------
# PVSG
# ---------------------------------------------------------------------------------------------------------------


def test_pvsg_reader_seeks_frames_with_decord(tmp_path):
    import imageio.v2 as imageio

    from spade4d.data.pvsg import PVSG

    src = tmp_path / "vidor"
    (src / "videos").mkdir(parents=True)
    (src / "masks" / "v1").mkdir(parents=True)
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250)]
    frames = [np.full((32, 64, 3), c, np.uint8) for c in colours]
    imageio.mimsave(src / "videos" / "v1.mp4", frames, fps=5, macro_block_size=16)
    for t in range(5):
        m = np.zeros((32, 64), np.uint8)
        m[:, : 10 * (t + 1)] = 3
        im = Image.fromarray(m, mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
        im.save(src / "masks" / "v1" / f"{t:04d}.png")
    ann = {
        "objects": {"thing": ["adult", "ball"], "stuff": ["floor"]},
        "relations": ["holding", "kicking"],
        "split": {"vidor": {"train": [], "val": ["v1"]}},
        "data": [
            {
                "video_id": "v1",
                "meta": {"height": 32, "width": 64, "fps": 5, "num_frames": 5},
                "objects": [
                    {"object_id": 3, "category": "adult", "is_thing": True},
                    {"object_id": 4, "category": "ball", "is_thing": True},
                ],
                "relations": [[3, 4, "kicking", [[0, 1], [3, 4]]]],
            }
        ],
    }
    (tmp_path / "pvsg.json").write_text(json.dumps(ann))
    ds = PVSG(tmp_path, "val")
    a = ds.annotation(0)
    assert a.relations[0].spans == [(0, 1), (3, 4)] and a.labels == {3: "adult", 4: "ball"}
    got = ds.read_frames("v1", [3, 1])
    assert got.shape == (2, 32, 64, 3)
    assert np.abs(got[0].reshape(-1, 3).mean(0) - colours[3]).max() < 25
    assert np.abs(got[1].reshape(-1, 3).mean(0) - colours[1]).max() < 25
    mask = ds.read_mask("v1", 2)
    assert set(np.unique(mask)) == {0, 3} and (mask == 3).sum() == 32 * 30
    with pytest.raises(DatasetError, match=r"frames \[7\] outside the video's 5 frames"):
        ds.read_frames("v1", [7])
    # PVSG with depth converts to the point-cloud layout like the RGB-D datasets
    from spade4d.data.convert import convert_rgbd
    from spade4d.data.pvsg import PVSGWithDepth

    (tmp_path / "depth" / "v1").mkdir(parents=True)
    for t in range(5):
        np.save(tmp_path / "depth" / "v1" / f"{t:04d}.npy", np.full((32, 64), 2.0, np.float32))
    K = [[50.0, 0, 31.5], [0, 50.0, 15.5], [0, 0, 1]]
    summary = convert_rgbd(
        PVSGWithDepth(tmp_path, tmp_path / "depth", K, "val"), tmp_path / "pc", split_name="val", progress=False
    )
    assert summary.frames_written == 5
    points, graph = PSG4DPointCloud(tmp_path / "pc", "val")[0]
    assert points.counts.tolist() == [32 * 64] * 5 and np.allclose(points.xyz[:, 2], 2.0)
    assert graph.object_by_id()[3].masks[2].sum() == 32 * 30 and graph.relations[0].spans == [(0, 1), (3, 4)]
    ann["data"][0]["relations"].append([3, 9, "holding", [[0, 1]]])
    (tmp_path / "pvsg.json").write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match="unknown object id 9"):
        PVSG(tmp_path, "val").annotation(0)


# ---------------------------------------------------------------------------------------------------------------
# vocabulary
# ---------------------------------------------------------------------------------------------------------------


def test_names_meet_in_one_name_space():
    assert normalize_name("Wall-Other-Merged") == "wall"
    assert normalize_name("dining_table") == "dining table"
    assert canonical_class("TV_Monitor") == canonical_class("television") == "tv"
    assert canonical_class("couch") == "sofa" and canonical_class("sports-ball") == "ball"
    assert canonical_class("adult") == "adult" and canonical_class("adult", merge_person=True) == "person"
    assert canonical_predicate("next_to") == "beside" and canonical_predicate("Sitting-On") == "sitting on"
    assert canonical_class("giraffe") == "giraffe"  # unknown names pass through normalised
    from spade4d.vocab import unify

    assert unify(["Couch", "adult"], merge_person=True) == {"Couch": "sofa", "adult": "person"}
    assert unify(["next_to"], kind="predicate") == {"next_to": "beside"}


def test_convert_with_workers_matches_one_process(synthetic_root, tmp_path, tiny_preset):
    from spade4d.data.convert import convert_rgbd

    gta = PSG4DGTA(synthetic_root / "psg4d_gta", "val")
    convert_rgbd(gta, tmp_path / "one", voxel_size=tiny_preset.voxel_size, split_name="val", progress=False)
    convert_rgbd(gta, tmp_path / "two", voxel_size=tiny_preset.voxel_size, workers=2, split_name="val", progress=False)
    assert (tmp_path / "one" / "psg4d.json").read_text() == (tmp_path / "two" / "psg4d.json").read_text()
    for f in (tmp_path / "one" / "point_clouds").rglob("*.pth"):
        a, b = torch.load(f), torch.load(tmp_path / "two" / f.relative_to(tmp_path / "one"))
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_interrupted_convert_leaves_no_annotation_and_resumes(synthetic_root, tmp_path, monkeypatch):
    from spade4d.data import convert as conv

    gta = PSG4DGTA(synthetic_root / "psg4d_gta", "test")
    real = conv.lift_points  # GTA frames are lifted from their NDC points
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(conv, "lift_points", flaky)
    with pytest.raises(KeyboardInterrupt):
        conv.convert_rgbd(gta, tmp_path / "pc", split_name="test", progress=False)
    assert not (tmp_path / "pc" / "psg4d.json").exists()  # an unfinished conversion never looks complete
    written = sorted((tmp_path / "pc" / "point_clouds").rglob("*.pth"))
    assert len(written) == 8 and not list((tmp_path / "pc").rglob("*.tmp*"))
    for f in written:
        torch.load(f)  # every file present is complete
    monkeypatch.setattr(conv, "lift_rgbd", real)
    summary = conv.convert_rgbd(gta, tmp_path / "pc", split_name="test", progress=False)
    assert summary.frames_skipped_existing == 8 and (tmp_path / "pc" / "psg4d.json").exists()


def test_data_tools_wrap_the_cli(tmp_path, capsys):
    import runpy
    import sys

    argv = sys.argv
    sys.argv = ["x", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    try:
        with pytest.raises(SystemExit) as e:
            runpy.run_module("data_tools.convert_psg4d_gta", run_name="__main__")
    finally:
        sys.argv = argv
    assert e.value.code == 2 and "missing: dataset root not found" in capsys.readouterr().err
