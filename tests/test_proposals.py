"""The 2D core's proposals for unseen objects (spade4d/inference/proposals.py): lifting through a hand-made
camera, association across frames, naming, the merge with the 4D tubes and the relations over them."""

import numpy as np
import pytest

from spade4d.inference.proposals import (
    Proposal,
    ProposalOptions,
    associate,
    frame_proposals,
    fuse_names,
    merge_tubes,
    name_tubes,
    rename_unseen,
    tube_relations,
    visible_points,
)
from spade4d.structures import ObjectTube

K = np.array([[100.0, 0.0, 40.0], [0.0, 100.0, 30.0], [0.0, 0.0, 1.0]])  # 80 x 60 image, pixel centres integer
H, W = 60, 80


def at_pixel(u, v, z):
    """The camera-frame point that projects onto pixel centre (u, v) at depth z."""
    return [(u - 40.0) * z / 100.0, (v - 30.0) * z / 100.0, z]


def test_lifting_takes_the_visible_points_inside_the_mask():
    xyz = np.array(
        [
            at_pixel(10, 10, 2.0),  # 0: inside the mask
            at_pixel(12, 11, 3.0),  # 1: inside
            at_pixel(10, 10, 4.0),  # 2: same pixel as 0, 2 m behind it: hidden
            at_pixel(50, 40, 2.0),  # 3: outside the mask
            [0.0, 0.0, -1.0],  # 4: behind the camera
            at_pixel(100, 10, 2.0),  # 5: outside the image
            at_pixel(11.4, 10.4, 2.0),  # 6: projects 0.4 px off a pixel centre: that pixel
            [np.nan, 0.0, 1.0],  # 7: not a point
            at_pixel(12, 11, 3.1),  # 8: same pixel as 1, 3 % further: within the depth tolerance
        ]
    )
    mask = np.zeros((H, W), dtype=bool)
    mask[8:13, 8:13] = True
    idx, pix = visible_points(xyz, K, None, H, W, depth_tolerance=0.05)
    assert sorted(idx.tolist()) == [0, 1, 3, 6, 8]
    assert dict(zip(idx.tolist(), pix.tolist()))[6] == 10 * W + 11
    inside = idx[mask.reshape(-1)[pix]]
    assert sorted(inside.tolist()) == [0, 1, 6, 8]


def test_lifting_uses_the_pose():
    # the camera 5 m up the world's x axis, looking along it: world_from_camera maps camera z onto world x
    pose = np.eye(4)
    pose[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    pose[:3, 3] = [5.0, 0.0, 0.0]
    cam = np.array([at_pixel(20, 15, 2.0)])
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    idx, pix = visible_points(world, K, pose, H, W)
    assert idx.tolist() == [0] and pix.tolist() == [15 * W + 20]


def probs(label, p=0.9, C=4):
    out = np.full(C + 1, (1 - p) / C)
    out[label] = p
    return out


def test_frame_proposals_drop_weak_and_repeated_masks():
    xyz = np.array([at_pixel(u, v, 2.0) for v in range(0, 60, 4) for u in range(0, 80, 4)])
    vis = visible_points(xyz, K, None, H, W)
    masks = np.zeros((4, H, W), dtype=bool)
    masks[0, :, :40] = True  # left half
    masks[1, :, :38] = True  # nearly the same: a repeat of query 0, weaker
    masks[2, :, 40:] = True  # right half, but not confident
    masks[3, 0:2, 0:2] = True  # one point: too small
    prob = np.stack([probs(1, 0.9), probs(1, 0.8), probs(2, 0.2), probs(3, 0.9)])
    opts = ProposalOptions(min_score=0.3, min_points=8)
    kept, lifted = frame_proposals(0, prob, masks, xyz, vis, opts)
    assert [p.query for p in kept] == [0]
    assert sorted(lifted) == [0, 1, 2]  # every query with enough points, for the 4D tubes' relations
    assert len(kept[0].points) == 10 * 15 and np.all(xyz[kept[0].points][:, 0] < 0)
    assert kept[0].center[0] < 0


def proposal(t, xyz, label, query=0, voxel=0.1):
    from spade4d.inference.proposals import _cells

    xyz = np.asarray(xyz, dtype=np.float64)
    return Proposal(t, query, np.arange(len(xyz)), probs(label), _cells(xyz, voxel), xyz.mean(0))


def box_points(center, size=0.4, step=0.05):
    g = np.arange(-size / 2, size / 2 + 1e-9, step)
    return np.stack(np.meshgrid(g, g, g), -1).reshape(-1, 3) + center


def test_association_follows_a_moving_object_past_a_gap():
    # a box moving 0.25 m per frame (farther than a cell) and a still one 1.5 m away, with another class;
    # frame 3 misses the mover (max_gap 2 bridges it), and the proposals come in another order on each frame
    frames = []
    for t in range(6):
        props = [proposal(t, box_points([0, 1.5, 0]), label=2, query=3)]
        if t != 3:
            props.append(proposal(t, box_points([0.25 * t, 0, 0]), label=1, query=1))
        frames.append(props[::-1] if t % 2 else props)
    tubes = associate(frames, ProposalOptions())
    assert len(tubes) == 2
    frames_of = sorted(sorted(p.t for p in tube) for tube in tubes)
    assert frames_of == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 4, 5]]
    for tube in tubes:
        assert len({int(p.prob.argmax()) for p in tube}) == 1  # never switches objects


