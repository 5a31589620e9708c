"""Bad input and interrupted work: a one-line error with exit status 2, or correct output; never a traceback."""

import json
import os
import stat

import pytest

from spade4d.cli import main
from spade4d.io import atomic_dir, read_json, write_json

ANSI = "\x1b["


def run_error(argv, capsys):
    """Run the CLI expecting a refusal; return its message (checked: status 2, one line, no escape codes)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in err and ANSI not in err
    return err


def test_json_files_that_are_not_json(tmp_path):
    p = tmp_path / "f.json"
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"f.json: not UTF-8 text \(byte 0xff at offset 0\)"):
        read_json(p)
    p.write_text('{"a": [1, 2')
    with pytest.raises(ValueError, match="f.json: not valid JSON"):
        read_json(p)
    p.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="f.json: JSON nested too deeply"):
        read_json(p)


def test_prediction_file_version_must_be_the_integer_1(tmp_path, synthetic_root, capsys):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"format": "spade4d-predictions-4d", "version": True, "sequences": {}}))
    argv = ["evaluate-4d", "--format", "synthetic", "--root", str(synthetic_root), "--pred", str(p)]
    err = run_error([*argv, "--out", str(tmp_path / "m.json"), "--quiet"], capsys)
    assert "p.json: field 'version' is True" in err


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        f = write_json(tmp_path / "m.json", {"a": 1})
        with atomic_dir(tmp_path / "out") as d:
            (d / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert not (tmp_path / "out" / ".owner_pid").exists()


def test_a_killed_build_leaves_nothing_that_blocks_the_rerun(tmp_path):
    stale = tmp_path / ".data.partial-abc123"  # what a SIGKILLed make-synthetic leaves
    stale.mkdir()
    (stale / "big.bin").write_bytes(b"0" * 1000)
    (stale / ".owner_pid").write_text("999999999")  # no such process
    live = tmp_path / ".data.partial-live"
    live.mkdir()
    (live / ".owner_pid").write_text(str(os.getpid()))  # a build still running is left alone
    with atomic_dir(tmp_path / "data") as d:
        (d / "x").write_text("1")
    assert not stale.exists() and live.exists() and (tmp_path / "data" / "x").is_file()


def test_cli_arguments_out_of_range_are_refused(tmp_path, synthetic_root, capsys):
    pc = str(synthetic_root / "psg4d_pc")
    render = ["render", "--root", pc, "--out", str(tmp_path / "r"), "--quiet"]
    assert "8192" in run_error([*render, "--width", "100000"], capsys)
    assert "must be a finite number above 0" in run_error([*render, "--fps", "0"], capsys)
    assert "--frames 99: sequence" in run_error([*render, "--frames", "99"], capsys)
    assert not (tmp_path / "r").exists()  # refused before writing anything
    env = os.environ.pop("DISPLAY", None)
    try:
        assert "--interactive needs a display" in run_error([*render, "--interactive"], capsys)
    finally:
        if env is not None:
            os.environ["DISPLAY"] = env
    train = ["finetune-4d", "--format", "synthetic", "--root", str(synthetic_root), "--out", str(tmp_path / "t")]
    assert "must be a finite number above 0" in run_error([*train, "--lr", "inf"], capsys)
    conv = ["convert", "psg4d-gta", "--root", str(synthetic_root / "psg4d_gta"), "--out", str(tmp_path / "c")]
    assert "must be a finite number above 0" in run_error([*conv, "--voxel-size", "inf"], capsys)
    assert "must be a finite number above 0" in run_error([*conv, "--depth-scale", "0"], capsys)
    infer = ["infer", "--model", str(tmp_path), "--root", pc, "--out", str(tmp_path / "p.json")]
    assert "--device bogus: " in run_error([*infer, "--device", "bogus"], capsys)


# ---------------------------------------------------------------------------------------------------------------
# prediction files: ids, spans, scores, masks
# ---------------------------------------------------------------------------------------------------------------


def _seq(**over):
    entry = {
        "num_frames": 2,
        "objects": [
            {"id": 0, "label": "a", "masks": {"0": {"size": [3, 1], "counts": [0, 3]}}},
            {"id": 2**32, "label": "b", "masks": {"0": {"size": [3, 1], "counts": [1, 2]}}},
        ],
        "relations": [{"subject": 0, "object": 2**32, "predicate": "p", "score": 0.5, "spans": [[0, 1]]}],
    }
    entry.update(over)
    return entry


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e["objects"][1].update(id=0), "object id 0 appears twice"),
        (lambda e: e["objects"][1].update(id=1.5), "objects\\[1\\].id 1.5 is not an integer"),
        (lambda e: e["objects"][1].update(id=[1]), "objects\\[1\\].id \\[1\\] is not an integer"),
        (lambda e: e["objects"][1].update(id=2**70), "does not fit a 64-bit integer"),
        (lambda e: e["objects"][1].update(id=True), "objects\\[1\\].id True is not an integer"),
        (lambda e: e["relations"][0].update(subject={"a": 1}), "relations\\[0\\].subject .* is not an integer"),
        (lambda e: e["relations"][0].update(spans=[[0.5, 1]]), "span frame 0.5 is not an integer"),
        (lambda e: e["relations"][0].update(spans=[[None, 1]]), "span frame None is not an integer"),
        (lambda e: e["relations"][0].update(spans=[[0, float("inf")]]), "span frame inf is not an integer"),
        (lambda e: e["relations"][0].update(score="0.5"), "score '0.5' is not a number"),
        (lambda e: e["relations"][0].update(score=1e400), "score is inf"),
        (lambda e: e["relations"][0].update(predicate=None), "predicate None is not a non-empty string"),
        (lambda e: e.update(objects="abc"), "objects is a str, expected a list"),
        (lambda e: e.update(objects=[None]), "objects\\[0\\] is a NoneType"),
        (lambda e: e["objects"][0].update(masks="x"), "masks is a str"),
        (lambda e: e["objects"][0]["masks"].update({"0": {"size": [3, 1], "counts": [4, -1]}}), "non-negative"),
        (lambda e: e["objects"][0]["masks"].update({"7": {"size": [3, 1], "counts": [3]}}), "outside 0..1"),
        (lambda e: e.update(num_frames=6.5), "num_frames 6.5 is not an integer"),
    ],
)
def test_malformed_4d_entries_are_refused_with_their_field(mutate, message):
    from spade4d.rle import RLEError
    from spade4d.structures import SceneGraph4D, StructureError

    entry = _seq()
    mutate(entry)
    with pytest.raises((StructureError, RLEError), match=message):
        SceneGraph4D.from_json("v", entry, num_points=[3, 3])


def test_huge_and_corrupt_masks_are_refused_before_decoding():
    from spade4d.rle import RLEError, decode_mask

    with pytest.raises(RLEError, match="claims more than"):
        decode_mask({"size": [2**20, 2**20], "counts": "0"})  # 70 bytes claiming 2^40 elements
    with pytest.raises(RLEError, match="does not match the expected"):
        decode_mask({"size": [10**6, 1], "counts": "0"}, expected_size=(5, 1))
    with pytest.raises(RLEError, match="do not add up|negative"):
        decode_mask({"size": [4, 1], "counts": "2"})  # a run of 2 where there are 4 points
    with pytest.raises(RLEError, match="outside the COCO alphabet"):
        decode_mask({"size": [4, 1], "counts": "\x01\x02"})


def test_ids_of_any_size_score_as_the_reference_loop():
    from spade4d.evaluation import Options4D
    from spade4d.evaluation.metrics_4d import match_sequence
    from spade4d.evaluation.reference import match_sequence_reference
    from spade4d.structures import SceneGraph4D

    gt = SceneGraph4D.from_json("v", _seq(), num_points=[3, 3])
    pred = SceneGraph4D.from_json("v", _seq(), num_points=[3, 3])
    fast, ref = match_sequence(gt, pred, Options4D()), match_sequence_reference(gt, pred, Options4D())
    assert [o.rank for o in fast] == [o.rank for o in ref] == [0]


def test_per_triplet_masks_are_read_from_the_relations(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from spade4d import rle

    # a PSG image of 4x4 with two segments; the prediction's objects are wrong but its per-triplet masks are right
    root = tmp_path / "coco"
    (root / "pan").mkdir(parents=True)
    pan = np.zeros((4, 4, 3), np.uint8)
    pan[:2, :, 0], pan[2:, :, 0] = 1, 2
    Image.fromarray(pan).save(root / "pan" / "0.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "0.jpg")
    seg = [{"id": i, "category_id": i - 1, "iscrowd": 0, "isthing": 1, "area": 8} for i in (1, 2)]
    psg = {
        "data": [
            {
                "file_name": "0.jpg", "height": 4, "width": 4, "image_id": "0", "coco_image_id": "0",
                "pan_seg_file_name": "pan/0.png", "segments_info": seg,
                "annotations": [{"bbox": [0, 0, 4, 2], "bbox_mode": 0, "category_id": 0},
                                {"bbox": [0, 2, 4, 4], "bbox_mode": 0, "category_id": 1}],
                "relations": [[0, 1, 0]],
            }
        ],
        "thing_classes": ["a", "b"], "stuff_classes": [], "predicate_classes": ["on"], "test_image_ids": ["0"],
    }  # fmt: skip
    (tmp_path / "psg.json").write_text(json.dumps(psg))
    top, bottom = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    top[:2], bottom[2:] = True, True
    wrong = np.zeros((4, 4), bool)
    wrong[0, 0] = True
    pred = {
        "format": "spade4d-predictions-2d", "version": 1,
        "images": {"0": {"height": 4, "width": 4,
            "objects": [{"id": 0, "label": "a", "mask": rle.encode_mask(wrong)},
                        {"id": 1, "label": "b", "mask": rle.encode_mask(wrong)}],
            "relations": [{"subject": 0, "object": 1, "predicate": "on", "score": 1.0,
                           "subject_mask": rle.encode_mask(top), "object_mask": rle.encode_mask(bottom)}]}},
    }  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(pred))
    argv = ["evaluate-2d", "--psg-json", str(tmp_path / "psg.json"), "--coco-root", str(root), "--pred"]
    argv += [str(tmp_path / "p.json"), "--quiet", "--out"]
    assert main([*argv, str(tmp_path / "single.json")]) == 0
    assert main([*argv, str(tmp_path / "triplet.json"), "--per-triplet-masks"]) == 0
    single = json.loads((tmp_path / "single.json").read_text())
    triplet = json.loads((tmp_path / "triplet.json").read_text())
    assert single["R@50"] == 0.0 and triplet["R@50"] == 100.0 and triplet["relations_with_triplet_masks"] == 1


# ---------------------------------------------------------------------------------------------------------------
# annotations
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a["objects"].update(thing="person"), "objects.thing is not a list of class names"),
        (lambda a: a["split"].update(val="v0"), "split.val is not a list of video id strings"),
        (lambda a: a["split"].update(val=["v0", "zz"]), "split.val names videos not in data"),
        (lambda a: a["split"].update(val=["v0", "v0"]), "split.val lists a video twice"),
        (lambda a: a["split"].update(val=[3]), "split.val is not a list of video id strings"),
        (lambda a: a["data"].append(dict(a["data"][0])), "repeats video 'v0'"),
        (lambda a: a["data"][0].update(video_id=7), "data\\[0\\] has no string video_id"),
        (lambda a: a.update(predicates="on"), "predicates is not a list of names"),
    ],
)
def test_annotation_structure_is_checked_on_open(tmp_path, mutate, message):
    from spade4d.data.psg4d import DatasetError, PSG4DGTAPointCloud

    ann = {
        "objects": {"thing": ["person"], "stuff": []},
        "split": {"val": ["v0"]},
        "data": [{"video_id": "v0", "meta": {"num_frames": 2}, "object": [], "relations": []}],
    }
    mutate(ann)
    (tmp_path / "sailvos3d.json").write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match=message):
        PSG4DGTAPointCloud(tmp_path, "val")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e["meta"].update(num_frames=6.5), "meta.num_frames missing or not a positive integer"),
        (lambda e: e["object"].append({"object_id": 5, "category": "person"}), "object_id 5 appears twice"),
        (lambda e: e["object"][0].update(object_id=5.5), "object_id 5.5 is not an integer"),
        (lambda e: e["relations"][0].__setitem__(3, [0.5, 1.7]), "span frame 0.5 is not an integer"),
        (lambda e: e["relations"][0].__setitem__(1, None), "predicate None is not a non-empty string"),
        (lambda e: e["relations"][0].__setitem__(1, ["on"]), "predicate \\['on'\\] is not a non-empty string"),
        (lambda e: e["relations"][0].__setitem__(3, [0, None]), "span frame None is not an integer"),
    ],
)
def test_annotation_entries_are_checked_when_read(tmp_path, mutate, message):
    import numpy as np
    import torch

    from spade4d.data.psg4d import DatasetError, PSG4DGTAPointCloud

    entry = {
        "video_id": "v0",
        "meta": {"num_frames": 2},
        "object": [{"object_id": 5, "category": "person"}, {"object_id": 6, "category": "person"}],
        "relations": [[5, "near", 6, [0, 1]]],
    }
    mutate(entry)
    ann = {"objects": {"thing": ["person"], "stuff": []}, "split": {"val": ["v0"]}, "data": [entry]}
    (tmp_path / "sailvos3d.json").write_text(json.dumps(ann))
    (tmp_path / "v0").mkdir()
    torch.save(
        (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2), np.array([5, 6])), tmp_path / "v0" / "images_000000.pth"
    )
    with pytest.raises(DatasetError, match=message):
        PSG4DGTAPointCloud(tmp_path, "val")[0]


# ---------------------------------------------------------------------------------------------------------------
# models and checkpoints
# ---------------------------------------------------------------------------------------------------------------


def test_damaged_model_files_are_refused_where_they_enter(tmp_path):
    import torch
    from safetensors.torch import save_file

    from spade4d.models.weights import WeightsError, load_weights, read_config

    w = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")])}, str(w))
    with pytest.raises(WeightsError, match="model.safetensors: 1 tensors hold NaN or infinite values \\(first: b\\)"):
        load_weights(w)
    save_file({"a": torch.ones(300)}, str(w))
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="unreadable weights, truncated or corrupt"):
        load_weights(w)
    c = tmp_path / "config.json"
    c.write_text('{"model_type": "spade4d-4d", "dim": "wide"}')
    save_file({"class_embed": torch.zeros(2, 8), "predicate_embed": torch.zeros(2, 8)}, str(w))
    from spade4d.models.model4d import Model4D, ModelError

    with pytest.raises(ModelError, match="config and weights do not build a model"):
        Model4D.from_pretrained(tmp_path)
    c.write_text("[1, 2]")
    with pytest.raises(WeightsError, match="expected a JSON object"):
        read_config(c, "spade4d-4d")


def test_a_checkpoint_that_does_not_fit_leaves_the_previous_one(tmp_path):
    import errno

    from spade4d.training.loop import TrainError, latest_checkpoint, save_checkpoint

    class Acc:  # accelerate's Accelerator as far as saving goes, on a disk that fills up at the second save
        is_main_process = True
        calls = 0

        def wait_for_everyone(self):
            pass

        def save_state(self, folder):
            Acc.calls += 1
            os.makedirs(folder)
            with open(os.path.join(folder, "model.safetensors"), "wb") as f:
                f.write(b"x" * 100)
            if Acc.calls == 2:
                raise OSError(errno.ENOSPC, "No space left on device")

    save_checkpoint(Acc(), tmp_path, 1, [])
    with pytest.raises(TrainError, match=r"step_000002.partial: saving the step-2 checkpoint failed \(No space left"):
        save_checkpoint(Acc(), tmp_path, 2, [])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000001"]
    assert latest_checkpoint(tmp_path).name == "step_000001"
    # a file replaced after saving (an RNG state, weights) is noticed on resume, before anything is loaded
    from spade4d.training.loop import verify_checkpoint

    ckpt = latest_checkpoint(tmp_path)
    assert verify_checkpoint(ckpt)["step"] == 1
    (ckpt / "model.safetensors").write_bytes(b"y" * 100)
    with pytest.raises(TrainError, match="model.safetensors: differs from the file this checkpoint was saved with"):
        verify_checkpoint(ckpt)


def test_a_full_disk_names_the_file_being_written(tmp_path):
    import errno

    from spade4d.io import OutputError, write_with

    def full(_tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"out.pth: cannot be written \(No space left on device; \d+ MiB free\)"):
        write_with(tmp_path / "out.pth", full)
    assert list(tmp_path.iterdir()) == []  # no temporary file left


# ---------------------------------------------------------------------------------------------------------------
# PSG records
# ---------------------------------------------------------------------------------------------------------------


def _psg(tmp_path, mutate=None, png=None):
    import numpy as np
    from PIL import Image

    root = tmp_path / "coco"
    (root / "pan").mkdir(parents=True, exist_ok=True)
    pan = np.zeros((4, 4, 3), np.uint8)
    pan[:2, :, 0], pan[2:, :, 0] = 1, 2
    (png or (lambda p: Image.fromarray(pan).save(p)))(root / "pan" / "0.png")
    d = {
        "file_name": "0.jpg", "height": 4, "width": 4, "image_id": "0", "coco_image_id": "0",
        "pan_seg_file_name": "pan/0.png",
        "segments_info": [{"id": i, "category_id": 0, "iscrowd": 0, "isthing": 1, "area": 8} for i in (1, 2)],
        "annotations": [{"bbox": [0, 0, 4, 2], "bbox_mode": 0, "category_id": 0}] * 2,
        "relations": [[0, 1, 0]],
    }  # fmt: skip
    if mutate:
        mutate(d)
    psg = {"data": [d], "thing_classes": ["a"], "stuff_classes": [], "predicate_classes": ["on"],
           "test_image_ids": ["0"]}  # fmt: skip
    (tmp_path / "psg.json").write_text(json.dumps(psg))
    from spade4d.data.psg import PSGDataset

    return PSGDataset(tmp_path / "psg.json", root)[0]


def test_psg_records_are_checked_against_their_panoptic_png(tmp_path):
    import numpy as np
    from PIL import Image

    from spade4d.data.psg4d import DatasetError

    assert len(_psg(tmp_path).objects) == 2
    cases = [
        (lambda d: d.pop("pan_seg_file_name"), "missing field 'pan_seg_file_name'"),
        (lambda d: d.update(pan_seg_file_name="pan/none.png"), "none.png: panoptic PNG not found"),
        (lambda d: d["segments_info"][1].update(id=9), "segment 1 id 9 has no pixel in pan/0.png"),
        (lambda d: d["segments_info"][1].update(id=1), "segment id 1 appears twice"),
        (lambda d: d["relations"][0].__setitem__(0, 0.5), "relation 0 index 0.5 is not an integer"),
    ]
    for mutate, message in cases:
        with pytest.raises(DatasetError, match=message):
            _psg(tmp_path, mutate)
    grey = np.zeros((4, 4), np.uint8)
    with pytest.raises(DatasetError, match="0.png: a L-mode image, expected an RGB panoptic PNG"):
        _psg(tmp_path, png=lambda p: Image.fromarray(grey).save(p, format="PNG"))
    with pytest.raises(DatasetError, match="0.png: a JPEG image, expected a COCO panoptic PNG"):
        _psg(tmp_path, png=lambda p: Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p, format="JPEG"))
