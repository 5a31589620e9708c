import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spade4d.evaluation import Evaluator4D, Options4D, PredictionFile4D, PredictionFileError, write_predictions_4d
from spade4d.evaluation.metrics_4d import match_sequence
from spade4d.evaluation.reference import match_sequence_reference
from spade4d.structures import ObjectTube, Relation4D, SceneGraph4D

B = lambda *bits: np.array(bits, dtype=bool)  # noqa: E731
PERSON, CHAIR = B(1, 1, 0, 0), B(0, 0, 1, 1)


def gt_graph(rels=None, vid="v"):
    """4 frames of 4 points; the chair's mask is empty on frame 3 (so frame 3 never counts as a GT frame)."""
    objs = [
        ObjectTube(1, "person", {t: PERSON for t in range(4)}),
        ObjectTube(2, "chair", {t: CHAIR for t in range(3)}),
    ]
    rels = rels if rels is not None else [Relation4D(1, 2, "sitting on", [(0, 3)])]
    return SceneGraph4D(vid, 4, objs, rels, num_points=[4] * 4)


def pred_graph(rels, extra=(), vid="v"):
    objs = [
        ObjectTube(10, "person", {t: PERSON for t in range(4)}, 0.9),
        ObjectTube(11, "chair", {t: CHAIR for t in range(4)}, 0.9),
        ObjectTube(12, "chair", {t: B(1, 0, 0, 0) for t in range(4)}, 0.5),
        *extra,
    ]
    return SceneGraph4D(vid, 4, objs, rels, num_points=[4] * 4)


def run(gt, pred, **kw):
    opts = Options4D(**{"ks": (1, 2, 3), **kw})
    ev = Evaluator4D(opts)
    for g, p in zip(gt if isinstance(gt, list) else [gt], pred if isinstance(pred, list) else [pred]):
        ev.process(g, p)
        key = lambda o: (o.rank, o.span_free_rank, o.weak_hits)  # noqa: E731
        assert [key(o) for o in match_sequence(g, p, opts)] == [key(o) for o in match_sequence_reference(g, p, opts)]
    return ev.evaluate()


def test_first_qualifying_prediction_wins():
    pred = pred_graph(
        [
            Relation4D(10, 2 + 10, "sitting on", [(0, 3)], 0.9),  # wrong chair: vIoU 0
            Relation4D(10, 11, "sitting on", [(0, 3)], 0.8),  # the hit, rank 1
            Relation4D(10, 11, "sitting on", [(0, 1)], 0.7),
        ]
    )
    m = run(gt_graph(), pred)
    assert (m["R@1"], m["R@2"], m["R@3"]) == (0.0, 100.0, 100.0)


def test_gt_frames_with_empty_mask_are_excluded():
    # GT span 0..3 but the chair is empty on frame 3: gt_frames = {0, 1, 2}; predicting 1..2 covers 2/3 >= 0.5
    m = run(gt_graph(), pred_graph([Relation4D(10, 11, "sitting on", [(1, 2)], 0.9)]))
    assert m["R@1"] == 100.0
    # predicting 0..0 covers 1/3: a miss at vIoU 0.5 but a weak hit at 0.1
    m = run(gt_graph(), pred_graph([Relation4D(10, 11, "sitting on", [(0, 0)], 0.9)]))
    assert (m["R@1"], m["wR@1"]) == (0.0, 100.0)


def test_extra_predicted_frames_are_not_penalised_unless_asked():
    gt = gt_graph([Relation4D(1, 2, "sitting on", [(0, 0)])])
    pred = pred_graph([Relation4D(10, 11, "sitting on", [(0, 3)], 0.9)])
    assert run(gt, pred)["R@1"] == 100.0  # 1 / |{0}|
    assert run(gt, pred, penalize_extra_frames=True)["R@1"] == 0.0  # 1 / |{0, 1, 2, 3}| = 0.25