def test_association_survives_a_mask_that_grows_for_one_frame():
    # a still box whose frame-2 mask also takes in a second box 1 m away: the mask centre jumps 0.5 m and back, so
    # moving on at that velocity misses frame 3; standing still does not, and the tube stays whole
    frames = [[proposal(t, box_points([0, 0, 0]), 1)] for t in range(5)]
    grown = np.concatenate([box_points([0, 0, 0]), box_points([1.0, 0, 0])])
    frames[2] = [proposal(2, grown, 1)]
    tubes = associate(frames, ProposalOptions())
    assert [[p.t for p in tube] for tube in tubes] == [[0, 1, 2, 3, 4]]


def test_association_does_not_bridge_long_gaps_or_jumps():
    frames = [[proposal(0, box_points([0, 0, 0]), 1)], [], [], [], [proposal(4, box_points([0, 0, 0]), 1)]]
    assert len(associate(frames, ProposalOptions(max_gap=2))) == 2
    jump = [[proposal(0, box_points([0, 0, 0]), 1)], [proposal(1, box_points([3, 0, 0]), 1)]]
    assert len(associate(jump, ProposalOptions())) == 2


def test_naming_averages_the_frames_and_drops_short_tubes():
    long = [proposal(0, box_points([0, 0, 0]), 1), proposal(1, box_points([0, 0, 0]), 2)]
    long[0].prob = np.array([0.0, 0.6, 0.3, 0.0, 0.1])
    long[1].prob = np.array([0.0, 0.1, 0.6, 0.0, 0.3])
    short = [proposal(0, box_points([2, 0, 0]), 3)]
    named = name_tubes([long, short], ProposalOptions(min_frames=2))
    assert len(named) == 1
    assert named[0].label == 2 and named[0].score == pytest.approx(0.45)  # class 1: 0.35, class 2: 0.45
    assert sorted(named[0].proposals) == [0, 1]


def tube_of(points_per_frame, counts, label=1, score=0.9):
    from spade4d.inference.proposals import NamedTube

    props = {}
    for t, pts in points_per_frame.items():
        props[t] = Proposal(t, 0, np.asarray(pts), probs(label))
    return NamedTube(label, score, props)


