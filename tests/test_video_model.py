"""The video model (docs/video.md): frames read with decord by seeking, cells on the image plane, the 4D model on
them (shapes, an overfit on one clip, tubes whole across windows), and one-line errors on bad videos."""

import json
import shutil

import numpy as np
import pytest
import torch

from spade4d.data.cameras import point_uv
from spade4d.data.files import DatasetError
from spade4d.data.video import CellGrid, PVSGVideos, VideoFrames, pixel_graph
from spade4d.models.model4d import Model4D, Model4DConfig

TINY = {"voxel_size": 0.1, "channels": (16, 16), "dim": 32, "num_queries": 8, "decoder_layers": 1, "heads": 2,
        "ffn_dim": 64, "window": 2}  # fmt: skip


class Spy:
    """A decord VideoReader that records which frames were decoded."""

    def __init__(self, vr):
        self.vr, self.asked = vr, []

    def __len__(self):
        return len(self.vr)

    def __getitem__(self, i):
        return self.vr[i]

    def get_batch(self, indices):
        self.asked.append(list(indices))
        return self.vr.get_batch(indices)


def solid_video(path, colours, size=(32, 64)):
    import imageio.v2 as imageio

    frames = [np.full((*size, 3), c, np.uint8) for c in colours]
    imageio.mimsave(path, frames, fps=5, macro_block_size=16)


def test_frames_are_decoded_by_seeking_only_those_asked(tmp_path):
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250), (250, 10, 250)]
    solid_video(tmp_path / "v.mp4", colours)
    fs = VideoFrames(lambda vid: tmp_path / f"{vid}.mp4", stride=4, voxel=0.1, chunk=2)
    spy = fs._readers["v"] = Spy(fs.reader("v"))
    rgb, K, pose = fs.get("v", 3)
    assert spy.asked == [[3, 4]] and pose is None and rgb.shape == (32, 64, 3)
    assert np.abs(rgb.reshape(-1, 3).mean(0) - colours[3]).max() < 25
    fs.get("v", 4)  # in the chunk already: nothing decoded
    assert spy.asked == [[3, 4]]
    assert np.abs(fs.get("v", 1)[0].reshape(-1, 3).mean(0) - colours[1]).max() < 25 and spy.asked[-1] == [1, 2]
    assert np.abs(fs.frames("v", [5, 0]).reshape(2, -1, 3).mean(1) - [colours[5], colours[0]]).max() < 25
    with pytest.raises(DatasetError, match=r"v.mp4: frames \[9\] outside the video's 6 frames"):
        fs.frames("v", [9])


def test_cells_project_onto_their_centre_pixels_one_voxel_apart():
    g = CellGrid(10, 14, stride=4, voxel=0.25)
    assert g.shape == (2, 3) and g.rows.tolist() == [2, 6] and g.cols.tolist() == [2, 6, 10]
    xyz = g.xyz.reshape(*g.shape, 3)
    assert np.allclose(np.diff(xyz[..., 0], axis=1), 0.25) and np.allclose(np.diff(xyz[..., 1], axis=0), 0.25)
    uv = point_uv(g.xyz, g.K, None, 10, 14)  # grid_sample units of the centre pixels
    rows, cols = np.meshgrid(g.rows, g.cols, indexing="ij")
    assert np.allclose(uv, np.stack([(2 * cols + 1) / 14 - 1, (2 * rows + 1) / 10 - 1], -1).reshape(-1, 2))
    image = np.arange(140).reshape(10, 14)
    assert g.sample(image).tolist() == image[[2, 6]][:, [2, 6, 10]].ravel().tolist()
    cells = np.arange(6) % 2 == 0
    pix = g.to_pixels(cells)  # every pixel takes its 4x4 block's value; the ragged edge takes the last block's
    assert pix.shape == (10, 14) and pix[0:4, 0:4].all() and not pix[0:4, 4:8].any() and not pix[8:, 12:].any()
    assert np.array_equal(g.sample(pix), cells)


