import json

import numpy as np
import pytest
import torch
from PIL import Image

from spade4d.data.synthetic import generate as gen
from spade4d.data.synthetic.relations import relations_at
from spade4d.data.synthetic.world import (
    OOV_CLASSES,
    OOV_PREDICATES,
    PREDICATES,
    STUFF_CLASSES,
    TEMPLATES,
    THING_CLASSES,
)


def test_vocabulary_sizes():
    assert len(THING_CLASSES) >= 15 and len(STUFF_CLASSES) >= 3 and len(PREDICATES) >= 15


def test_layouts_read_back_with_plain_tools(synthetic_root):
    ann = json.loads((synthetic_root / "psg4d_pc" / "psg4d.json").read_text())
    assert set(ann["objects"]) == {"thing", "stuff"} and set(ann["split"]) == {"train", "val", "test"}
    classes = ann["objects"]["thing"] + ann["objects"]["stuff"]
    for entry in ann["data"][:4]:
        vid, T = entry["video_id"], entry["meta"]["num_frames"]
        ids = {o["object_id"] for o in entry["object"]}
        cls_of = {o["object_id"]: classes.index(o["category"]) for o in entry["object"]}
        for s, p, o, (start, end) in entry["relations"]:
            assert s in ids and o in ids and isinstance(p, str) and 0 <= start <= end < T
        for t in range(T):
            xyz, rgb, sem, inst = torch.load(synthetic_root / "psg4d_pc" / "point_clouds" / vid / f"{t:06d}.pth")
            n = len(xyz)
            assert xyz.dtype == torch.float32 and xyz.shape == (n, 3) and rgb.shape == (n, 3)
            assert sem.dtype == torch.int64 and inst.dtype == torch.int64 and sem.shape == inst.shape == (n,)
            assert 0.0 <= float(rgb.min()) and float(rgb.max()) <= 1.0
            labelled = inst != -100
            assert torch.equal(labelled, sem != -100)
            for oid in inst[labelled].unique().tolist():  # the semantic label is the object's class
                assert set(sem[inst == oid].tolist()) == {cls_of.get(oid, sem[inst == oid][0].item())}
            # the RGB-D frame beside it (PSG4D-GTA conventions): NDC depth lifts to at most as many points as there
            # were non-sky pixels (no voxel merge can add points); a stuff object's annotation id is its pixel id +
            # 1000, which is the value its pixels carry in the mask
            depth = np.load(synthetic_root / "psg4d_gta" / "depth" / vid / f"{t:06d}.npy")
            mask = np.load(synthetic_root / "psg4d_gta" / "masks" / vid / f"{t:06d}.npy")
            assert depth.dtype == np.float32 and mask.dtype == np.uint16 and depth.shape == mask.shape
            assert n <= int((depth != np.float32(24e-5)).sum())
            stuff_ids = {o["object_id"] for o in entry["object"] if not o["is_thing"]}
            assert stuff_ids and min(stuff_ids) > 1000
            assert any(np.any(mask == sid) for sid in stuff_ids)
    psg = json.loads((synthetic_root / "psg" / "psg.json").read_text())
    assert {"data", "thing_classes", "stuff_classes", "predicate_classes", "test_image_ids"} <= set(psg)
    assert "images" not in psg and "annotations" not in psg
    for d in psg["data"][:6]:
        ids = np.asarray(Image.open(synthetic_root / "psg" / d["pan_seg_file_name"]).convert("RGB"), dtype=np.int64)
        ids = ids[..., 0] + 256 * ids[..., 1] + 65536 * ids[..., 2]
        assert Image.open(synthetic_root / "psg" / d["file_name"]).size == (d["width"], d["height"])
        assert len(d["segments_info"]) == len(d["annotations"])
        for seg, box in zip(d["segments_info"], d["annotations"]):
            m = ids == seg["id"]
            assert m.sum() == seg["area"] > 0
            ys, xs = np.nonzero(m)
            assert box["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert 0 <= seg["category_id"] < len(psg["thing_classes"]) + len(psg["stuff_classes"])
        for s, o, p in d["relations"]:
            assert 0 <= s < len(d["segments_info"]) and 0 <= o < len(d["segments_info"])
            assert 0 <= p < len(psg["predicate_classes"])


def test_out_of_vocabulary_split(synthetic_root):
    ann = json.loads((synthetic_root / "psg4d_pc" / "psg4d.json").read_text())
    by_split = {k: [d for d in ann["data"] if d["video_id"] in set(v)] for k, v in ann["split"].items()}
    train_cls = {o["category"] for d in by_split["train"] for o in d["object"]}
    train_pred = {r[1] for d in by_split["train"] for r in d["relations"]}
    test_cls = {o["category"] for d in by_split["test"] for o in d["object"]}
    assert not train_cls & set(OOV_CLASSES) and not train_pred & set(OOV_PREDICATES)
    assert set(OOV_CLASSES) <= test_cls
    psg = json.loads((synthetic_root / "psg" / "psg.json").read_text())
    classes2d = psg["thing_classes"] + psg["stuff_classes"]
    seen2d = {classes2d[s["category_id"]] for d in psg["data"] for s in d["segments_info"]}
    assert train_cls <= seen2d and set(OOV_CLASSES) <= seen2d
    manifest = json.loads((synthetic_root / "dataset.json").read_text())
    assert manifest["oov_classes"] == list(OOV_CLASSES)


def test_generation_is_deterministic_per_seed(tmp_path, tiny_preset):
    from dataclasses import replace

    p = replace(tiny_preset, train=2, val=0, test=1, images_2d=3)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        gen.generate(tmp_path / name, p, seed=seed, workers=1, progress=False)
    read = lambda n: (tmp_path / n / "psg4d_pc" / "psg4d.json").read_bytes()  # noqa: E731
    assert read("a") == read("b") and read("a") != read("c")
    pth = "psg4d_pc/point_clouds/train_0000_sit/000003.pth"
    ta, tb = torch.load(tmp_path / "a" / pth), torch.load(tmp_path / "b" / pth)
    assert all(torch.equal(x, y) for x, y in zip(ta, tb))
    assert (tmp_path / "a/psg/psg.json").read_bytes() == (tmp_path / "b/psg/psg.json").read_bytes()


def _posed_boxes(scene, t):
    out = {}
    for a in scene.actors:
        v = a.posed(t).vertices
        out[a.oid] = (v.min(0), v.max(0))
    return out


@pytest.mark.parametrize("template", list(TEMPLATES))
def test_relations_agree_with_geometry(template):
    """Every derived relation is re-checked against the posed meshes' own bounding boxes."""
    seen = set()
    for seed in range(3):
        scene = TEMPLATES[template](10, np.random.default_rng(seed))
        for t in range(scene.num_frames):
            boxes = _posed_boxes(scene, t)
            for s, p, o in relations_at(scene, t):
                seen.add(p)
                (slo, shi), (olo, ohi) = boxes[s], boxes[o]
                A, B = scene.actor(s), scene.actor(o)
                centre = (slo[:2] + shi[:2]) / 2
                if p in ("on", "standing on", "walking on", "driving on"):
                    assert abs(slo[2] - ohi[2]) < 0.03, (template, p, A.label, B.label)  # contact
                    assert np.all(centre >= olo[:2] - 0.3) and np.all(centre <= ohi[:2] + 0.3)
                    assert shi[2] > ohi[2]  # vertical order: the subject stands above the support
                elif p == "over":
                    assert slo[2] > ohi[2]
                elif p == "under":
                    assert shi[2] < ohi[2]
                elif p == "sitting on":
                    assert A.pose[t] == "sit" and B.label in ("chair", "sofa", "bench")
                elif p in ("holding", "carrying"):
                    assert B.attached_to[t] == A.oid
                elif p == "riding":
                    assert A.attached_to[t] == B.oid and B.label == "bicycle"
                elif p == "chasing":
                    assert A.label == "dog" and B.label == "ball"
                elif p == "pushing":
                    assert A.label == "person" and B.label == "cart"
                    assert np.linalg.norm(scene.velocity(B)[t][:2]) > 0.1
                elif p in ("pulling", "leading"):  # B follows A: behind A, moving the way A moves
                    assert A.label == "person" and B.label == {"pulling": "suitcase", "leading": "horse"}[p]
                    va, vb = scene.velocity(A)[t][:2], scene.velocity(B)[t][:2]
                    assert np.linalg.norm(vb) > 0.1 and va @ vb > 0.8 * np.linalg.norm(va) * np.linalg.norm(vb)
                    assert (B.pos[t][:2] - A.pos[t][:2]) @ va < 0
    expected = {
        "sit": {"sitting on", "walking on", "on", "over"},
        "carry": {"carrying", "on"},
        "dog_ball": {"chasing", "looking at"},
        "drive": {"driving on"},
        "ride": {"riding"},
        "push": {"pushing"},
        "luggage": {"pulling", "on", "sitting on"},
        "horse": {"leading", "walking on"},
        "tv": {"sitting on", "in front of", "looking at"},
    }[template]
    assert expected <= seen


def test_bad_arguments_give_clear_errors(tmp_path, tiny_preset):
    with pytest.raises(gen.SyntheticError, match="unknown preset 'huge'"):
        gen.generate(tmp_path / "x", "huge")
    from dataclasses import replace

    with pytest.raises(gen.SyntheticError, match="frames must be positive"):
        gen.generate(tmp_path / "x", replace(tiny_preset, frames=0))
    with pytest.raises(gen.SyntheticError, match="train must be >= 0"):
        gen.generate(tmp_path / "x", replace(tiny_preset, train=-1))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write"):
        gen.generate(blocker / "sub" / "out", tiny_preset, progress=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from spade4d.cli import main

    assert main(["make-synthetic", "--preset", "nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown preset 'nope'" in err
    with pytest.raises(SystemExit) as e:
        main(["make-synthetic", "--seed", "-1", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert main(["make-synthetic", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, tiny_preset, monkeypatch):
    from dataclasses import replace

    calls = {"n": 0}
    real = gen.make_sequence

    def flaky(args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(gen, "make_sequence", flaky)
    out = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        gen.generate(out, replace(tiny_preset, train=3, test=0, val=0, images_2d=1), workers=1, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the partial folder is removed as well


def test_the_bench_preset_holds_thirty_out_of_vocabulary_test_scenes_of_four_scripts():
    from spade4d.data.synthetic.generate import PRESETS, split_plan

    bench = PRESETS["bench"]
    plan = split_plan(bench)
    by_split = {s: [t for split, _, t in plan if split == s] for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [120, 8, 70]
    held = ("ride", "push", "luggage", "horse")
    assert not set(by_split["train"]) & set(held) and len(set(by_split["train"])) == 5
    assert {t: by_split["test"].count(t) for t in held} == {"ride": 8, "push": 8, "luggage": 7, "horse": 7}
    classes, predicates = bench.names()
    assert classes[-6:] == ["suitcase", "horse", "floor", "wall", "grass", "road"]
    assert predicates[-2:] == ["pulling", "leading"]
    # the other presets keep the vocabulary their datasets and trained models have
    assert PRESETS["quick"].names() == (THING_CLASSES + STUFF_CLASSES, PREDICATES)


def test_extra_scripts_bring_their_names_into_2d_and_test_but_not_training(tmp_path, tiny_preset, monkeypatch):
    from dataclasses import replace

    scripts = ("sit", "drive", "ride", "luggage", "horse")
    p = replace(tiny_preset, frames=4, train=2, val=0, test=5, images_2d=10, scripts=list(scripts))
    assert p.scripts == scripts  # a YAML list becomes a tuple
    monkeypatch.setitem(gen.PRESETS, "extra", replace(p))  # a preset given by value is recorded by its name
    root = gen.generate(tmp_path / "d", p, seed=1, workers=1, progress=False) and tmp_path / "d"
    manifest = json.loads((root / "dataset.json").read_text())
    assert manifest["preset"] == "extra" and manifest["preset_values"]["scripts"] == list(scripts)
    assert manifest["oov_templates"] == ["ride", "luggage", "horse"]
    assert manifest["oov_classes"] == ["bicycle", "suitcase", "horse"]
    assert manifest["oov_predicates"] == ["riding", "pulling", "leading"]
    ann = json.loads((root / "psg4d_pc" / "psg4d.json").read_text())
    assert ann["objects"]["thing"][-2:] == ["suitcase", "horse"] and ann["predicates"][-2:] == ["pulling", "leading"]
    split = {k: set(v) for k, v in ann["split"].items()}
    entries = {k: [d for d in ann["data"] if d["video_id"] in v] for k, v in split.items()}
    names = {
        k: ({o["category"] for d in v for o in d["object"]}, {r[1] for d in v for r in d["relations"]})
        for k, v in entries.items()
    }
    assert not names["train"][0] & {"bicycle", "suitcase", "horse"}
    assert not names["train"][1] & {"riding", "pulling", "leading"}
    assert {"suitcase", "horse"} <= names["test"][0] and {"pulling", "leading"} <= names["test"][1]
    psg = json.loads((root / "psg" / "psg.json").read_text())
    classes2d = psg["thing_classes"] + psg["stuff_classes"]
    seen2d = {classes2d[s["category_id"]] for d in psg["data"] for s in d["segments_info"]}
    preds2d = {psg["predicate_classes"][r[2]] for d in psg["data"] for r in d["relations"]}
    assert {"suitcase", "horse"} <= seen2d and {"pulling", "leading"} <= preds2d
    pvsg = json.loads((root / "pvsg" / "pvsg.json").read_text())
    assert pvsg["objects"] == ann["objects"] and pvsg["relations"] == ann["predicates"]
    with pytest.raises(gen.SyntheticError, match="preset scripts must be some of"):
        gen.generate(tmp_path / "e", replace(p, scripts=("sit", "juggle")), workers=1, progress=False)