def test_merge_drops_repeats_and_fragments_of_4d_tubes():
    counts = [100, 100]
    four_d = ObjectTube(1, "box", {t: np.arange(100) < 40 for t in range(2)})  # points 0..39 on both frames
    same = tube_of({0: range(0, 38), 1: range(0, 40)}, counts, score=0.95)  # the 4D tube again
    part = tube_of({0: range(0, 10), 1: range(0, 10)}, counts, score=0.9)  # a fragment inside it
    new = tube_of({0: range(30, 80), 1: range(32, 80)}, counts, score=0.8)  # mostly outside: kept
    new_again = tube_of({0: range(35, 80), 1: range(35, 82)}, counts, score=0.7)  # repeats the kept one
    kept = merge_tubes([four_d], [same, part, new, new_again], counts, ProposalOptions())
    assert [t for t, _ in kept] == [new]
    masks = kept[0][1]
    assert masks[0].shape == (100,) and masks[0].sum() == 50 and masks[1].sum() == 48


def test_an_unseen_object_inside_a_4d_tube_of_another_name_is_kept_when_asked():
    counts = [100, 100]
    classes = ["person", "table", "cart"]
    table = ObjectTube(1, "table", {t: np.arange(100) < 60 for t in range(2)})  # points 0..59
    cart = tube_of({0: range(30, 50), 1: range(30, 50)}, counts, label=2, score=0.8)  # all inside, IoU 1/3
    person = tube_of({0: range(0, 20), 1: range(0, 20)}, counts, label=0, score=0.7)  # a seen name inside
    cart_part = tube_of({0: range(35, 45), 1: range(35, 45)}, counts, label=2, score=0.6)  # inside the cart
    tubes, seen = [cart, person, cart_part], frozenset({"person", "table"})
    assert merge_tubes([table], tubes, counts, ProposalOptions(), classes, seen) == []  # default: fragments
    strict = ProposalOptions(strict_unseen_fragments=True)
    assert [t for t, _ in merge_tubes([table], tubes, counts, strict, classes, seen)] == [cart]
    assert merge_tubes([table], tubes, counts, strict) == []  # without names and seen classes: as before
    again = ObjectTube(1, "cart", table.masks)  # the 4D tube has the cart's name: a fragment after all
    assert merge_tubes([again], tubes, counts, strict, classes, seen) == []


def test_a_4d_tube_takes_an_unseen_name_from_the_proposal_that_overlaps_it():
    counts = [100, 100]
    classes = ["person", "box", "suitcase", "cart"]
    seen = frozenset({"person", "box"})  # the 4D training split showed these two
    box = ObjectTube(1, "box", {t: np.arange(100) < 40 for t in range(2)}, 0.7)  # points 0..39
    person = ObjectTube(2, "person", {t: np.arange(100) >= 60 for t in range(2)}, 0.9)  # points 60..99
    suitcase = tube_of({0: range(10, 50), 1: range(10, 50)}, counts, label=2, score=0.6)  # IoU 30/50 with the box
    cart = tube_of({0: range(0, 5), 1: range(0, 5)}, counts, label=3, score=0.8)  # a fragment: IoU 5/40
    again = tube_of({0: range(0, 40), 1: range(0, 40)}, counts, label=3, score=0.5)  # the box, once renamed
    person_again = tube_of({0: range(60, 100), 1: range(60, 100)}, counts, label=0)  # a seen name: not renaming
    tubes = [cart, suitcase, again, person_again]
    opts = ProposalOptions(rename_iou=0.25)
    objects, renamed, left = rename_unseen([box, person], tubes, counts, classes, seen, opts)
    assert [o.label for o in objects] == ["suitcase", "person"] and renamed == {1}
    assert objects[0].masks is box.masks and objects[0].score == 0.7 and objects[1] is person
    assert box.label == "box"  # the input is left as it was
    assert left == [cart, again, person_again]  # the suitcase tube is used up; one renaming per 4D tube
    assert merge_tubes(objects, left, counts, opts) == []  # the rest repeats or lies inside the 4D tubes
    for off in (dict(seen=None, opts=opts), dict(seen=seen, opts=ProposalOptions())):  # off by default
        objects, renamed, left = rename_unseen([box, person], tubes, counts, classes, off["seen"], off["opts"])
        assert [o.label for o in objects] == ["box", "person"] and not renamed and left == tubes
    strict = ProposalOptions(rename_iou=0.7)
    assert rename_unseen([box, person], [cart, suitcase], counts, classes, seen, strict)[1] == set()  # IoU 0.6
    with pytest.raises(ValueError, match="rename_iou"):
        ProposalOptions(rename_iou=0.0)