def test_span_free_recall_ignores_the_predicted_span():
    # gt_frames = {0, 1, 2}; the masks match on all of them but the span covers only frame 3 (no GT frame) or 0
    for span, strong in (((3, 3), 0.0), ((0, 0), 0.0), ((0, 1), 100.0)):
        m = run(gt_graph(), pred_graph([Relation4D(10, 11, "sitting on", [span], 0.9)]))
        assert (m["R@1"], m["sfR@1"]) == (strong, 100.0)
    # the wrong chair matches on no frame, whatever its span; a wrong predicate is no span-free hit either
    m = run(gt_graph(), pred_graph([Relation4D(10, 12, "sitting on", [(0, 3)], 0.9)]))
    assert m["sfR@3"] == 0.0
    assert run(gt_graph(), pred_graph([Relation4D(10, 11, "beside", [(0, 3)], 0.9)]))["sfR@3"] == 0.0


def test_openpvsg_weak_recall_counts_every_weak_hit_up_to_the_first_strong_one():
    # gt_frames = {0, 1, 2}; spans (0, 0) give vIoU 1/3 (weak), (0, 2) gives 1 (strong)
    rels = [
        Relation4D(10, 11, "sitting on", [(0, 0)], 0.9),  # rank 0: weak
        Relation4D(10, 11, "beside", [(0, 2)], 0.85),  # rank 1: another predicate, no hit of any kind
        Relation4D(10, 11, "sitting on", [(1, 1)], 0.8),  # rank 2: weak
        Relation4D(10, 11, "sitting on", [(0, 2)], 0.7),  # rank 3: strong (also a weak hit)
        Relation4D(10, 11, "sitting on", [(2, 2)], 0.6),  # rank 4: weak, after the strong hit: not counted
    ]
    ours = run(gt_graph(), pred_graph(rels), ks=(1, 3, 5))
    assert (ours["wR@1"], ours["wR@5"], ours["R@3"], ours["R@5"]) == (100.0, 100.0, 0.0, 100.0)
    theirs = run(gt_graph(), pred_graph(rels), openpvsg_weak=True, ks=(1, 3, 5))
    assert [theirs[f"wR@{k}"] for k in (1, 3, 5)] == [100.0, 200.0, 300.0]
    assert theirs["wmR@5"] == 300.0 and theirs["R@5"] == ours["R@5"] and "wmR@5" not in ours
    # a second GT relation (another predicate) that nothing hits halves the means over predicates
    gt = gt_graph([Relation4D(1, 2, "sitting on", [(0, 2)]), Relation4D(1, 2, "under", [(0, 2)])])
    both = run(gt, pred_graph(rels), openpvsg_weak=True, ks=(5,))
    assert (both["wR@5"], both["wmR@5"]) == (150.0, 150.0)


def test_one_gt_with_several_spans_counts_once():
    gt = gt_graph([Relation4D(1, 2, "sitting on", [(0, 0), (2, 2)])])
    m = run(gt, pred_graph([Relation4D(10, 11, "sitting on", [(0, 0)], 0.9)]))  # covers 1 of 2 GT frames
    assert m["num_gt_relations"] == 1 and m["R@1"] == 100.0


def test_mask_iou_threshold_is_inclusive_and_class_comes_from_label():
    half = ObjectTube(13, "person", {t: B(1, 0, 0, 0) for t in range(4)})  # IoU with PERSON = 1/2
    m = run(gt_graph(), pred_graph([Relation4D(13, 11, "sitting on", [(0, 3)], 0.9)], extra=[half]))
    assert m["R@1"] == 100.0
    dog = ObjectTube(14, "dog", {t: PERSON for t in range(4)})
    m = run(gt_graph(), pred_graph([Relation4D(14, 11, "sitting on", [(0, 3)], 0.9)], extra=[dog]))
    assert m["R@3"] == 0.0 and m["PR@3"] == 0.0


