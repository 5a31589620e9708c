import numpy as np
from PIL import Image

from spade4d.data.psg4d import PSG4DPointCloud
from spade4d.viz.render import render_sequence


def test_render_writes_non_blank_images_of_the_right_size(synthetic_root, tmp_path):
    ds = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")
    points, graph = ds[0]
    out = render_sequence(points, graph, tmp_path / "r", width=320, height=240, frames=[0, 3], progress=False)
    assert [p.name for p in out["frames"]] == ["frame_000.png", "frame_003.png"]
    img = np.asarray(Image.open(out["frames"][0]).convert("RGB"))
    assert img.shape == (240, 320 + 320, 3)  # the view plus the relation panel
    view = img[:, :320].astype(float)
    assert view.std() > 10  # points were drawn, not a blank canvas
    # object colours appear: some pixels are strongly saturated (things), not only grey/white
    sat = view.max(-1) - view.min(-1)
    assert (sat > 80).mean() > 0.002
    gif = Image.open(out["gif"])
    assert gif.n_frames == 2 and gif.size == (640, 240)


def _graph(objects, relations, T=4, n=6):
    from spade4d.structures import ObjectTube, Relation4D, SceneGraph4D

    tubes = [ObjectTube(oid, label, {t: np.isin(np.arange(n), pts) for t in range(T)}) for oid, label, pts in objects]
    rels = [Relation4D(s, o, p, spans, score) for s, o, p, spans, score in relations]
    return SceneGraph4D("v", T, tubes, rels, [n] * T)


def test_figures_choose_relations_ids_and_views():
    import pytest

    from spade4d.viz.figures import (
        UNMATCHED_OFFSET,
        FigureOptions,
        frame_relations,
        in_ground_truth_ids,
        match_to_ground_truth,
        relation_tag,
        view_direction,
    )

    gt = _graph([(5, "person", [0, 1, 2]), (9, "chair", [3, 4])], [(5, 9, "sitting on", [(0, 3)], 1.0)])
    pred = _graph(
        [(1, "person", [0, 1, 2]), (2, "chair", [3, 4, 5]), (3, "lamp", [])],
        [
            (1, 2, "sitting on", [(1, 3)], 0.9),
            (1, 2, "beside", [(0, 3)], 0.6),  # a second predicate of the same pair keeps its own tag
            (2, 1, "on", [(0, 0)], 0.3),
            (1, 3, "holding", [(0, 3)], 0.05),
        ],
    )
    # chair: IoU 2/3 per frame -> matched; the lamp has no points -> unmatched
    assert match_to_ground_truth(pred, gt) == {1: 5, 2: 9, 3: None}
    drawn = in_ground_truth_ids(pred, gt)
    assert [(o.id, o.label) for o in drawn.objects] == [(5, "person"), (9, "chair"), (UNMATCHED_OFFSET + 3, "lamp?")]
    assert [(r.subject, r.object) for r in drawn.relations][:2] == [(5, 9), (5, 9)]
    opts = FigureOptions(top_k=2, min_score=0.1)
    assert [r.predicate for r in frame_relations(drawn, 0, opts)] == ["beside", "on"]  # 'sitting on' starts at 1
    assert [r.predicate for r in frame_relations(drawn, 2, opts)] == ["sitting on", "beside"]  # top 2 of 2 (0.05 out)
    assert relation_tag(drawn.relations[0], opts, scored=True) == "sitting on 0.90"
    assert relation_tag(drawn.relations[0], opts, scored=False) == "sitting on"
    assert view_direction("orbit", 0, 8) != view_direction("orbit", 4, 8) and view_direction("top", 3, 8)[2] == 1.0
    with pytest.raises(ValueError, match="view"):
        FigureOptions(view="above")
    with pytest.raises(ValueError, match="top_k"):
        FigureOptions(top_k=0)