def test_a_4d_tube_name_mixes_in_the_cores_class_probabilities():
    classes = ["car", "bench", "dog"]
    masks = {t: np.ones(4, bool) for t in range(3)}
    car = ObjectTube(1, "car", masks, 0.6, np.array([0.6, 0.3, 0.1]))  # the 4D model's names, a bench second
    dog = ObjectTube(2, "dog", masks, 0.8, np.array([0.1, 0.1, 0.8]))
    bare = ObjectTube(3, "car", masks, 0.5)  # no name distribution (a chain's object)
    probs = [np.array([[0.1, 0.8, 0.0, 0.1], [0.3, 0.3, 0.3, 0.1]]) for _ in range(3)]  # (Q, C + 1)
    probs[1] = None  # no core output on frame 1
    queries = {1: {0: 0, 1: 0, 2: 0}, 2: {0: 1}, 3: {0: 0}}  # the car matches query 0, the dog query 1
    objects, changed = fuse_names([car, dog, bare], queries, probs, classes, 0.5)
    assert [o.label for o in objects] == ["bench", "dog", "car"] and changed == {1}
    # (0.6, 0.3, 0.1) / 2 + (0.1, 0.8, 0) / 0.9 / 2
    assert objects[0].class_probs == pytest.approx([0.3 + 0.1 / 1.8, 0.15 + 0.8 / 1.8, 0.05])
    assert objects[0].masks is car.masks and objects[0].score == 0.6 and objects[0].id == 1
    assert objects[1] is dog and objects[2] is bare and car.label == "car"  # inputs untouched
    assert fuse_names([car], queries, probs, classes, 0.2)[0][0] is car  # 4D-led: the car stays
    assert fuse_names([car], queries, probs, classes, 0.0) == ([car], set())  # off
    assert fuse_names([car], {1: {1: 0}}, probs, classes, 0.5) == ([car], set())  # its only frame has no output
    with pytest.raises(ValueError, match="name_weight"):
        ProposalOptions(name_weight=1.5)


def test_relations_of_new_tubes_come_from_their_2d_queries():
    T, P = 6, 3
    person = ObjectTube(1, "person", {t: np.ones(5, bool) for t in range(T)}, 0.8)
    cart = ObjectTube(2, "cart", {t: np.ones(5, bool) for t in range(T)}, 0.5)
    rel = [np.zeros((4, 4, P), dtype=np.float16) for _ in range(T)]
    for t in (1, 2, 3):
        rel[t][0, 2, 1] = 0.9  # query 0 (the person) pushing query 2 (the cart)
    rel[5][0, 2, 1] = 0.3  # weak: not part of the span
    queries = {1: {t: 0 for t in range(T)}, 2: {t: 2 for t in range(T) if t != 2}}  # the cart has no query on 2
    out = tube_relations([person, cart], {2}, queries, rel, ["on", "pushing", "beside"], 0.5, 1)
    top = max(out, key=lambda r: r.score)
    assert (top.subject, top.object, top.predicate) == (1, 2, "pushing")
    assert top.score == pytest.approx(0.9 * 0.8 * 0.5, rel=1e-3)
    assert top.spans == [(1, 1), (3, 3)]
    assert all(r.score > 0 for r in out) and not any(r.subject == r.object for r in out)
    assert tube_relations([person, cart], set(), queries, rel, ["on", "pushing", "beside"], 0.5, 1) == []