def test_graph_constraint_and_top_pairs():
    rels = [Relation4D(10, 11, "beside", [(0, 3)], 0.9), Relation4D(10, 11, "sitting on", [(0, 3)], 0.8)]
    assert run(gt_graph(), pred_graph(rels))["R@2"] == 100.0  # no graph constraint by default
    assert run(gt_graph(), pred_graph(rels), graph_constraint=True)["R@3"] == 0.0
    assert run(gt_graph(), pred_graph(rels))["PR@1"] == 100.0  # the pair is found at rank 0 with any predicate
    rels = [Relation4D(10, 12, "beside", [(0, 3)], 0.9), Relation4D(10, 11, "sitting on", [(0, 3)], 0.8)]
    assert run(gt_graph(), pred_graph(rels), top_pairs=1)["R@3"] == 0.0
    assert run(gt_graph(), pred_graph(rels), top_pairs=2)["R@3"] == 100.0


def test_mean_recall_averages_over_predicates_with_gt_and_recall_is_micro():
    gt1 = gt_graph([Relation4D(1, 2, "sitting on", [(0, 2)]), Relation4D(1, 2, "beside", [(0, 2)])], vid="a")
    p1 = pred_graph([Relation4D(10, 11, "sitting on", [(0, 2)], 0.9)], vid="a")
    gt2 = gt_graph([Relation4D(1, 2, "sitting on", [(0, 2)]), Relation4D(2, 1, "beside", [(0, 2)])], vid="b")
    m = run([gt1, gt2], [p1, None])
    # hits: 1 of 4 GT relations (micro: 25; a per-sequence mean would give 25 too: (50 + 0) / 2)
    assert m["R@3"] == 25.0
    # per predicate: sitting on 1/2, beside 0/2 -> mR = 25; a predicate without GT is not averaged in
    assert m["mR@3"] == 25.0
    assert m["per_predicate"]["sitting on"]["R@3"] == 50.0
    gt3 = gt_graph([Relation4D(1, 2, "sitting on", [(0, 2)])] * 1, vid="c")
    m = run([gt1, gt3], [p1, pred_graph([Relation4D(10, 11, "sitting on", [(0, 2)], 0.9)], vid="c")])
    assert m["R@3"] == pytest.approx(100 * 2 / 3)  # micro over 3 GT, not the mean of 50 and 100
    assert m["mR@3"] == pytest.approx(50.0)  # sitting on 2/2, beside 0/1


# -- properties over random inputs ---------------------------------------------------------------------------


@st.composite
def random_case(draw):
    T = draw(st.integers(1, 5))
    counts = [draw(st.integers(1, 10)) for _ in range(T)]
    labels = ["a", "b", "c"]
    preds = ["p", "q"]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))

    def objects(ids, density):
        return [
            ObjectTube(
                i,
                str(rng.choice(labels)),
                {t: rng.random(counts[t]) < density for t in range(T) if rng.random() < 0.85},
            )
            for i in ids
        ]

    def relations(ids, n, scored):
        out = []
        for _ in range(n):
            s, o = (ids[int(i)] for i in rng.choice(len(ids), 2, replace=len(ids) < 2))
            spans = [tuple(int(x) for x in sorted(rng.integers(0, T, 2))) for _ in range(rng.integers(1, 3))]
            out.append(
                Relation4D(int(s), int(o), str(rng.choice(preds)), spans, float(rng.random()) if scored else 1.0)
            )
        return out

    # object ids are keys of any size or sign (0 next to 2**32, negatives, int64's ends), never array offsets
    any_id = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1, 2**32, 2**32 + 1, -1, 2**63 - 1, -(2**63)])
    g_ids = draw(st.lists(any_id, min_size=3, max_size=3, unique=True))
    p_ids = draw(st.lists(any_id, min_size=4, max_size=4, unique=True))
    gobj = objects(g_ids, 0.5)
    gt = SceneGraph4D("s", T, gobj, relations(g_ids, draw(st.integers(0, 5)), False), counts)
    pobj = objects(p_ids, 0.5)
    pred = SceneGraph4D("s", T, pobj, relations(p_ids, draw(st.integers(0, 12)), True), counts)
    return gt, pred


