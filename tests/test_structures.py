import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spade4d import rle
from spade4d.structures import (
    Object2D,
    ObjectTube,
    PointSequence,
    Relation2D,
    Relation4D,
    SceneGraph2D,
    SceneGraph4D,
    StructureError,
    frames_to_spans,
    merge_spans,
    spans_to_frames,
)


def _graph(num_points=(5, 4, 6)):
    rng = np.random.default_rng(0)
    objs = [
        ObjectTube(0, "person", {t: rng.random(n) < 0.5 for t, n in enumerate(num_points)}, score=0.9),
        ObjectTube(7, "chair", {1: np.array([1, 0, 0, 1], bool)}, score=0.4),
    ]
    rels = [Relation4D(0, 7, "sitting on", [(1, 2), (0, 0)], score=0.7)]
    return SceneGraph4D("v", len(num_points), objs, rels, num_points=list(num_points))


def test_point_sequence_offsets_and_frames():
    xyz = [np.zeros((3, 3)), np.ones((0, 3)), np.full((2, 3), 2.0)]
    seq = PointSequence.from_frames(
        xyz, [np.zeros_like(x) for x in xyz], video_id="s", instance=[np.arange(3), np.zeros(0), np.array([5, 6])]
    )
    assert seq.offsets.tolist() == [0, 3, 3, 5]
    assert seq.counts.tolist() == [3, 0, 2]
    assert seq.num_frames == 3
    assert seq.frame(2)["xyz"].tolist() == [[2.0] * 3] * 2
    assert seq.frame(2)["instance"].tolist() == [5, 6]
    assert seq.frame_index().tolist() == [0, 0, 0, 2, 2]
    with pytest.raises(IndexError, match="frame 3"):
        seq.frame(3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(xyz=np.zeros((4, 2)), rgb=np.zeros((4, 2)), offsets=[0, 4]), "xyz has shape"),
        (dict(xyz=np.zeros((4, 3)), rgb=np.zeros((3, 3)), offsets=[0, 4]), "rgb has shape"),
        (dict(xyz=np.zeros((4, 3)), rgb=np.zeros((4, 3)), offsets=[0, 5]), "offsets must rise"),
        (dict(xyz=np.zeros((4, 3)), rgb=np.zeros((4, 3)), offsets=[0, 3, 2, 4]), "offsets must rise"),
        (dict(xyz=np.zeros((4, 3)), rgb=np.zeros((4, 3)), offsets=[0, 4], instance=np.zeros(3)), "instance has"),
    ],
)
def test_point_sequence_validation(kwargs, message):
    with pytest.raises(StructureError, match=message):
        PointSequence(**kwargs, video_id="bad")


def test_graph4d_spans_are_merged_and_sorted():
    g = _graph()
    assert g.relations[0].spans == [(0, 2)]
    assert [r.predicate for r in g.relations_at(2)] == ["sitting on"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda o, r: r.append(Relation4D(0, 99, "on", [(0, 1)])), "object id 99 names no object"),
        (lambda o, r: r.append(Relation4D(0, 7, "on", [(2, 3)])), r"span \[2, 3\] lies outside"),
        (lambda o, r: r.append(Relation4D(0, 7, "on", [(2, 1)])), "ends before it starts"),
        (lambda o, r: r.append(Relation4D(0, 7, "on", [])), "spans \\[\\] is not a non-empty list"),
        (lambda o, r: r.append(Relation4D(0, 7, "on", [(0, 1)], score=math.nan)), "must be finite"),
        (lambda o, r: r.append(Relation4D(0, 7, "", [(0, 1)])), "predicate"),
        (lambda o, r: o.append(ObjectTube(0, "cup")), "appears twice"),
        (lambda o, r: o.append(ObjectTube(3, "cup", {0: np.zeros(4, bool)})), "frame 0 has 4 points, the frame has 5"),
        (lambda o, r: o.append(ObjectTube(3, "cup", {5: np.zeros(4, bool)})), "frame 5, outside"),
    ],
)
def test_graph4d_validation(mutate, message):
    g = _graph()
    objs, rels = list(g.objects), list(g.relations)
    mutate(objs, rels)
    with pytest.raises(StructureError, match=message):
        SceneGraph4D("v", 3, objs, rels, num_points=[5, 4, 6])


def test_graph4d_json_round_trip():
    g = _graph()
    entry = g.to_json()
    assert entry["objects"][0]["masks"]["0"]["size"] == [5, 1]  # point masks are (N, 1) images
    back = SceneGraph4D.from_json("v", entry, num_points=[5, 4, 6])
    assert [o.id for o in back.objects] == [0, 7]
    for a, b in zip(g.objects, back.objects):
        assert a.label == b.label and a.score == pytest.approx(b.score)
        for t in range(3):
            assert np.array_equal(a.mask(t, g.num_points[t]), b.mask(t, g.num_points[t]))
    assert back.relations[0].spans == [(0, 2)] and back.relations[0].score == pytest.approx(0.7)


def test_graph4d_from_json_checks_rle_size_against_frames():
    entry = _graph().to_json()
    with pytest.raises(ValueError, match=r"frame 0: RLE size \[5, 1\] does not match the expected \[6, 1\]"):
        SceneGraph4D.from_json("v", entry, num_points=[6, 4, 6])


def test_graph2d_validation_and_round_trip():
    m = np.zeros((4, 5), bool)
    m[1:3, 2:4] = True
    g = SceneGraph2D("img", 4, 5, [Object2D("cup", m, 0.8), Object2D("table", ~m, 0.5)], [Relation2D(0, 1, "on", 0.6)])
    back = SceneGraph2D.from_json("img", g.to_json())
    assert np.array_equal(back.objects[0].mask, m) and back.labels == ["cup", "table"]
    assert back.relations[0].predicate == "on"
    with pytest.raises(StructureError, match="relation 0 object 5"):
        SceneGraph2D("img", 4, 5, [Object2D("cup", m)], [Relation2D(0, 5, "on")])
    with pytest.raises(StructureError, match="mask has shape"):
        SceneGraph2D("img", 4, 6, [Object2D("cup", m)])


def test_rle_matches_pycocotools_and_rejects_bad_input():
    from pycocotools import mask as mu

    m = np.random.default_rng(1).random((7, 1)) < 0.5
    r = rle.encode_point_mask(m[:, 0])
    assert r["size"] == [7, 1]
    ref = mu.encode(np.asfortranarray(m.astype(np.uint8)))
    assert r["counts"] == ref["counts"].decode()
    assert rle.area(r) == int(m.sum())
    with pytest.raises(rle.RLEError, match="not an RLE dict"):
        rle.decode_mask({"size": [7, 1]})
    with pytest.raises(rle.RLEError, match="size"):
        rle.decode_mask({"size": [7], "counts": "x"})


def test_merge_spans():
    assert merge_spans([(4, 6), (1, 3), (8, 8), (7, 7)]) == [(1, 8)]
    assert merge_spans([(5, 6), (0, 1)]) == [(0, 1), (5, 6)]


@given(st.lists(st.booleans(), min_size=1, max_size=40))
@settings(max_examples=100, deadline=None)
def test_spans_frames_round_trip(on):
    spans = frames_to_spans(on)
    assert spans_to_frames(spans, len(on)).tolist() == list(on)
    assert merge_spans(spans) == spans