def test_relation_timeline_has_a_row_per_relation(tmp_path):
    from spade4d.viz.figures import FigureOptions, relation_timeline

    gt = _graph([(1, "person", [0]), (2, "chair", [1])], [(1, 2, "sitting on", [(0, 1), (3, 3)], 1.0)])
    pred = _graph(
        [(1, "person", [0]), (2, "chair", [1])], [(1, 2, "sitting on", [(0, 2)], 0.8), (2, 1, "on", [(1, 1)], 0.4)]
    )
    one = Image.open(relation_timeline(tmp_path / "a.png", gt, None, FigureOptions()))
    two = Image.open(relation_timeline(tmp_path / "b.png", gt, pred, FigureOptions()))
    assert two.size[1] > one.size[1]  # the prediction's extra relation adds a row
    top1 = Image.open(relation_timeline(tmp_path / "c.png", gt, pred, FigureOptions(top_k=1)))
    assert top1.size == one.size


def test_render_command_draws_a_prediction_in_ground_truth_ids(synthetic_root, tmp_path, capsys):
    from spade4d.cli import main

    root = synthetic_root / "psg4d_pc"
    points, graph = PSG4DPointCloud(root, "test")[0]
    from dataclasses import replace

    from spade4d.evaluation.predictions import write_predictions_4d

    # the ground truth written as a prediction, its objects renumbered
    renumbered = replace(
        graph,
        objects=[replace(o, id=o.id + 100) for o in graph.objects],
        relations=[replace(r, subject=r.subject + 100, object=r.object + 100) for r in graph.relations],
    )
    pred = write_predictions_4d(tmp_path / "pred.json", [renumbered])
    argv = ["render", "--root", str(root), "--pred", str(pred), "--out", str(tmp_path / "r")]
    argv += ["--frames", "0,2", "--width", "200", "--height", "160", "--top-k", "3", "--view", "orbit"]
    assert main(argv) == 0
    assert "relation_timeline.png" in capsys.readouterr().out
    assert (tmp_path / "r" / "frame_002.png").is_file() and (tmp_path / "r" / "relation_timeline.png").is_file()
    from spade4d.evaluation.predictions import load_predictions_4d
    from spade4d.viz.figures import in_ground_truth_ids

    back = load_predictions_4d(pred, {graph.video_id: points.counts.tolist()})[graph.video_id]
    assert sorted(o.id for o in in_ground_truth_ids(back, graph).objects) == sorted(o.id for o in graph.objects)


def renumbered_prediction(graph, tmp_path):
    """The ground truth written as a prediction file, its objects renumbered and its relations scored."""
    from dataclasses import replace

    from spade4d.evaluation.predictions import write_predictions_4d

    pred = replace(
        graph,
        objects=[replace(o, id=o.id + 100) for o in graph.objects],
        relations=[
            replace(r, subject=r.subject + 100, object=r.object + 100, score=1.0 - 0.01 * i)
            for i, r in enumerate(graph.relations)
        ],
    )
    return write_predictions_4d(tmp_path / "pred.json", [pred])