def test_bad_videos_are_one_line_errors(synthetic_root, tmp_path):
    root = tmp_path / "pvsg"
    shutil.copytree(synthetic_root / "pvsg", root)
    ds = PVSGVideos(root, "val")
    vid = ds.video_ids()[0]
    video = root / "ego4d" / "videos" / f"{vid}.mp4"
    # the annotation says more frames than the video has
    ann = json.loads((root / "pvsg.json").read_text())
    entry = next(d for d in ann["data"] if d["video_id"] == vid)
    entry["meta"]["num_frames"] += 4
    (root / "pvsg.json").write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match=rf"{vid}.mp4: the video has 6 frames, its annotation says 10") as e:
        PVSGVideos(root, "val")[0]
    assert "\n" not in str(e.value)
    entry["meta"]["num_frames"] -= 4
    entry["meta"]["width"] = 100
    (root / "pvsg.json").write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match=rf"{vid}.mp4: frames are 96x72, its annotation says 100x72"):
        PVSGVideos(root, "val")[0]
    entry["meta"]["width"] = 96
    (root / "pvsg.json").write_text(json.dumps(ann))
    # a truncated (corrupt) video
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match=rf"{vid}.mp4: unreadable or truncated video") as e:
        PVSGVideos(root, "val")[0]
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    video.write_bytes(data)
    # a mask of another size than its frame
    from PIL import Image

    Image.fromarray(np.zeros((72, 90), np.uint8), mode="P").save(root / "ego4d" / "masks" / vid / "0003.png")
    with pytest.raises(DatasetError, match=rf"masks/{vid}/0003.png: mask is 90x72, the video 96x72"):
        PVSGVideos(root, "val")[0]


def tiny_video_model(ds):
    cfg = Model4DConfig(classes=ds.classes, predicates=ds.predicates, video={"stride": 4}, **TINY)
    model = Model4D(cfg)
    ds.use_grid(4, cfg.voxel_size)
    return model


