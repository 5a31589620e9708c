import json

import numpy as np
import pytest

from spade4d.evaluation import Evaluator2D, Options2D, write_predictions_2d
from spade4d.structures import Object2D, Relation2D, SceneGraph2D

VOCAB = ["on", "beside", "holding", "under"]


def masks():
    a = np.zeros((8, 8), bool)
    a[:4, :4] = True
    b = np.zeros((8, 8), bool)
    b[4:, 4:] = True
    return a, b


def gt(image_id="i", rels=(("on",),)):
    a, b = masks()
    return SceneGraph2D(
        image_id, 8, 8, [Object2D("cup", a), Object2D("table", b)], [Relation2D(0, 1, r[0]) for r in rels]
    )


def pred(rels, shift=0, image_id="i"):
    a, b = masks()
    a = np.roll(a, shift, axis=1)
    return SceneGraph2D(
        image_id, 8, 8, [Object2D("cup", a, 0.9), Object2D("table", b, 0.9)], [Relation2D(0, 1, p, s) for p, s in rels]
    )


def run(pairs, **kw):
    ev = Evaluator2D(VOCAB, Options2D(ks=(1, 2, 20), **kw))
    for g, p in pairs:
        ev.process(g, p)
    return ev.evaluate()


def test_recall_is_a_mean_over_images():
    m = run(
        [
            (gt("a"), pred([("on", 0.9)], image_id="a")),
            (gt("b", rels=(("on",), ("beside",))), pred([("holding", 0.9)], image_id="b")),
        ]
    )
    assert m["R@20"] == 50.0  # (1/1 + 0/2) / 2, not 1/3


def test_mean_recall_divides_by_the_whole_vocabulary():
    m = run([(gt(), pred([("on", 0.9)]))])
    assert m["R@20"] == 100.0 and m["mR@20"] == 25.0  # 'on' recalled, 3 predicates absent from the GT count 0


def test_mask_iou_threshold():
    # shifting the cup by 2 columns: IoU = 8 / 24 < 0.5; by 1 column: 12 / 20 = 0.6
    assert run([(gt(), pred([("on", 0.9)], shift=2))])["R@20"] == 0.0
    assert run([(gt(), pred([("on", 0.9)], shift=1))])["R@20"] == 100.0


def test_graph_constraint_keeps_the_best_predicate_per_pair():
    rels = [("beside", 0.9), ("on", 0.8)]
    assert run([(gt(), pred(rels))])["R@20"] == 0.0
    m = run([(gt(), pred(rels))], graph_constraint=False)
    assert (m["R@1"], m["R@2"]) == (0.0, 100.0)


def test_images_without_predictions_score_zero_unless_skipped():
    pairs = [(gt("a"), pred([("on", 0.9)], image_id="a")), (gt("b"), None)]
    assert run(pairs)["R@20"] == 50.0
    m = run(pairs, skip_empty=True)
    assert m["R@20"] == 100.0 and m["num_images"] == 1


def test_box_iou_for_box_only_data():
    a, b = masks()
    ring = a.copy()
    ring[1:3, 1:3] = False  # same box as a, mask IoU 12/16 = .75
    hollow = np.zeros_like(a)
    hollow[0, :4] = hollow[3, :4] = True  # same box, mask IoU 8/16 = .5, box IoU 1
    p = SceneGraph2D("i", 8, 8, [Object2D("cup", hollow), Object2D("table", b)], [Relation2D(0, 1, "on", 0.5)])
    assert run([(gt(), p)], iou_type="box")["R@20"] == 100.0
    hollow[1, 0] = False
    hollow[0, 1:3] = False
    assert run([(gt(), p)])["R@20"] == 0.0  # mask IoU 5/16 fails, the box is unchanged
    assert run([(gt(), p)], iou_type="box")["R@20"] == 100.0


def test_per_triplet_masks_only_when_single_mask_is_off():
    a, b = masks()
    bad = SceneGraph2D(
        "i", 8, 8, [Object2D("cup", np.roll(a, 3, 1)), Object2D("table", b)], [Relation2D(0, 1, "on", 0.5)]
    )
    trip = {0: (a, b)}
    ev = Evaluator2D(VOCAB, Options2D())
    ev.process(gt(), bad, trip)
    assert ev.evaluate()["R@20"] == 0.0
    ev = Evaluator2D(VOCAB, Options2D(single_mask_per_object=False))
    ev.process(gt(), bad, trip)
    assert ev.evaluate()["R@20"] == 100.0


def test_synthetic_2d_split_scores_100_against_itself(synthetic_root, tmp_path):
    from spade4d.cli import main
    from spade4d.data.psg import PSGDataset

    psg = synthetic_root / "psg"
    ds = PSGDataset(psg / "psg.json", psg, "test")
    assert len(ds) > 0
    write_predictions_2d(tmp_path / "gt.json", ds)
    common = [
        "evaluate-2d",
        "--psg-json",
        str(psg / "psg.json"),
        "--coco-root",
        str(psg),
        "--pred",
        str(tmp_path / "gt.json"),
        "--quiet",
    ]
    # the synthetic GT has pairs with several predicates: the graph constraint keeps one of them
    assert main([*common, "--out", str(tmp_path / "gc.json")]) == 0
    gc = json.loads((tmp_path / "gc.json").read_text())
    pairs = [len({(r.subject, r.object) for r in g.relations}) / len(g.relations) for g in ds]
    assert gc["R@100"] == pytest.approx(100.0 * float(np.mean(pairs)))
    assert main([*common, "--no-graph-constraint", "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["R@20"] == m["R@100"] == 100.0
    present = {p for p, v in m["per_predicate"].items() if v["images"]}
    assert m["mR@100"] == pytest.approx(100.0 * len(present) / len(ds.predicates))
    write_predictions_2d(tmp_path / "empty.json", [])
    assert (
        main(
            [
                "evaluate-2d",
                "--psg-json",
                str(psg / "psg.json"),
                "--coco-root",
                str(psg),
                "--pred",
                str(tmp_path / "empty.json"),
                "--out",
                str(tmp_path / "e.json"),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "e.json").read_text())["R@100"] == 0.0
