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


def test_infer_runs_a_model_on_your_own_frames(synthetic_root, tmp_path, capsys):
    import torch

    from spade4d.cli import main
    from spade4d.data.psg4d import PSG4DPointCloud
    from spade4d.models.model4d import Model4D, Model4DConfig

    d = json.loads((synthetic_root / "dataset.json").read_text())
    torch.manual_seed(0)
    tiny = dict(voxel_size=0.15, channels=(8, 16), dim=16, num_queries=6, decoder_layers=1, heads=2, ffn_dim=32)
    model = Model4D(Model4DConfig(classes=d["thing_classes"] + d["stuff_classes"], predicates=d["predicates"], **tiny))
    model_dir = model.save_pretrained(tmp_path / "model")
    points, _ = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")[0]
    T = 4
    cap = write(tmp_path / "my_capture", [points.frame(t)["xyz"] for t in range(T)],
                [points.frame(t)["rgb"] for t in range(T)], ".ply")  # fmt: skip
    out = tmp_path / "pred.json"
    assert main(["infer", "--model", str(model_dir), "--input", str(cap), "--out", str(out), "--no-llm"]) == 0
    assert "sequence 'my_capture': 4 frames" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert list(data["sequences"]) == ["my_capture"]
    assert main(["infer", "--model", str(model_dir), "--out", str(out)]) == 2
    assert "pass --root" in capsys.readouterr().err