def test_video_model_overfits_one_clip_and_keeps_tubes_whole_across_windows(synthetic_root):
    from spade4d.data.frames import load_frames, sequence_center
    from spade4d.inference.infer_4d import predict_sequence
    from spade4d.training.clips import clip_loss, clip_targets

    torch.manual_seed(0)
    ds = PVSGVideos(synthetic_root / "pvsg", "train")
    model = tiny_video_model(ds)
    i = ds.index_of(next(v for v in ds.video_ids() if v.endswith("_sit")))
    seq, graph = ds[i]
    h, w = ds.frame_source.grid(*ds.size(i)).shape
    assert seq.counts.tolist() == [h * w] * seq.num_frames and graph.num_points == [h * w] * seq.num_frames
    times = list(range(seq.num_frames))
    frames = load_frames(seq, times, graph.video_id)
    targets = clip_targets(graph, frames, model.config.classes, model.config.predicates)
    center = sequence_center(seq)
    out = model.forward_window(frames.window(0, 2), center, model.init_memory())
    Q, D = model.config.num_queries, model.config.dim
    assert out.states.shape == (2, Q, D) and out.class_logits.shape == (Q, len(ds.classes) + 1)
    assert out.mask_logits(1).shape == (Q, h * w)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        terms = clip_loss(model, frames, targets, center, points_per_frame=h * w)
        loss = sum(v for k, v in terms.items() if k.startswith("loss_"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.35 * np.mean(losses[:5])
    model.config.object_threshold = 0.2
    pred = predict_sequence(model, seq, graph.video_id, window=2)  # 3 windows of 2 frames
    person = next(o for o in graph.objects if o.label == "person")
    best = max(pred.objects, key=lambda o: sum(_iou(o.mask(t, h * w), person.mask(t, h * w)) for t in times))
    # one tube follows the person through every window (frames 0-1, 2-3, 4-5): the memory carries its identity
    seen = person.frames()
    ious = [_iou(best.mask(t, h * w), person.mask(t, h * w)) for t in seen]
    assert {t // 2 for t in seen} == {0, 1, 2} and min(ious) > 0.5, (seen, ious)
    # and becomes pixel masks of the frame size, each pixel taking its cell's value
    pix = pixel_graph(pred, ds.frame_source.grid(*ds.size(i)))
    H, W = ds.size(i)
    assert pix.num_points == [H * W] * seq.num_frames and next(iter(pix.objects[0].masks.values())).shape == (H * W,)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_infer_runs_a_video_model_on_a_plain_video_file(tmp_path, capsys):
    from spade4d.cli import main

    solid_video(tmp_path / "clip.mp4", [(200, 40, 40)] * 5, size=(48, 64))
    torch.manual_seed(0)
    cfg = Model4DConfig(classes=["person", "ball"], predicates=["holding"], video={"stride": 4}, **TINY)
    Model4D(cfg).save_pretrained(tmp_path / "model")
    args = ["infer", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "p.json"), "--quiet"]
    assert main([*args, "--input", str(tmp_path / "clip.mp4")]) == 0
    assert "warning" not in capsys.readouterr().err  # no up-axis / unit check on image-plane cells
    raw = json.loads((tmp_path / "p.json").read_text())
    entry = raw["sequences"]["clip"]
    assert raw["format"] == "spade4d-predictions-video"
    assert (entry["num_frames"], entry["height"], entry["width"]) == (5, 48, 64)
    for o in entry["objects"]:
        assert all(m["size"] == [48, 64] for m in o["masks"].values())
    # --core-2d needs a 2D core there (tests/test_video_model.py::test_the_2d_cores_masks_join_a_video_models_tubes)
    assert main([*args, "--input", str(tmp_path / "clip.mp4"), "--core-2d", str(tmp_path / "nothing")]) == 2


def test_the_2d_cores_masks_join_a_video_models_tubes(synthetic_root, tmp_path):
    """``infer --core-2d`` with a video model: the core's instance masks of each frame become tubes of their own
    beside the model's (a frame's cells are its pixels, so nothing is lifted through depth)."""
    from spade4d.evaluation.video import PredictionFileVideo
    from spade4d.inference.pipeline import InferenceOptions, Pipeline4D
    from spade4d.inference.video import predict_videos
    from tests.test_core2d import tiny_2d

    torch.manual_seed(0)
    ds = PVSGVideos(synthetic_root / "pvsg", "test")
    model = tiny_video_model(ds)
    core = tiny_2d()
    core.config.object_threshold = 0.0  # an untrained core: its proposals are kept by the threshold it carries
    core_dir = core.save_pretrained(tmp_path / "core")
    vids = ds.video_ids()[:2]
    runs = {}
    for name, where in (("plain", None), ("with2d", core_dir)):
        pipe = Pipeline4D(model, InferenceOptions(use_llm=False), rgb_source=False)
        predict_videos(pipe, ds, tmp_path / f"{name}.json", vids, progress=False, core_2d=where)
        runs[name] = PredictionFileVideo(tmp_path / f"{name}.json")
    added = 0
    for vid in vids:
        plain, with2d = runs["plain"].get(vid), runs["with2d"].get(vid)
        ids = [o.id for o in plain.objects]
        assert [o.id for o in with2d.objects[: len(ids)]] == ids  # the model's tubes first, unchanged
        assert len({o.id for o in with2d.objects}) == len(with2d.objects)
        H, W = ds.size(ds.index_of(vid))
        for o in with2d.objects[len(ids) :]:
            assert o.label in model.config.classes and o.masks  # named in the model's vocabulary by the core
            assert all(len(o.mask(t, H * W)) == H * W for t in o.masks)
        known = {o.id for o in with2d.objects}
        assert all(r.subject in known and r.object in known for r in with2d.relations)
        added += len(with2d.objects) - len(ids)
    assert added > 0
