"""Your own frames in: .ply / .pcd / .npy / .npz folders read as one sequence, turned to z up and metres, and
`spade4d infer --input` runs a model on them without an annotation file."""

import json

import numpy as np
import pytest

from spade4d.data.files import DatasetError
from spade4d.data.own_frames import read_frames, up_rotation


def frames(T=3, n=50, seed=0):
    rng = np.random.default_rng(seed)
    xyz = [rng.uniform(-2, 2, (n, 3)).astype(np.float32) for _ in range(T)]
    rgb = [rng.uniform(0, 1, (n, 3)).astype(np.float32) for _ in range(T)]
    return xyz, rgb


def write(folder, xyz, rgb, kind):
    import open3d as o3d

    folder.mkdir(parents=True, exist_ok=True)
    for t, (x, c) in enumerate(zip(xyz, rgb)):
        name = folder / f"frame_{t:03d}{kind}"
        if kind == ".npy":
            np.save(name, np.concatenate([x, c * 255], 1))
        elif kind == ".npz":
            np.savez(name, points=x, colors=c)
        else:
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(x.astype(np.float64)))
            pc.colors = o3d.utility.Vector3dVector(c.astype(np.float64))
            o3d.io.write_point_cloud(str(name), pc)
    return folder


@pytest.mark.parametrize("kind", [".npy", ".npz", ".ply", ".pcd"])
def test_each_frame_format_reads_back_the_same_points(tmp_path, kind):
    xyz, rgb = frames()
    seq = read_frames(write(tmp_path / "cap", xyz, rgb, kind))
    assert seq.video_id == "cap" and seq.num_frames == 3 and seq.counts.tolist() == [50, 50, 50]
    for t in range(3):
        np.testing.assert_allclose(seq.frame(t)["xyz"], xyz[t], atol=1e-5)
        np.testing.assert_allclose(seq.frame(t)["rgb"], rgb[t], atol=2e-3)  # .ply/.pcd keep 8-bit colours


def test_other_up_axes_and_units_come_back_to_z_up_metres(tmp_path):
    xyz, rgb = frames()
    ref = read_frames(write(tmp_path / "ref", xyz, rgb, ".npy"))
    # the same frames as an OpenCV camera would store them (y down) in millimetres
    to_y_down = up_rotation("-y").T  # z up -> -y up
    mm = [(x @ to_y_down.T) * 1000 for x in xyz]
    seq = read_frames(write(tmp_path / "mm", mm, rgb, ".npy"), up_axis="-y", units="mm")
    np.testing.assert_allclose(seq.xyz, ref.xyz, atol=1e-4)
    for axis in ("x", "y", "z", "-x", "-y", "-z"):
        R = up_rotation(axis)
        assert np.isclose(np.linalg.det(R), 1.0)


def test_frames_are_ordered_with_numbers_compared_as_numbers(tmp_path):
    from spade4d.data.own_frames import frame_files

    for name in ("10.npy", "9.npy", "0.npy", "frame_2.npy", "frame_10.npy"):
        np.save(tmp_path / name, np.zeros((1, 3)))
    order = [p.name for p in frame_files(tmp_path)]
    assert order == ["0.npy", "9.npy", "10.npy", "frame_2.npy", "frame_10.npy"]