@given(
    random_case(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, 2, 100]),
    st.sampled_from([(0.5, 0.1, 0.5), (0.3, 0.6, 0.5), (1.0, 1.0, 0.3), (0.5, 0.1, 1.0)]),
)
@settings(max_examples=200, deadline=None)
def test_fast_path_equals_the_reference_loop(case, gc, pen, top, thresholds):
    gt, pred = case
    viou, weak, iou = thresholds  # including a weak threshold above the strong one (the fast path's pruning)
    opts = Options4D(
        graph_constraint=gc,
        penalize_extra_frames=pen,
        top_pairs=top,
        viou_threshold=viou,
        weak_viou_threshold=weak,
        mask_iou_threshold=iou,
    )
    fast, ref = match_sequence(gt, pred, opts), match_sequence_reference(gt, pred, opts)
    key = lambda o: (o.rank, o.weak_rank, o.pair_rank, o.span_free_rank, o.weak_hits)  # noqa: E731
    assert [key(o) for o in fast] == [key(o) for o in ref]


@given(random_case())
@settings(max_examples=80, deadline=None)
def test_recall_properties(case):
    gt, pred = case
    opts = Options4D(ks=(1, 2, 5, 20, 100))
    m = Evaluator4D(opts)
    m.process(gt, pred)
    r = m.evaluate()
    for kind in ("R", "mR", "wR", "sfR", "PR"):
        vals = [r[f"{kind}@{k}"] for k in opts.ks]
        assert vals == sorted(vals) and all(0 <= v <= 100 for v in vals)
    assert r["R@100"] <= r["wR@100"] and r["R@100"] <= r["PR@100"]
    if not opts.penalize_extra_frames:
        assert r["R@100"] <= r["sfR@100"]  # a span can only take frames away
    empty = Evaluator4D(opts)
    empty.process(gt, None)
    assert all(empty.evaluate()[f"R@{k}"] == 0 for k in opts.ks)
    # the ground truth as its own prediction recalls every GT relation whose objects are both visible in its span
    perfect = Evaluator4D(opts)
    out = perfect.process(gt, gt)
    for o, rel in zip(out, gt.relations):
        visible = any(
            gt.object_by_id()[rel.subject].mask(t, gt.num_points[t]).any()
            and gt.object_by_id()[rel.object].mask(t, gt.num_points[t]).any()
            for s, e in rel.spans
            for t in range(s, e + 1)
        )
        assert (o.rank is not None) == visible


# -- the synthetic split and the CLI ---------------------------------------------------------------------------


