"""Video scene graphs on pixel masks: the PVSG layout as OpenPVSG reads it, the video prediction file and the
video metric (docs/metrics.md, "Video")."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from PIL import Image

from spade4d.cli import main
from spade4d.data.files import DatasetError
from spade4d.data.pvsg import PVSG
from spade4d.evaluation import Options4D, PredictionFileError
from spade4d.evaluation.metrics_4d import match_sequence
from spade4d.evaluation.reference import match_sequence_reference
from spade4d.evaluation.video import (
    LazyMasks,
    PredictionFileVideo,
    evaluate_video_split,
    write_predictions_video,
)
from spade4d.structures import ObjectTube, Relation4D, SceneGraph4D

H, W, T = 12, 16, 6


def scene_masks() -> np.ndarray:
    """(T, H, W) object ids: an adult (id 1) on the left half, a ball (id 2) in the lower right quarter that
    leaves the picture after frame 3; 0 is background (PVSG's ids start at 1)."""
    m = np.zeros((T, H, W), np.uint8)
    m[:, :, : W // 2] = 1
    m[:4, H // 2 :, W // 2 :] = 2
    return m


def write_pvsg(root, masks=None, relations=None, source="vidor", vid="0001_4164158586", meta=None):
    """A one-video PVSG folder as the public layout has it: ``pvsg.json`` (objects.thing / stuff, relations,
    split[source][train|val], data[] with meta) and ``<source>/masks/<vid>/%04d.png`` P-mode palette PNGs whose
    pixel value is the object id (LilyDaytoy/OpenPVSG ``utils/rel_metrics.py`` reads them with
    ``np.array(Image.open(path))``), plus the video the masks belong to and its extracted frames
    ``<source>/frames/<vid>/%04d.png`` (``datasets/datasets/pvsg_video.py`` globs them and swaps ``frames`` for
    ``masks`` to find each frame's mask)."""
    import imageio.v2 as imageio

    masks = scene_masks() if masks is None else masks
    (root / source / "masks" / vid).mkdir(parents=True, exist_ok=True)
    (root / source / "frames" / vid).mkdir(parents=True, exist_ok=True)
    (root / source / "videos").mkdir(parents=True, exist_ok=True)
    palette = [0, 0, 0, 220, 40, 40, 40, 200, 40] + [0] * (256 * 3 - 9)
    for t, m in enumerate(masks):
        im = Image.fromarray(m, mode="P")
        im.putpalette(palette)
        im.save(root / source / "masks" / vid / f"{t:04d}.png")
    rgb = [np.stack([m * 100, m * 50, np.full_like(m, 30)], -1).astype(np.uint8) for m in masks]
    imageio.mimsave(root / source / "videos" / f"{vid}.mp4", rgb, fps=5, macro_block_size=4)
    for t, frame in enumerate(rgb):  # the extracted frames OpenPVSG's loaders read beside the masks
        Image.fromarray(frame).save(root / source / "frames" / vid / f"{t:04d}.png")
    rels = [[1, 2, "holding", [[0, 3]]], [1, 2, "looking at", [[0, 1], [4, 5]]]] if relations is None else relations
    ann = {
        "objects": {"thing": ["adult", "ball"], "stuff": ["floor"]},
        "relations": ["holding", "looking at", "throwing"],
        # OpenPVSG's datasets loop over all three sources' split lists (datasets/datasets/pvsg_*.py)
        "split": {
            src: {"train": [], "val": [vid] if src == source else []} for src in ("vidor", "epic_kitchen", "ego4d")
        },
        "data": [
            {
                "video_id": vid,
                "meta": meta or {"height": H, "width": W, "fps": 5, "num_frames": len(masks)},
                "objects": [
                    {"object_id": 1, "category": "adult", "is_thing": True},
                    {"object_id": 2, "category": "ball", "is_thing": True},
                ],
                "relations": rels,
            }
        ],
    }
    (root / "pvsg.json").write_text(json.dumps(ann))
    return vid


def prediction(vid, masks, relations, labels=("adult", "ball"), size=(H, W)):
    objects = [
        ObjectTube(10 + k, label, {t: m == k + 1 for t, m in enumerate(masks) if (m == k + 1).any()}, 0.9)
        for k, label in enumerate(labels)
    ]
    return SceneGraph4D(vid, len(masks), objects, relations), *size


def evaluate(tmp_path, relations, masks=None, **kw):
    vid = "0001_4164158586"
    pred = tmp_path / "pred.json"
    write_predictions_video(pred, [prediction(vid, scene_masks() if masks is None else masks, relations)])
    opts = Options4D(ks=(1, 2, 20), **kw)
    return evaluate_video_split(PVSG(tmp_path, "val"), pred, tmp_path / "m.json", opts, progress=False).metrics


def test_video_metric_rules_by_hand(tmp_path):
    write_pvsg(tmp_path)
    # GT: holding on 0..3 (the ball is visible on all 4 frames), looking at on {0, 1, 4, 5}, but the ball is gone
    # on 4..5, so its GT frames are {0, 1}
    exact = [Relation4D(10, 11, "holding", [(0, 3)], 0.9), Relation4D(10, 11, "looking at", [(0, 1)], 0.8)]
    m = evaluate(tmp_path, exact)
    assert (m["R@1"], m["R@2"], m["num_gt_relations"]) == (50.0, 100.0, 2)
    # a span covering 2 of holding's 4 GT frames reaches vIoU 0.5 exactly; 1 of 4 is a weak hit only
    m = evaluate(tmp_path, [Relation4D(10, 11, "holding", [(2, 5)], 0.9)])
    assert (m["R@1"], m["sfR@1"]) == (50.0, 50.0)
    m = evaluate(tmp_path, [Relation4D(10, 11, "holding", [(3, 5)], 0.9)])
    assert (m["R@1"], m["wR@1"], m["sfR@1"]) == (0.0, 50.0, 50.0)
    # frames beyond the GT span cost nothing unless asked: 4 hits / |{0..3} ∪ {0..5}| = 4 / 6
    assert evaluate(tmp_path, [Relation4D(10, 11, "holding", [(0, 5)], 0.9)])["R@1"] == 50.0
    m = evaluate(
        tmp_path, [Relation4D(10, 11, "holding", [(0, 5)], 0.9)], penalize_extra_frames=True, viou_threshold=0.7
    )
    assert m["R@1"] == 0.0
    # pixel IoU: a ball mask of half the ball's pixels is IoU 0.5 (a hit), less is a miss
    half, less = scene_masks(), scene_masks()
    half[:4, H // 2 :, W // 2 + W // 4 :] = 0
    less[:4, H // 2 :, W // 2 + W // 4 - 1 :] = 0
    assert evaluate(tmp_path, exact[:1], masks=half)["R@1"] == 50.0
    assert evaluate(tmp_path, exact[:1], masks=less)["R@20"] == 0.0
    # mR averages the two predicates, each 1 of 1 or 0 of 1; the per-predicate chart is written beside the JSON
    m = evaluate(tmp_path, exact[1:])
    assert m["mR@20"] == 50.0 and m["per_predicate"]["looking at"]["R@20"] == 100.0
    assert (tmp_path / "m_per_predicate.png").stat().st_size > 1000


def test_prediction_file_round_trip(tmp_path):
    masks = scene_masks()
    g, h, w = prediction("v", masks, [Relation4D(10, 11, "holding", [(0, 1), (3, 3)], 0.7)])
    write_predictions_video(tmp_path / "p.json", [(g, h, w)])
    raw = json.loads((tmp_path / "p.json").read_text())
    entry = raw["sequences"]["v"]
    assert raw["format"] == "spade4d-predictions-video" and (entry["height"], entry["width"]) == (H, W)
    assert entry["objects"][1]["masks"]["0"]["size"] == [H, W] and set(entry["objects"][1]["masks"]) == set("0123")
    back = PredictionFileVideo(tmp_path / "p.json").get("v", T, (H, W))
    assert back.num_points == [H * W] * T and back.relations[0].spans == [(0, 1), (3, 3)]
    for a, b in zip(g.objects, back.objects):
        assert (a.id, a.label, a.score) == (b.id, b.label, b.score) and set(b.masks) == set(a.masks)
        for t in a.masks:
            assert np.array_equal(b.masks[t], a.masks[t].reshape(-1))
    assert back.objects[1].masks.get(5) is None  # the ball has no mask once it has left


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.update(height=13), "field 'height' is 13, the video's is 12"),
        (lambda e: e.update(num_frames=5), "field 'num_frames' is 5, the video's is 6"),
        (lambda e: e.pop("width"), "field 'width' is None, expected a positive integer"),
        (lambda e: e["objects"][0]["masks"]["0"].update(size=[16, 12]), r"mask of frame 0 has size \[16, 12\]"),
        (lambda e: e["objects"][0]["masks"].update({"9": e["objects"][0]["masks"]["0"]}), "frame 9, outside 0..5"),
        (lambda e: e["relations"][0].update(subject=99), "subject id 99 names no object"),
    ],
)
def test_malformed_video_predictions_name_file_video_and_field(tmp_path, mutate, message):
    g, h, w = prediction("v", scene_masks(), [Relation4D(10, 11, "holding", [(0, 1)], 0.7)])
    write_predictions_video(tmp_path / "p.json", [(g, h, w)])
    raw = json.loads((tmp_path / "p.json").read_text())
    mutate(raw["sequences"]["v"])
    (tmp_path / "p.json").write_text(json.dumps(raw))
    with pytest.raises(PredictionFileError, match=message) as e:
        PredictionFileVideo(tmp_path / "p.json").get("v", T, (H, W))
    assert str(tmp_path / "p.json") in str(e.value) and "\n" not in str(e.value)


def test_corrupt_rle_is_refused_when_read_with_its_place(tmp_path):
    g, h, w = prediction("v", scene_masks(), [Relation4D(10, 11, "holding", [(0, 1)], 0.7)])
    write_predictions_video(tmp_path / "p.json", [(g, h, w)])
    raw = json.loads((tmp_path / "p.json").read_text())
    raw["sequences"]["v"]["objects"][0]["masks"]["1"]["counts"] = "0"
    (tmp_path / "p.json").write_text(json.dumps(raw))
    lazy = PredictionFileVideo(tmp_path / "p.json").get("v", T, (H, W))
    with pytest.raises(PredictionFileError, match=r"p.json: video 'v': object 10 frame 1: RLE counts"):
        lazy.objects[0].masks.get(1)


def test_bad_pvsg_inputs_are_one_line_errors(tmp_path, capsys):
    vid = write_pvsg(tmp_path)
    g = prediction(vid, scene_masks(), [Relation4D(10, 11, "holding", [(0, 3)], 0.9)])
    write_predictions_video(tmp_path / "p.json", [g])
    args = ["evaluate-video", "--root", str(tmp_path), "--pred", str(tmp_path / "p.json"), "--out", "m.json"]
    # a mask PNG of the wrong size
    Image.fromarray(np.zeros((H, W + 2), np.uint8), mode="P").save(tmp_path / "vidor/masks" / vid / "0002.png")
    assert main([*args, "--out", str(tmp_path / "m.json"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{tmp_path}/vidor/masks/{vid}/0002.png: mask is (18, 12) (W, H), the video is (16, 12)")
    # a missing mask frame
    (tmp_path / "vidor/masks" / vid / "0002.png").unlink()
    assert main([*args, "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("0002.png: file not found")
    # a split listing a video id that pvsg.json's data does not hold
    ann = json.loads((tmp_path / "pvsg.json").read_text())
    ann["split"]["vidor"]["val"].append("P01_01")
    (tmp_path / "pvsg.json").write_text(json.dumps(ann))
    with pytest.raises(
        DatasetError, match=r"pvsg.json: split 'val' lists 1 video ids with no entry in 'data' \(P01_01"
    ):
        PVSG(tmp_path, "val")


def test_evaluate_video_command(tmp_path, capsys):
    vid = write_pvsg(tmp_path)
    rels = [Relation4D(10, 11, "holding", [(0, 3)], 0.9), Relation4D(10, 11, "looking at", [(0, 5)], 0.8)]
    write_predictions_video(tmp_path / "p.json", [prediction(vid, scene_masks(), rels)])
    out = tmp_path / "metrics.json"
    args = ["evaluate-video", "--root", str(tmp_path), "--pred", str(tmp_path / "p.json"), "--out", str(out)]
    assert main([*args, "--oov-predicates", "looking at"]) == 0
    m = json.loads(out.read_text())
    assert m["R@20"] == 100.0 and m["split"] == "val" and m["videos_without_predictions"] == 0
    assert m["oov"]["num_gt_relations"] == 1 and m["oov"]["R@20"] == 100.0
    assert "video scene graph recall, val split (1 videos, 2 GT relations)" in capsys.readouterr().out
    assert main([*args, "--penalize-extra-frames", "--viou-threshold", "0.6", "--quiet"]) == 0
    assert json.loads(out.read_text())["R@20"] == 50.0  # looking at: 2 / |{0, 1} ∪ {0..5}|
    assert main([*args, "--openpvsg-weak", "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert m["wR@20"] == m["wmR@20"] == 100.0 and m["options"]["openpvsg_weak"] is True


def test_lazy_masks_score_as_the_reference_loop():
    from test_evaluation_4d import random_case

    @given(random_case())
    @settings(max_examples=60, deadline=None)
    def check(case):
        gt, pred = case
        for g in (gt, pred):
            for o in g.objects:
                eager = dict(o.masks)
                o.masks = LazyMasks(eager, eager.get, (lambda e: lambda t: t in e and bool(e[t].any()))(eager))
        fast, ref = match_sequence(gt, pred), match_sequence_reference(gt, pred)
        key = lambda o: (o.rank, o.weak_rank, o.pair_rank, o.span_free_rank, o.weak_hits)  # noqa: E731
        assert [key(o) for o in fast] == [key(o) for o in ref]

    check()


def test_synthetic_world_writes_a_pvsg_dataset_that_scores_itself(synthetic_root, tmp_path):
    """``<out>/pvsg``: the same videos, splits and relations as the 4D layout, frames decodable with decord, P-mode
    masks with the object ids, and the ground truth written as a prediction recalls every recallable relation."""
    from spade4d.data.synthetic.generate import unseen_names

    root = synthetic_root / "pvsg"
    ann4d = json.loads((synthetic_root / "psg4d_pc" / "psg4d.json").read_text())
    for split in ("train", "val", "test"):
        ds = PVSG(root, split)
        assert ds.video_ids() == ann4d["split"][split]
    # as OpenPVSG's loaders read it: every source's split list, and frames/ beside masks/ frame for frame
    ann = json.loads((root / "pvsg.json").read_text())
    ids = [v for src in ("vidor", "epic_kitchen", "ego4d") for v in ann["split"][src]["test"]]
    assert ids == ann4d["split"]["test"]
    for png in (root / "ego4d" / "frames" / ids[0]).glob("*.png"):
        assert Path(str(png).replace("frames", "masks")).is_file()
    ds = PVSG(root, "test")
    vid = ds.video_ids()[0]
    frames = ds.read_frames(vid, [0, 5])
    bmp = np.asarray(Image.open(synthetic_root / "psg4d_gta" / "images" / vid / "000005.bmp"))
    assert frames.shape == (2, 72, 96, 3) and np.abs(frames[1].astype(int) - bmp).mean() < 6  # lossy mp4
    with Image.open(ds.mask_path(vid, 0)) as im:
        assert im.mode == "P"
    graphs = []
    for i in range(len(ds)):
        a, (h, w) = ds.annotation(i), ds.size(i)
        masks = [ds.read_mask(a.video_id, t) for t in range(a.num_frames)]
        objects = [
            ObjectTube(o, name, {t: m == o for t, m in enumerate(masks) if (m == o).any()})
            for o, name in a.labels.items()
        ]
        rels = [
            Relation4D(r.subject, r.object, r.predicate, r.spans, 1.0 - 0.01 * k) for k, r in enumerate(a.relations)
        ]
        graphs.append((SceneGraph4D(a.video_id, a.num_frames, objects, rels), h, w))
    write_predictions_video(tmp_path / "gt.json", graphs)
    m = evaluate_video_split(
        ds, tmp_path / "gt.json", tmp_path / "m.json", progress=False, unseen=unseen_names(synthetic_root)
    ).metrics
    assert m["R@100"] == 100.0 and m["num_gt_relations"] == sum(len(a.relations) for a, _, _ in graphs)
    assert m["oov"]["num_gt_relations"] > 0 and m["oov"]["R@100"] == 100.0


def test_render_draws_video_predictions_on_their_frames(tmp_path):
    masks = np.kron(scene_masks(), np.ones((4, 4), np.uint8))  # 48 x 64: decord needs frames this large
    vid = write_pvsg(tmp_path, masks, meta={"height": 4 * H, "width": 4 * W, "fps": 5, "num_frames": T})
    rels = [Relation4D(10, 11, "holding", [(0, 3)], 0.9)]
    write_predictions_video(tmp_path / "p.json", [prediction(vid, masks, rels, size=(4 * H, 4 * W))])
    out = tmp_path / "render"
    args = ["render", "--root", str(tmp_path), "--split", "val", "--pred", str(tmp_path / "p.json"), "--out", str(out)]
    assert main([*args, "--frames", "1,5", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0001_4164158586.gif", "frame_0001.png", "frame_0005.png"]
    im = np.asarray(Image.open(out / "frame_0001.png").convert("RGB")).astype(int)
    scale = im.shape[1] // (4 * W)
    assert im.shape[:2] == (4 * H * scale, 4 * W * scale) and scale >= 2
    frame = PVSG(tmp_path, "val").read_frames(vid, [1])[0].astype(int)
    # the adult's pixels (left half) are tinted by the overlay; a background pixel above the ball is not
    assert np.abs(im[scale * 40, scale * 2] - frame[40, 2]).sum() > 60
    assert np.abs(im[scale * 2, scale * (4 * W - 3)] - frame[2, 4 * W - 3]).sum() < 40
    assert main([*args, "--frames", "9", "--quiet"]) == 2