def test_bad_frame_folders_are_named(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        read_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no frame files"):
        read_frames(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "0.npy", np.zeros((5, 4)))
    with pytest.raises(DatasetError, match=r"0.npy: expected an \(N, 3\) or \(N, 6\) array"):
        read_frames(bad)
    (bad / "0.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match="0.npy: unreadable frame"):
        read_frames(bad)
    with pytest.raises(ValueError, match="units"):
        read_frames(tmp_path / "empty", units="inch")


def tiny_model(synthetic_root, tmp_path, frames_record=None):
    import torch

    from spade4d.models.model4d import Model4D, Model4DConfig

    d = json.loads((synthetic_root / "dataset.json").read_text())
    torch.manual_seed(0)
    tiny = dict(voxel_size=0.15, channels=(8, 16), dim=16, num_queries=6, decoder_layers=1, heads=2, ffn_dim=32)
    tiny["object_threshold"] = 0.0  # a random model: keep its tubes, so that there is something to check
    names = dict(classes=d["thing_classes"] + d["stuff_classes"], predicates=d["predicates"])
    model = Model4D(Model4DConfig(**names, **tiny, frames=frames_record))
    return model.save_pretrained(tmp_path / "model")


def capture_frames(synthetic_root, T=4):
    from spade4d.data.psg4d import PSG4DPointCloud

    points, _ = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")[0]
    return [points.frame(t)["xyz"] for t in range(T)], [points.frame(t)["rgb"] for t in range(T)]


@pytest.mark.parametrize("kind", [".ply", ".pcd", ".npy"])
def test_infer_runs_a_model_on_your_own_frames(synthetic_root, tmp_path, capsys, kind):
    from spade4d.cli import main

    model_dir = tiny_model(synthetic_root, tmp_path)
    xyz, rgb = capture_frames(synthetic_root)
    cap = write(tmp_path / "my_capture", xyz, rgb, kind)
    out = tmp_path / "pred.json"
    assert main(["infer", "--model", str(model_dir), "--input", str(cap), "--out", str(out), "--no-llm"]) == 0
    assert "sequence 'my_capture': 4 frames" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert list(data["sequences"]) == ["my_capture"]
    objects = data["sequences"]["my_capture"]["objects"]
    assert objects  # per-frame masks over each frame's points, frames numbered from 0
    assert all(m["size"] == [len(xyz[int(t)]), 1] for o in objects for t, m in o["masks"].items())
    assert main(["infer", "--model", str(model_dir), "--out", str(out)]) == 2
    assert "pass --root" in capsys.readouterr().err


def depth_view(xyz, rgb, K, hw, world_from_camera=None):
    """A z-buffered depth map (16-bit millimetres) and colour image of points seen by the camera (OpenCV axes)."""
    from spade4d.data.lift import project

    uvz = project(xyz, K, world_from_camera)
    u, v, z = np.round(uvz[:, 0]).astype(int), np.round(uvz[:, 1]).astype(int), uvz[:, 2]
    ok = (z > 0.1) & (u >= 0) & (u < hw[1]) & (v >= 0) & (v < hw[0])
    order = np.argsort(-z[ok])  # far first: the nearest point of a pixel is written last
    depth = np.zeros(hw, np.uint16)
    image = np.zeros((*hw, 3), np.uint8)
    uu, vv = u[ok][order], v[ok][order]
    depth[vv, uu] = np.round(z[ok][order] * 1000).astype(np.uint16)
    image[vv, uu] = (rgb[ok][order] * 255).astype(np.uint8)
    return depth, image


@pytest.mark.parametrize("posed", [False, True])
def test_an_rgbd_folder_lifts_back_to_the_points_it_was_rendered_from(synthetic_root, tmp_path, posed):
    from PIL import Image
    from scipy.spatial import cKDTree

    from spade4d.data.own_frames import read_frames

    xyz, rgb = capture_frames(synthetic_root, T=2)
    K = np.array([[120.0, 0, 80], [0, 120.0, 60], [0, 0, 1]])
    # a camera 6 m behind the scene's centre looking along +y, tilted down; OpenCV axes (x right, y down, z forward)
    look = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T  # camera axes in world coordinates (columns)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = look, xyz[0].mean(0) + np.array([0, -6.0, 1.0])
    # written as ScanNet's SensReader/python/SensorData.py exports a scan: depth/<i>.png (uint16 mm), color/<i>.jpg,
    # pose/<i>.txt and intrinsic/intrinsic_depth.txt (4x4), matrices row by row with fmt "%f", frames unpadded
    folder = tmp_path / "rgbd"
    for sub in ("depth", "color", "pose", "intrinsic"):
        (folder / sub).mkdir(parents=True)
    K4 = np.eye(4)
    K4[:3, :3] = K
    np.savetxt(folder / "intrinsic" / "intrinsic_depth.txt", K4, fmt="%f")
    for t in range(2):
        depth, image = depth_view(xyz[t], rgb[t], K, (120, 160), pose)
        Image.fromarray(depth).save(folder / "depth" / f"{t}.png")
        Image.fromarray(image).resize((320, 240)).save(folder / "color" / f"{t}.jpg")  # colour at twice the size
        np.savetxt(folder / "pose" / f"{t}.txt", pose, fmt="%f")
    if not posed:
        import shutil

        shutil.rmtree(folder / "pose")
    seq = read_frames(folder)
    assert seq.num_frames == 2 and seq.source == str(folder)
    for t in range(2):
        got = seq.frame(t)["xyz"].astype(np.float64)
        assert len(got) > 200
        if not posed:  # camera axes turned to z up (-y up): back to the world with the pose, turned the same way
            R = pose[:3, :3] @ up_rotation("-y").T
            got = got @ R.T + pose[:3, 3]
        dist, _ = cKDTree(xyz[t]).query(got)
        # within the rounding to whole pixels (half a pixel is 2.5 cm at 6 m), 1 mm depth steps and the 2 cm voxels
        assert np.median(dist) < 0.02 and np.percentile(dist, 95) < 0.05
    if posed:  # the command on the RGB-D folder, a tiny random model
        from spade4d.cli import main

        out = tmp_path / "pred.json"
        assert main(["infer", "--model", str(tiny_model(synthetic_root, tmp_path)), "--input", str(folder),
                     "--out", str(out), "--no-llm", "--quiet"]) == 0  # fmt: skip
        graph = json.loads(out.read_text())["sequences"]["rgbd"]
        assert graph["num_frames"] == 2 and graph["objects"]
        assert all(m["size"] == [int(seq.counts[int(t)]), 1] for o in graph["objects"] for t, m in o["masks"].items())


def test_bad_rgbd_folders_are_named(tmp_path):
    from PIL import Image

    from spade4d.data.own_frames import read_frames

    folder = tmp_path / "rgbd"
    (folder / "depth").mkdir(parents=True)
    with pytest.raises(DatasetError, match="needs an intrinsics file"):
        read_frames(folder)
    (folder / "intrinsics.json").write_text(json.dumps({"fx": 100, "fy": 100, "cx": 10}))
    with pytest.raises(DatasetError, match="intrinsics.json: unreadable intrinsics"):
        read_frames(folder)
    (folder / "intrinsics.json").write_text(json.dumps({"fx": 100, "fy": 100, "cx": 10, "cy": 8}))
    Image.fromarray(np.full((16, 20), 1500, np.uint16)).save(folder / "depth" / "0.png")
    with pytest.raises(DatasetError, match="0.png: no colour image 0.jpg/.png"):
        read_frames(folder)
    (folder / "color").mkdir()
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(folder / "color" / "0.png")
    (folder / "pose").mkdir()
    with pytest.raises(DatasetError, match="0.png: no pose 0.txt"):
        read_frames(folder)
    (folder / "pose" / "0.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(DatasetError, match="0.txt: a pose must be a finite 4x4"):
        read_frames(folder)
    # ScanNet writes -inf for every entry of a frame whose tracking was lost: that frame is left empty, with a
    # warning; a folder where every frame lost it has nothing to place
    np.savetxt(folder / "pose" / "0.txt", np.full((4, 4), -np.inf), fmt="%f")
    with pytest.raises(DatasetError, match="every pose is infinite"):
        read_frames(folder)
    Image.fromarray(np.full((16, 20), 1500, np.uint16)).save(folder / "depth" / "1.png")
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(folder / "color" / "1.png")
    np.savetxt(folder / "pose" / "1.txt", np.eye(4), fmt="%f")
    with pytest.warns(UserWarning, match="1 frames have an infinite pose .* e.g. 0"):
        seq = read_frames(folder)
    assert seq.num_frames == 2 and seq.counts[0] == 0 and seq.counts[1] > 0
    # one infinite entry marks the frame lost too (nerfstudio's ScanNet reader skips such a pose)
    (folder / "pose" / "0.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 inf\n0 0 0 1\n")
    with pytest.warns(UserWarning, match="1 frames have an infinite pose"):
        assert read_frames(folder).counts[0] == 0
    (folder / "pose" / "0.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 nan\n0 0 0 1\n")  # one bad entry: an error
    with pytest.raises(DatasetError, match="0.txt: a pose must be a finite 4x4"):
        read_frames(folder)


def test_frames_in_another_up_axis_or_unit_are_warned_and_the_fixed_input_predicts_the_same(
    synthetic_root, tmp_path, caplog
):
    from spade4d.data.frame_check import frame_stats, sequence_frames
    from spade4d.data.psg4d import PSG4DPointCloud
    from spade4d.inference.pipeline import Pipeline4D

    train = PSG4DPointCloud(synthetic_root / "psg4d_pc", "train")
    record = frame_stats([f for i in range(3) for f in sequence_frames(train[i][0], 2)])
    assert record["floor_normal"] == "+z" and 1.0 < record["extent"] < 20.0
    pipe = Pipeline4D.from_pretrained(tiny_model(synthetic_root, tmp_path, record), use_llm=False)
    xyz, rgb = capture_frames(synthetic_root)
    y_down = [x.astype(np.float64) @ up_rotation("-y") for x in xyz]  # z up -> -y up, as a camera stores it
    millimetres = [x.astype(np.float64) * 1000 for x in xyz]
    ref = read_frames(write(tmp_path / "zup", xyz, rgb, ".npy"))
    assert pipe.check_frames(ref) == []
    expected = pipe(ref, "s").to_json()

    for name, frames, fix, hint in (
        ("ydown", y_down, {"up_axis": "-y"}, "--up-axis -y"),
        ("mm", millimetres, {"units": "mm"}, "--units mm"),
    ):
        folder = write(tmp_path / name, frames, rgb, ".npy")
        caplog.clear()
        pipe(read_frames(folder))
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warned) == 1 and warned[0].startswith(f"{folder}: ") and hint in warned[0], warned
        assert "\n" not in warned[0]
        fixed = read_frames(folder, **fix)
        np.testing.assert_array_equal(fixed.xyz, ref.xyz)  # the very same floats
        assert pipe.check_frames(fixed) == []
        assert pipe(fixed, "s").to_json() == expected