def test_synthetic_split_scores_100_against_itself_and_0_when_empty(synthetic_root, tmp_path, capsys):
    from spade4d.cli import main
    from spade4d.data.psg4d import PSG4DPointCloud

    ds = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")
    write_predictions_4d(tmp_path / "gt.json", (g for _, g in ds))
    assert (
        main(
            [
                "evaluate-4d",
                "--format",
                "synthetic",
                "--root",
                str(synthetic_root),
                "--pred",
                str(tmp_path / "gt.json"),
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["num_gt_relations"] > 0
    for key in ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100"):
        assert m[key] == 100.0
    assert m["options"]["viou_threshold"] == 0.5 and (tmp_path / "m_per_predicate.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "R " in out and f"wrote {tmp_path / 'm_timeline.png'}" in out
    assert (tmp_path / "m_timeline.png").stat().st_size > 1000 and m["labels_outside_vocabulary"]["objects"] == 0
    write_predictions_4d(tmp_path / "empty.json", [])
    assert (
        main(
            [
                "evaluate-4d",
                "--format",
                "psg4d-pc",
                "--root",
                str(synthetic_root / "psg4d_pc"),
                "--pred",
                str(tmp_path / "empty.json"),
                "--out",
                str(tmp_path / "e.json"),
                "--quiet",
            ]
        )
        == 0
    )
    e = json.loads((tmp_path / "e.json").read_text())
    assert all(e[k] == 0.0 for k in ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100"))


def _file(tmp_path, seq_entry, **top):
    data = {"format": "spade4d-predictions-4d", "version": 1, "sequences": {"v": seq_entry}, **top}
    p = tmp_path / "p.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e["relations"][0].update(object=99), "sequence 'v'.*relation 0 object id 99 names no object"),
        (lambda e: e["relations"][0].update(spans=[[2, 9]]), r"sequence 'v'.*span \[2, 9\] lies outside"),
        (lambda e: e["relations"][0].update(score=float("nan")), r"sequence 'v'.*relations\[0\]\.score is nan"),
        (lambda e: e["objects"][0].update(score="high"), r"sequence 'v'.*objects\[0\]\.score is 'high'"),
        (lambda e: e["objects"][0]["masks"]["0"].update(size=[5, 1]), r"frame 0: RLE size \[5, 1\] does not match"),
        (lambda e: e.update(num_frames=3), "field 'num_frames' is 3, the sequence has 4 frames"),
        (lambda e: e["relations"][0].pop("predicate"), r"sequence 'v'.*relations\[0\] has no 'predicate'"),
    ],
)
def test_malformed_prediction_files_name_sequence_and_field(tmp_path, mutate, message):
    entry = pred_graph([Relation4D(10, 11, "sitting on", [(0, 3)], 0.9)]).to_json()
    mutate(entry)
    pf = PredictionFile4D(_file(tmp_path, entry))
    with pytest.raises(PredictionFileError, match=message):
        pf.get("v", [4, 4, 4, 4])


def test_wrong_format_or_version(tmp_path):
    entry = pred_graph([]).to_json()
    with pytest.raises(PredictionFileError, match="field 'format' is 'x'"):
        PredictionFile4D(_file(tmp_path, entry, format="x"))
    with pytest.raises(PredictionFileError, match="field 'version' is 2"):
        PredictionFile4D(_file(tmp_path, entry, version=2))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PredictionFileError, match="bad.json: not valid JSON"):
        PredictionFile4D(tmp_path / "bad.json")


def test_labels_outside_the_vocabulary_are_counted_and_warned(synthetic_root, tmp_path, capsys):
    from dataclasses import replace

    from spade4d.cli import main
    from spade4d.data.psg4d import PSG4DPointCloud

    _, graph = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")[0]
    renamed = replace(graph, objects=[replace(o, label="teapot") for o in graph.objects[:2]] + graph.objects[2:])
    pred = write_predictions_4d(tmp_path / "p.json", [renamed])
    argv = ["evaluate-4d", "--root", str(synthetic_root / "psg4d_pc"), "--pred", str(pred)]
    assert main([*argv, "--out", str(tmp_path / "m.json"), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"spade4d: warning: {pred}: 2 predicted objects and 0 relations")
    assert "'teapot'" in err[0]
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["labels_outside_vocabulary"] == {"objects": 2, "relations": 0, "names": {"teapot": 2}}


def test_recall_splits_into_unseen_and_seen_relations(synthetic_root, tmp_path, capsys):
    from dataclasses import replace

    from spade4d.cli import main
    from spade4d.data.psg4d import PSG4DPointCloud
    from spade4d.evaluation.run import relations_with_names

    ds = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")
    graphs = [g for _, g in ds]
    # one GT relation per sequence picked as "unseen" by its predicate; the prediction keeps only the seen ones
    unseen_p = sorted({g.relations[0].predicate for g in graphs if g.relations})[:1]
    seen_only = [relations_with_names(g, [], unseen_p, touching=False) for g in graphs]
    n_unseen = sum(len(relations_with_names(g, [], unseen_p).relations) for g in graphs)
    assert n_unseen > 0 and all(r.predicate not in unseen_p for g in seen_only for r in g.relations)
    write_predictions_4d(tmp_path / "p.json", [replace(g) for g in seen_only])
    argv = ["evaluate-4d", "--root", str(synthetic_root / "psg4d_pc"), "--pred", str(tmp_path / "p.json")]
    assert main([*argv, "--out", str(tmp_path / "m.json"), "--oov-predicates", ",".join(unseen_p)]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["oov"] == {"R@20": 0.0, "R@50": 0.0, "R@100": 0.0, "num_gt_relations": n_unseen}
    assert m["in_vocabulary"]["R@50"] == 100.0
    assert m["oov"]["num_gt_relations"] + m["in_vocabulary"]["num_gt_relations"] == m["num_gt_relations"]
    assert f"R@50 0.00 on the {n_unseen} GT relations with a name training never showed" in capsys.readouterr().out