def test_proposals_join_a_4d_prediction_without_duplicates(synthetic_root):
    """The 2D core (tiny, untrained) over the tests' synthetic RGB frames: every added tube is new, ids are
    unique, masks have each frame's length, a tube the 4D model has is not added again and relations point at
    existing objects."""
    import json

    from spade4d.data.cameras import CameraFrames
    from spade4d.data.datasets import open_4d_dataset
    from spade4d.inference.proposals import Proposals2D, _tube_overlap
    from spade4d.structures import SceneGraph4D
    from tests.test_core2d import tiny_2d

    d = json.loads((synthetic_root / "dataset.json").read_text())
    ds = open_4d_dataset("synthetic", synthetic_root, "test")
    seq, gt = ds[0]
    core = tiny_2d()
    core.set_vocabulary(d["thing_classes"] + d["stuff_classes"], d["predicates"])
    opts = ProposalOptions(min_score=0.0, min_points=1, min_frames=1, duplicate_iou=0.3, inside=0.5)
    source = Proposals2D(core, CameraFrames(synthetic_root / "psg4d_gta"), opts)
    empty = SceneGraph4D(gt.video_id, gt.num_frames, [], [], gt.num_points)
    alone = source(empty, seq, gt.video_id, 0.5, 1, 100)
    assert alone.objects, "an untrained core with no thresholds still proposes something"
    first = alone.objects[0]
    start = SceneGraph4D(gt.video_id, gt.num_frames, [ObjectTube(7, "person", first.masks, 0.9)], [], gt.num_points)
    graph = source(start, seq, gt.video_id, 0.5, 1, 100)  # the 4D model already has the best proposal's tube
    assert graph.objects[0] is start.objects[0]
    assert len(graph.objects) == len(alone.objects)  # that proposal is not added again; the others are
    ids = [o.id for o in graph.objects]
    assert len(set(ids)) == len(ids) and min(ids[1:]) == 8
    for i, o in enumerate(graph.objects[1:], 1):
        assert all(len(m) == seq.counts[t] for t, m in o.masks.items())
        for other in graph.objects[:i]:
            iou, share = _tube_overlap(o.masks, other.masks)
            assert iou < 0.3 and share < 0.5
    assert graph.relations and all(r.subject in ids and r.object in ids for r in graph.relations)
    assert all({r.subject, r.object} - {7} for r in graph.relations)  # each involves an added tube
    assert all(0 <= a <= b < seq.num_frames for r in graph.relations for a, b in r.spans)


def test_infer_with_the_2d_core_adds_its_tubes_to_the_prediction_file(synthetic_root, tmp_path, capsys):
    """``infer --core-2d`` on the synthetic test split: the same 4D objects, then the core's tubes; the same
    without the core's RGB frames is refused in one line."""
    import json

    from spade4d.cli import main
    from tests.test_core2d import tiny_2d
    from tests.test_own_frames import tiny_model

    model_dir = tiny_model(synthetic_root, tmp_path)
    core = tiny_2d()
    core.config.object_threshold = 0.0  # an untrained core: its proposals are kept by the threshold it carries
    core_dir = core.save_pretrained(tmp_path / "core")
    run = ["infer", "--model", str(model_dir), "--format", "synthetic", "--root", str(synthetic_root), "--no-llm"]
    assert main([*run, "--out", str(tmp_path / "plain.json")]) == 0
    assert main([*run, "--core-2d", str(core_dir), "--out", str(tmp_path / "with2d.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())["sequences"]
    with2d = json.loads((tmp_path / "with2d.json").read_text())["sequences"]
    assert plain.keys() == with2d.keys()
    added = 0
    for vid, seq in plain.items():
        ids = [o["id"] for o in seq["objects"]]
        assert [o["id"] for o in with2d[vid]["objects"][: len(ids)]] == ids  # the 4D tubes come first, unchanged
        added += len(with2d[vid]["objects"]) - len(ids)
    assert added > 0
    pc = ["infer", "--model", str(model_dir), "--format", "spade4d-pc", "--root", str(synthetic_root / "psg4d_pc")]
    assert main([*pc, "--core-2d", str(core_dir), "--out", str(tmp_path / "x.json")]) == 2
    assert "pass rgb_root / --rgb-root" in capsys.readouterr().err
