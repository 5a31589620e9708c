import numpy as np
import pytest

from spade4d.data.lift import LiftError, backproject, lift_rgbd, project, voxel_downsample


def test_lift_matches_hand_computed_pinhole():
    K = np.array([[100.0, 0, 2.0], [0, 50.0, 1.0], [0, 0, 1]])
    depth = np.array([[2.0, 0.0, 1.0, 4.0], [np.nan, 1.0, 3.0, -1.0], [1.5, 2.0, np.inf, 1.0]], dtype=np.float32)
    rgb = np.arange(12 * 3, dtype=np.uint8).reshape(3, 4, 3)
    inst = np.arange(12).reshape(3, 4)
    f = lift_rgbd(rgb, depth, K, instance=inst)
    # pixel (u=0, v=0), z = 2: x = (0 - 2) * 2 / 100 = -0.04, y = (0 - 1) * 2 / 50 = -0.04
    assert f.xyz[0] == pytest.approx([-0.04, -0.04, 2.0])
    # pixel (u=2, v=1), z = 3: x = 0, y = 0
    k = list(f.pixel).index(6)
    assert f.xyz[k] == pytest.approx([0.0, 0.0, 3.0])
    assert f.instance[k] == 6 and f.rgb[k] == pytest.approx(rgb[1, 2] / 255.0)
    assert f.dropped_invalid == 4  # 0, NaN, -1, inf
    assert set(f.pixel.tolist()) == {0, 2, 3, 5, 6, 8, 9, 11}


def test_world_pose_and_projection_round_trip():
    rng = np.random.default_rng(0)
    K = np.array([[80.0, 0, 31.5], [0, 80.0, 23.5], [0, 0, 1]])
    depth = rng.uniform(1, 5, (48, 64))
    angle = 0.3
    T = np.eye(4)
    T[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    T[:3, 3] = [1, 2, 3]
    pts = backproject(depth, K, T)
    uvz = project(pts, K, T)
    v, u = np.divmod(np.arange(48 * 64), 64)
    assert np.allclose(uvz[:, 0], u) and np.allclose(uvz[:, 1], v) and np.allclose(uvz[:, 2], depth.reshape(-1))


def test_voxel_downsample_keeps_one_point_per_voxel():
    xyz = np.array([[0.01, 0, 0], [0.02, 0.01, 0], [0.5, 0, 0], [0.51, 0.0, 0.0]])
    assert voxel_downsample(xyz, 0.1).tolist() == [0, 2]


def test_lift_rejects_mismatched_inputs():
    K = np.eye(3)
    with pytest.raises(LiftError, match="rgb has shape"):
        lift_rgbd(np.zeros((2, 2, 3)), np.zeros((3, 3)), K)
    with pytest.raises(LiftError, match="instance map"):
        lift_rgbd(np.zeros((3, 3, 3)), np.zeros((3, 3)), K, instance=np.zeros((2, 3)))
    with pytest.raises(LiftError, match="positive focal"):
        lift_rgbd(np.zeros((3, 3, 3)), np.zeros((3, 3)), np.zeros((3, 3)))
