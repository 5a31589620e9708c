"""The published datasets as their public code writes them (docs/formats.md).

Every fixture here is written the way the code that produced the real files writes it: PSG4D's GTA point-cloud
generator (``3d_seg/dataset/sailvos3d/generate_3d_data.py``: ``torch.save`` of a tuple of numpy arrays under
torch 1.5, numpy 1.x), its ``merge_masks.py`` (stuff pixels + 1000), SAIL-VOS 3D's camera files (``K`` / ``Rt``)
and NDC depth with ``rage_matrices``, HOI4D's ``categories.json`` and ``camera_params/<camera>/intrin.npy``, and
VG-150's ``image_data.json`` that still lists the four corrupted images.
"""

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from spade4d.cli import main
from spade4d.data.psg4d import (
    PSG4DGTA,
    PSG4DHOI,
    DatasetError,
    PSG4DGTAPointCloud,
    PSG4DHOIPointCloud,
    Spade4DPointCloud,
    load_point_frame,
)
from spade4d.data.torchfile import TorchFileError, load_tuple
from spade4d.evaluation.predictions import write_predictions_4d

ANSI = "\x1b["


def torch15_numpy1_save(arrays, path):
    """``torch.save(tuple_of_numpy_arrays, path)`` as torch 1.5 with numpy 1.x wrote it: the legacy (non-zip)
    serialisation, and numpy's array reconstruction named ``numpy.core.multiarray._reconstruct`` (numpy 2
    renamed the module ``numpy._core``; the legacy pickle names globals as newline-terminated text)."""
    buf = io.BytesIO()
    torch.save(tuple(arrays), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
    path.write_bytes(data)


# ---------------------------------------------------------------------------------------------------------------
# safe loading
# ---------------------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``os.system``: what a crafted frame file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_numpy_tuples_load_in_both_serialisations_without_a_trust_switch(tmp_path):
    xyz = np.random.default_rng(0).normal(size=(5, 3))
    arrays = (xyz, np.zeros((5, 3)), np.full(5, 25, np.int64), np.array([-100, 7, 7, -100, 9]))
    torch15_numpy1_save(arrays, tmp_path / "legacy.pth")
    torch.save(arrays, tmp_path / "zip.pth")  # numpy-2 names, zip serialisation
    torch.save(tuple(torch.from_numpy(a) for a in arrays), tmp_path / "tensors.pth")
    for name in ("legacy.pth", "zip.pth", "tensors.pth"):
        out = load_tuple(tmp_path / name)
        assert len(out) == 4 and np.allclose(np.asarray(out[0]), xyz)
    f = load_point_frame(tmp_path / "legacy.pth", rgb_range="signed")
    assert f["xyz"].dtype == np.float32 and f["instance"].tolist() == [-100, 7, 7, -100, 9]
    assert np.allclose(f["rgb"], 0.5)  # [-1, 1] colours


@pytest.mark.parametrize("legacy", [True, False])
def test_a_crafted_frame_is_refused_and_runs_nothing(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save((np.zeros((2, 3)), _Payload(marker)), path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(TorchFileError) as e:
        load_tuple(path)
    msg = str(e.value)
    assert not marker.exists()
    assert msg.startswith(f"{path}: refused by the safe loader") and "\n" not in msg and ANSI not in msg
    # object arrays would unpickle arbitrary objects: their dtype is not on the allow-list
    torch.save((np.array([1, "a"], dtype=object),), path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(TorchFileError, match="refused by the safe loader"):
        load_tuple(path)


def test_bad_frame_files_are_one_line_errors(tmp_path):
    p = tmp_path / "f.pth"
    p.write_bytes(b"")
    with pytest.raises(TorchFileError, match="f.pth: empty file"):
        load_tuple(p)
    p.write_bytes(b"GIF89a....")
    with pytest.raises(TorchFileError, match="not a torch.save file"):
        load_tuple(p)
    torch15_numpy1_save((np.zeros((4, 3)),), p)
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(TorchFileError, match="unreadable legacy torch file, truncated or corrupt") as e:
        load_tuple(p)
    assert "\n" not in str(e.value)
    torch.save({"xyz": torch.zeros(2, 3)}, p)
    with pytest.raises(TorchFileError, match="holds a dict, expected a tuple of arrays"):
        load_tuple(p)
    for bad, what in (
        (np.array([0.5, 1.0]), "fractional"),
        (np.array([True, False]), "booleans"),
        (np.array([np.nan, 1.0]), "NaN"),
    ):
        torch.save((np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2), bad), p)
        with pytest.raises(DatasetError, match=f"instance_label holds {what}"):
            load_point_frame(p)
    torch.save((np.full((2, 3), np.inf), np.zeros((2, 3)), np.zeros(2), np.zeros(2)), p)
    with pytest.raises(DatasetError, match="xyz holds NaN or infinite"):
        load_point_frame(p)


# ---------------------------------------------------------------------------------------------------------------
# PSG4D-GTA: point clouds as PSG4D's generator wrote them
# ---------------------------------------------------------------------------------------------------------------

GTA36 = (
    "sky floor ceiling ground wall grass fence stair window".split()
    + ["other object", "chair", "sofa", "table", "bed", "person", "car", "motorcycle", "truck", "bird", "dog"]
    + ["handbag", "suitcase", "bottle", "cup", "bowl", "potted plant", "dining table", "tv", "laptop"]
    + ["cell phone", "bag", "bin", "box", "door", "road barrier", "stick"]
)
VID = "ah_3b_mcs_5"


def sailvos3d_json(path, video=VID, num_frames=3):
    ann = {
        "objects": {"thing": ["person", "car"], "stuff": ["wall"]},
        "split": {"train": [], "val": [video]},
        "data": [
            {
                "video_id": video,
                "meta": {"num_frames": num_frames},
                "object": [
                    {"object_id": 5, "category": "person"},
                    {"object_id": 6, "category": "car"},
                    {"object_id": 1003, "category": "wall"},  # stuff: pixel id 3 + 1000
                ],
                "relations": [[5, "next to", 6, [0, 2]], [5, "in front of", 1003, [0, 2]]],
            }
        ],
    }
    path.write_text(json.dumps(ann))
    return ann


def write_gta_point_clouds(root, skip=(1,)):
    """``data_3d/<video>/images_%06d.pth`` as generate_3d_data.py saves them (frame 1 skipped by its filter)."""
    rng = np.random.default_rng(1)
    (root / VID).mkdir(parents=True)
    labels_dict = {5: GTA36.index("person"), 6: GTA36.index("car")}
    for t in range(3):
        if t in skip:
            continue
        n = 40
        world = rng.uniform(0, 5, size=(n, 3))  # float64, shifted by the frame's minimum
        world -= world.min(0)
        rgb = rng.integers(0, 256, size=(n, 3)) / 127.5 - 1
        labels_instance = np.zeros(n, np.int32)  # the visible/ ids
        labels_instance[:10], labels_instance[10:15], labels_instance[15:18] = 5, 6, 77  # 77: not annotated
        labels_instance[labels_instance == 0] = -100
        labels_semantic = 25 * np.ones_like(labels_instance)
        for iid in np.unique(labels_instance):
            if iid != -100:
                labels_semantic[labels_instance == iid] = labels_dict.get(int(iid), 9)
        torch15_numpy1_save((world, rgb, labels_semantic, labels_instance), root / VID / f"images_{t:06d}.pth")


def test_gta_point_clouds_read_with_missing_frames_and_no_stuff(tmp_path, capsys):
    root = tmp_path / "data_3d"
    write_gta_point_clouds(root)
    sailvos3d_json(root / "sailvos3d.json")
    ds = PSG4DGTAPointCloud(root, "val")
    points, graph = ds[0]
    assert points.counts.tolist() == [40, 0, 40]  # the skipped frame is an empty frame
    f0 = points.instance[points.frame_slice(0)]
    assert (f0[:10] == 5).all() and (f0[10:15] == 6).all() and (f0[15:] == -100).all()  # 77 is no object
    assert np.allclose(points.rgb.min(), 0, atol=0.01) and points.rgb.max() <= 1  # [-1, 1] -> [0, 1]
    assert ds.stats == {"missing_frames": 1, "unrecallable_relations": 1, "gt_relations": 2}  # the wall has no points
    with pytest.raises(DatasetError, match=r"no split 'test' \(has train, val\)"):
        PSG4DGTAPointCloud(root, "test")

    # round trip: the ground truth as a prediction file recalls every recallable relation
    write_predictions_4d(tmp_path / "gt.json", [graph])
    argv = ["evaluate-4d", "--format", "psg4d-gta-pc", "--root", str(root), "--split", "val"]
    assert main([*argv, "--pred", str(tmp_path / "gt.json"), "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["R@20"] == 50.0 and m["unrecallable_gt_relations"] == 1 and m["missing_frames"] == 1
    out = capsys.readouterr().out
    assert "1 of 2 GT relations cannot be recalled" in out and "1 frames are missing" in out


# ---------------------------------------------------------------------------------------------------------------
# PSG4D-GTA: RGB-D as SAIL-VOS 3D / PSG4D write it
# ---------------------------------------------------------------------------------------------------------------

W, H = 8, 6
CAM_POS = np.array([1.0, 2.0, 3.0])


def gl_projection(fovy=1.0, near=0.1, far=100.0):
    """A standard OpenGL projection as the row-vector matrix SAIL-VOS stores (``cam_row @ P = clip``)."""
    f = 1 / np.tan(fovy / 2)
    M = np.array(
        [
            [f * H / W, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
            [0, 0, -1, 0],
        ]
    )
    return M.T, f


def write_gta_rgbd(root, distance=2.5):
    """One video of 3 frames: a wall plane ``distance`` metres in front of a camera at CAM_POS looking down -z
    (world axes = OpenGL camera axes), a person in the top-left pixels, a sky pixel; frame 1 has no depth file."""
    P, f = gl_projection()
    V = np.eye(4)
    V[3, :3] = -CAM_POS  # row vectors: world_row @ V = camera_row
    VP = V @ P
    z_cam = -distance
    clip = np.array([0, 0, z_cam, 1.0]) @ P
    z_ndc = clip[2] / clip[3]
    depth = np.full((H, W), 6 * (z_ndc + 4e-5), np.float32)  # NDC depth as the game wrote it
    depth[H - 1, W - 1] = np.float32(24e-5)  # sky
    visible = np.zeros((H, W), np.int32)
    visible[:2, :2] = 5
    background = np.full((H, W), 3, np.uint8)  # the wall segment, as background_masks/*.bmp
    fx = (W - 1) / 2 * f * H / W
    fy = (H - 1) / 2 * f
    K_rel = [[fx, 0, (W - 1) / 2 - W / 2], [0, fy, (H - 1) / 2 - H / 2], [0, 0, 1]]
    Rt = np.hstack([np.eye(3), -CAM_POS[:, None]])
    for k in ("images", "depth", "camera", "rage_matrices", "visible", "masks"):
        (root / k / VID).mkdir(parents=True)
    for t in range(3):
        name = f"{t:06d}"
        Image.fromarray(np.full((H, W, 3), 30 * t, np.uint8)).save(root / "images" / VID / f"{name}.bmp")
        if t != 1:
            np.save(root / "depth" / VID / f"{name}.npy", depth)
        np.savez(
            root / "rage_matrices" / VID / f"{name}.npz", P=P, P_inv=np.linalg.inv(P), VP=VP, VP_inv=np.linalg.inv(VP)
        )
        rows = lambda m: "".join(f"- [{', '.join(repr(float(x)) for x in r)}]\n" for r in m)  # noqa: E731
        (root / "camera" / VID / f"{name}.yaml").write_text(f"K:\n{rows(K_rel)}Rt:\n{rows(Rt)}")
        np.save(root / "visible" / VID / f"{name}.npy", visible)
        final = np.array(background, np.uint16)  # merge_masks.py
        final[final != 0] += 1000
        final[visible != 0] = visible[visible != 0]
        np.save(root / "masks" / VID / f"{name}.npy", final)
    sailvos3d_json(root / "sailvos3d.json")
    return fx, fy


def test_gta_rgbd_ndc_depth_cameras_stuff_and_missing_depth(tmp_path):
    from spade4d.data.cameras import CameraFrames, point_uv
    from spade4d.data.convert import convert_rgbd

    root = tmp_path / "psg4d_gta"
    write_gta_rgbd(root)
    gta = PSG4DGTA(root)  # sailvos3d.json by default, every video
    rec = gta.frame(VID, 0)
    pts = rec.points[rec.valid]
    # metric: the plane is 2.5 m in front of the camera (z = 3 - 2.5 in the world), not 0.36 m
    assert np.allclose(pts[:, 2], 0.5, atol=1e-6)
    assert not rec.valid[H - 1, W - 1] and rec.valid.sum() == H * W - 1  # sky dropped
    assert rec.instance[0, 0] == 5 and rec.instance[3, 3] == 1003  # stuff keeps its +1000 id: the wall, not object 3
    assert gta.frame(VID, 1) is None and "no depth" in gta.skipped[0]
    # the K / Rt camera projects the world points back to their pixels
    rgb, K, pose = CameraFrames(root).get(VID, 0)
    uv = point_uv(rec.points.reshape(-1, 3), K, pose, H, W).reshape(H, W, 2)
    u_grid = (2 * np.arange(W) + 1) / W - 1
    assert np.allclose(uv[rec.valid][:, 0], np.broadcast_to(u_grid, (H, W))[rec.valid], atol=1e-5)
    with pytest.warns(UserWarning, match="1 frames lack a depth"):
        summary = convert_rgbd(gta, tmp_path / "pc", split_name="val", progress=False)
    assert summary.frames_written == 3 and len(summary.frames_without_files) == 1
    points, graph = Spade4DPointCloud(tmp_path / "pc", "val")[0]
    assert points.counts.tolist() == [H * W - 1, 0, H * W - 1]
    assert {o.label: len(o.masks) for o in graph.objects} == {"person": 2, "car": 0, "wall": 2}
    stale = tmp_path / "pc" / "point_clouds" / VID / ".000001.pth.abc.tmp.pth"  # left by a SIGKILLed write
    stale.write_bytes(b"partial")
    convert_rgbd(gta, tmp_path / "pc", split_name="val", progress=False)  # resumes, writes nothing new
    assert not stale.exists()
    with pytest.raises(DatasetError, match="this folder holds a conversion made with"):
        convert_rgbd(gta, tmp_path / "pc", voxel_size=0.05, split_name="val", progress=False)
    with pytest.raises(DatasetError, match=r"no split 'test' \(has train, val\)"):
        PSG4DGTA(root, "test")
    (root / "camera" / VID / "000000.yaml").write_text("fx: 1\n")
    with pytest.raises(DatasetError, match="000000.yaml: camera file lacks K and Rt"):
        CameraFrames(root).get(VID, 0)


def test_convert_psg4d_gta_cli_on_the_published_layout(tmp_path, capsys):
    root = tmp_path / "gta"
    write_gta_rgbd(root)
    assert main(["convert", "psg4d-gta", "--root", str(root), "--out", str(tmp_path / "pc")]) == 0
    assert "1 without their depth/rage-matrix/image/mask files" in capsys.readouterr().out
    assert main(["convert", "psg4d-gta", "--root", str(root), "--split", "test", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sailvos3d.json: no split 'test'" in err and ANSI not in err


# ---------------------------------------------------------------------------------------------------------------
# PSG4D-HOI
# ---------------------------------------------------------------------------------------------------------------

HOI_VIDS = ("ZY20210800001/H1/C2/N31/S92/s05/T2", "ZY20210800004/H4/C8/N03/S71/s01/T2")


def write_hoi4d(tmp_path):
    root, mroot = tmp_path / "HOI4D_release", tmp_path / "HOI4D_mask"
    h, w = 4, 6
    for k, vid in enumerate(HOI_VIDS):
        (root / vid / "align_rgb").mkdir(parents=True)
        (root / vid / "align_depth").mkdir(parents=True)
        (mroot / vid / "mask").mkdir(parents=True)
        for t in range(2):
            Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(root / vid / "align_rgb" / f"{t:05d}.jpg")
            Image.fromarray(np.full((h, w), 500, np.uint16)).save(root / vid / "align_depth" / f"{t:05d}.png")
            pix = np.zeros((h, w), np.int64)
            pix[:, :3] = 1047  # hands (class 47)
            pix[:, 3:] = 2012  # class 12
            np.savez(mroot / vid / "mask" / f"{t:05d}.npz", array=pix.T)
        cam = root / "camera_params" / vid.split("/")[0]
        cam.mkdir(parents=True, exist_ok=True)
        fx = (1060.0, 1081.0)[k]
        np.save(cam / "intrin.npy", np.array([[fx, 0, 2.5], [0, fx, 1.5], [0, 0, 1]]))
    (tmp_path / "categories.json").write_text(json.dumps({"1": "toy car", "12": "bottle", "47": "hands"}))
    ann = {
        "data": [
            {
                "video_id": vid,
                "object": [{"object_id": 1, "mask_id": 1047}, {"object_id": 2, "mask_id": 2012}],
                "relations": [[1, 2, "grasping", 0, 1]],
            }
            for vid in HOI_VIDS
        ]
    }
    (tmp_path / "psg4d_hoi.json").write_text(json.dumps(ann))
    return root, mroot


def test_hoi_class_names_from_categories_and_per_camera_intrinsics(tmp_path):
    from spade4d.data.convert import convert_rgbd

    root, mroot = write_hoi4d(tmp_path)
    ds = PSG4DHOI(root, mroot, tmp_path / "psg4d_hoi.json")
    assert ds.annotation(0).labels == {1: "hands", 2: "bottle"}  # categories[str(mask_id % 1000)]
    assert [ds.intrinsics(v)[0, 0] for v in HOI_VIDS] == [1060.0, 1081.0]
    convert_rgbd(ds, tmp_path / "pc", progress=False)
    for vid, fx in zip(HOI_VIDS, (1060.0, 1081.0)):
        xyz, *_ = torch.load(tmp_path / "pc" / "point_clouds" / vid / "000000.pth")
        # pixel u = 0 at 0.5 m: x = (0 - 2.5) * 0.5 / fx, with this video's camera
        assert float(xyz[:, 0].min()) == pytest.approx(-2.5 * 0.5 / fx, rel=1e-5)
    argv = ["convert", "psg4d-hoi", "--root", str(root), "--mask-root", str(mroot), "--ann"]
    assert main([*argv, str(tmp_path / "psg4d_hoi.json"), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert (tmp_path / "cli" / "point_clouds" / HOI_VIDS[1] / "000001.pth").is_file()
    override = PSG4DHOI(root, mroot, tmp_path / "psg4d_hoi.json", K=np.diag([10.0, 10.0, 1.0]))
    assert override.intrinsics(HOI_VIDS[1])[0, 0] == 10.0
    (tmp_path / "categories.json").write_text(json.dumps({"1": "toy car"}))
    with pytest.raises(DatasetError, match="mask_id 1047 gives class 47, not in categories.json"):
        PSG4DHOI(root, mroot, tmp_path / "psg4d_hoi.json").annotation(0)


def test_hoi_point_clouds(tmp_path):
    root = tmp_path / "hoi4d_3d"
    write_hoi4d(tmp_path)
    vid = HOI_VIDS[0]
    folder = root / vid / "semantic_segmentation_label"
    folder.mkdir(parents=True)
    inst = np.array([0, 1, 1047, 1047, 2012, 5])
    for t in (0, 2):  # frame 1 absent
        torch15_numpy1_save((np.zeros((6, 3)), np.zeros((6, 3)), inst % 1000, inst), folder / f"{t:05d}.pth")
    ann = json.loads((tmp_path / "psg4d_hoi.json").read_text())
    ann["data"] = ann["data"][:1]
    ann["data"][0]["meta"] = {"num_frames": 3}
    (root / "psg4d_hoi.json").write_text(json.dumps(ann))
    (root / "categories.json").write_text((tmp_path / "categories.json").read_text())
    ds = PSG4DHOIPointCloud(root)
    points, graph = ds[0]
    assert points.counts.tolist() == [6, 0, 6] and ds.stats["missing_frames"] == 1
    assert points.instance[:6].tolist() == [-100, -100, 1, 1, 2, -100]  # 0 and 1 are none; mask_id -> object id
    assert {o.id: o.label for o in graph.objects} == {1: "hands", 2: "bottle"}
    assert [(r.subject, r.predicate, r.object, r.spans) for r in graph.relations] == [(1, "grasping", 2, [(0, 1)])]


# ---------------------------------------------------------------------------------------------------------------
# VG-150
# ---------------------------------------------------------------------------------------------------------------


def test_vg_drops_the_corrupted_images_before_alignment_and_has_a_val_split(tmp_path):
    import h5py

    from spade4d.data.vg import VG150

    with h5py.File(tmp_path / "VG-SGG-with-attri.h5", "w") as f:
        f["split"] = np.array([0, 0, 0, 2])
        f["img_to_first_box"] = np.array([0, 1, 2, 3])
        f["img_to_last_box"] = np.array([0, 1, 2, 3])
        f["img_to_first_rel"] = np.array([-1, 0, 1, 2])
        f["img_to_last_rel"] = np.array([-1, 0, 1, 2])
        f["labels"] = np.array([[1], [1], [1], [1]])
        f["boxes_1024"] = np.array([[100, 100, 50, 50]] * 4)
        f["relationships"] = np.array([[1, 1], [2, 2], [3, 3]])
        f["predicates"] = np.array([[1], [1], [1]])
    (tmp_path / "dicts.json").write_text(
        json.dumps({"idx_to_label": {"1": "man"}, "idx_to_predicate": {"1": "on"}, "label_to_idx": {}})
    )
    # the real image_data.json still lists the corrupted images 1592, 1722, 4616 and 4617
    ids = [1, 1592, 1722, 2, 3, 4616, 4617, 4]
    (tmp_path / "image_data.json").write_text(
        json.dumps([{"image_id": i, "width": 1024 if i != 3 else 512, "height": 512} for i in ids])
    )
    args = (tmp_path / "VG-SGG-with-attri.h5", tmp_path / "dicts.json", tmp_path / "image_data.json")
    test = VG150(*args, split="test")
    assert [g.image_id for g in test] == ["4"]
    assert [g.image_id for g in VG150(*args, split="val", num_val=1)] == ["2"]  # row 1 <-> image 2, not 1592
    assert [g.image_id for g in VG150(*args, split="train", num_val=1)] == ["3"]
    assert VG150(*args, split="train", num_val=1)[0].width == 512  # image 3's size, aligned past the dropped ids
    assert main(["convert", "vg", "--h5", str(args[0]), "--dicts", str(args[1]), "--image-data", str(args[2]),
                 "--out", str(tmp_path / "vg.json"), "--quiet"]) == 0  # fmt: skip
    assert [d["image_id"] for d in json.loads((tmp_path / "vg.json").read_text())["data"]] == ["2", "3", "4"]


# ---------------------------------------------------------------------------------------------------------------
# the synthetic world writes the real conventions
# ---------------------------------------------------------------------------------------------------------------


def test_synthetic_world_writes_the_published_conventions(synthetic_root):
    import zipfile

    gta = synthetic_root / "psg4d_gta"
    ann = json.loads((gta / "sailvos3d.json").read_text())
    vid = ann["split"]["test"][0]
    cam = (gta / "camera" / vid / "000000.yaml").read_text()
    assert cam.startswith("K:\n- [") and "\nRt:\n- [" in cam and "fx" not in cam  # SAIL-VOS's text layout
    depth = np.load(gta / "depth" / vid / "000000.npy")
    assert depth.dtype == np.float32 and depth.min() >= np.float32(24e-5)  # NDC (sky: 24e-5)
    assert set(np.load(gta / "rage_matrices" / vid / "000000.npz").files) == {"P", "P_inv", "VP", "VP_inv"}
    stuff_ids = {o["object_id"] for d in ann["data"] for o in d["object"] if not o["is_thing"]}
    assert stuff_ids and min(stuff_ids) > 1000  # stuff objects are their pixel id + 1000
    masks = np.load(gta / "masks" / vid / "000000.npy")
    visible = np.load(gta / "visible" / vid / "000000.npy")
    assert (np.unique(masks) >= 1000).any() and not (np.unique(visible) >= 1000).any()
    pc = synthetic_root / "psg4d_gta_pc" / vid / "images_000000.pth"
    assert not zipfile.is_zipfile(pc) and b"cnumpy.core.multiarray\n_reconstruct" in pc.read_bytes()
    # the same points in both layouts: things agree, stuff has no points in PSG4D's
    mine, theirs = (
        Spade4DPointCloud(synthetic_root / "psg4d_pc", "test"),
        PSG4DGTAPointCloud(synthetic_root / "psg4d_gta_pc", "test"),
    )
    (p1, g1), (p2, g2) = mine[0], theirs[0]
    assert np.array_equal(p1.offsets, p2.offsets) and np.allclose(p1.rgb, p2.rgb, atol=1e-6)
    things = np.isin(p1.instance, [o.id for o in g1.objects if o.id < 1000])
    assert np.array_equal(np.where(things, p1.instance, -100), p2.instance)
    assert {o.id for o in g2.objects if o.masks} == {o.id for o in g1.objects if o.masks and o.id < 1000}