def test_view_writes_a_rerun_recording_that_reads_back(synthetic_root, tmp_path, capsys):
    from spade4d.cli import main
    from spade4d.viz.figures import FigureOptions, frame_relations
    from spade4d.viz.viewer import read_recording

    root = synthetic_root / "psg4d_pc"
    points, graph = PSG4DPointCloud(root, "test")[0]
    pred = renumbered_prediction(graph, tmp_path)
    rrd = tmp_path / "seq.rrd"
    argv = ["view", "--root", str(root), "--pred", str(pred), "--out", str(rrd), "--top-k", "2", "--no-open"]
    assert main(argv) == 0
    assert f"wrote {rrd} ({graph.num_frames} frames; ground truth and prediction)" in capsys.readouterr().out
    rec = read_recording(rrd)
    T = graph.num_frames
    for side in ("ground_truth", "prediction"):
        for part in ("points", "objects", "relations"):
            assert sorted(rec[f"/{side}/{part}"]) == list(range(T)), (side, part)
    for t in range(T):
        shown = {f"{o.label}#{o.id}" for o in graph.objects if o.masks[t].any()}
        # the prediction matches the GT exactly: drawn with the GT objects' ids
        assert set(rec["/ground_truth/objects"][t]) == set(rec["/prediction/objects"][t]) == shown
        expected = [r.predicate for r in frame_relations(graph, t, FigureOptions(top_k=2))]
        assert len(rec["/ground_truth/relations"][t]) <= 2
        assert sorted(rec["/ground_truth/relations"][t]) == sorted(expected)
        tags = rec["/prediction/relations"][t]
        assert [tag.rsplit(" ", 1)[0] for tag in tags] == expected and all(
            float(x.rsplit(" ", 1)[1]) > 0.9 for x in tags
        )
    assert sum(len(v) for v in rec["/ground_truth/relations"].values()) > 0
    assert main(["view", "--root", str(root), "--out", str(tmp_path / "gt.rrd"), "--no-open", "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet: nothing but warnings and errors
    assert not any(k.startswith("/prediction") for k in read_recording(tmp_path / "gt.rrd"))


def test_quiet_render_leaves_nothing_on_the_terminal_not_even_filament(synthetic_root, tmp_path, capfd):
    from spade4d.cli import main

    argv = ["render", "--root", str(synthetic_root / "psg4d_pc"), "--out", str(tmp_path / "r"), "--frames", "0"]
    assert main([*argv, "--width", "120", "--height", "96", "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # Open3D's and Filament's C++ lines included (they bypass Python)
    assert (tmp_path / "r" / "frame_000.png").is_file()


def test_view_keeps_relations_of_objects_hidden_on_the_frame(tmp_path):
    """A chair seen only on frame 0 still takes part in a relation on frames 1-2: the arrow ends where it was last
    seen, labelled hidden; a lamp never seen has no place, so its relation is left out."""
    from spade4d.structures import ObjectTube, PointSequence, Relation4D, SceneGraph4D
    from spade4d.viz.viewer import object_anchors, read_recording, write_recording

    T, n = 3, 6
    xyz = np.concatenate([np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 10 * t for t in range(T)])
    points = PointSequence(xyz, np.zeros_like(xyz), np.arange(T + 1) * n, "v")
    person = ObjectTube(5, "person", {t: np.isin(np.arange(n), [0, 1, 2]) for t in range(T)})
    chair = ObjectTube(9, "chair", {0: np.isin(np.arange(n), [3, 4, 5])} | {t: np.zeros(n, bool) for t in (1, 2)})
    lamp = ObjectTube(4, "lamp", {t: np.zeros(n, bool) for t in range(T)})
    rels = [Relation4D(5, 9, "sitting on", [(0, 2)], 1.0), Relation4D(5, 4, "looking at", [(0, 2)], 1.0)]
    graph = SceneGraph4D("v", T, [person, chair, lamp], rels, [n] * T)

    seen, anchors = zip(*object_anchors(points, graph))
    assert [sorted(c) for c in seen] == [[5, 9], [5], [5]]
    assert [sorted(a) for a in anchors] == [[5, 9]] * T  # the lamp has no place
    np.testing.assert_allclose(anchors[2][9], np.median(xyz[3:6], axis=0))  # frame 0's chair
    np.testing.assert_allclose(anchors[2][5], np.median(xyz[12 + 0 : 12 + 3], axis=0))  # frame 2's person

    rec = read_recording(write_recording(tmp_path / "v.rrd", points, ground_truth=graph))
    assert rec["/ground_truth/relations"] == {t: ["sitting on"] for t in range(T)}
    assert sorted(rec["/ground_truth/objects"][0]) == ["chair#9", "person#5"]
    assert sorted(rec["/ground_truth/objects"][1]) == ["chair#9 (hidden)", "person#5"]
