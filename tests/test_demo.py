"""The README's demo, end to end, with few training steps: synthetic data -> 2D pretraining -> 4D + SceneLLM ->
head and chained inference -> scoring -> renders. Minutes on 2 cores, so it is marked ``demo`` and left out of the
default run; ``make test-demo`` (called by CI) runs it. It exists because the demo once broke silently for two
sessions while every unit test passed."""

import json

import pytest

from spade4d.cli import main
from spade4d.evaluation.predictions import load_predictions_4d

pytestmark = pytest.mark.demo


def test_the_demo_runs_end_to_end_and_writes_what_the_readme_promises(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "10", "--steps-2d", "10"]) == 0
    meta = json.loads((out / "synthetic" / "dataset.json").read_text())
    for suffix in ("", "_llm", "_2d"):
        metrics = json.loads((out / f"metrics_test{suffix}.json").read_text())
        assert (
            metrics["oov"]["num_gt_relations"] + metrics["in_vocabulary"]["num_gt_relations"]
            == (metrics["num_gt_relations"])
        )
        assert metrics["num_sequences"] == meta["preset_values"]["test"]
        assert metrics["num_gt_relations"] > 0
        for k in ("R@20", "R@50", "R@100", "mR@50"):
            assert 0.0 <= metrics[k] <= 100.0
        assert metrics["R@20"] <= metrics["R@50"] <= metrics["R@100"]
        assert (out / f"metrics_test{suffix}_per_predicate.png").stat().st_size > 0
        pred = load_predictions_4d(out / f"predictions_test{suffix}.json")
        assert len(pred) == metrics["num_sequences"]
    # PSG4D's point-cloud layout of the same test split: the same points, stuff relations not recallable
    gta_pc = json.loads((out / "metrics_test_psg4d_gta_pc.json").read_text())
    plain = json.loads((out / "metrics_test.json").read_text())
    assert gta_pc["num_gt_relations"] == plain["num_gt_relations"] and gta_pc["unrecallable_gt_relations"] > 0
    assert gta_pc["R@100"] <= plain["R@100"]
    # the 2D core's tubes join the head's: the same 4D objects first
    head, with_2d = (load_predictions_4d(out / f"predictions_test{x}.json") for x in ("", "_2d"))
    for vid, g in head.items():
        assert [o.id for o in with_2d[vid].objects[: len(g.objects)]] == [o.id for o in g.objects]
    # the chain's prediction file is the SceneLLM's: its objects carry masks over the sequence
    assert any(g.objects for g in load_predictions_4d(out / "predictions_test_llm.json").values())
    for name in ("render_pred", "render_gt"):
        frames = sorted((out / name).glob("frame_*.png"))
        assert frames and all(f.stat().st_size > 1000 for f in frames)
    assert (out / "finetune_4d" / "model" / "scene_llm").is_dir()
    assert (out / "pretrain_2d" / "model" / "config.json").is_file()
    timings = json.loads((out / "timings.json").read_text())
    assert list(timings["stages"]) == ["data", "2D core", "4D training", "inference and scoring", "renders"]
    assert timings["stages"]["4D training"] > 0 and timings["seconds"] >= max(timings["stages"].values())
    # a second run finds everything and redoes only inference, scoring and renders
    trained = [out / "finetune_4d" / "model" / "model.safetensors", out / "pretrain_2d" / "model" / "config.json"]
    stamps = [f.stat().st_mtime_ns for f in trained]
    assert main(["demo", "--out", str(out), "--steps", "10", "--steps-2d", "10"]) == 0
    assert [f.stat().st_mtime_ns for f in trained] == stamps
    # the video path on the same data and 2D core: a video model, video predictions, video R@K, a rendered video
    assert main(["demo", "--video", "--out", str(out), "--steps", "10", "--steps-2d", "10"]) == 0
    assert [f.stat().st_mtime_ns for f in trained] == stamps  # the 2D core is reused, not retrained
    video = json.loads((out / "metrics_video_test.json").read_text())
    stages = json.loads((out / "timings_video.json").read_text())["stages"]
    assert list(stages) == ["data", "2D core", "video model, inference, scoring and render"]
    assert video["num_gt_relations"] > 0 and video["videos_without_predictions"] == 0
    assert video["oov"]["num_gt_relations"] + video["in_vocabulary"]["num_gt_relations"] == video["num_gt_relations"]
    model = json.loads((out / "finetune_video" / "model" / "config.json").read_text())
    assert model["video"] == {"stride": 4} and model["lift"] is not None
    raw = json.loads((out / "predictions_video_test.json").read_text())
    assert raw["format"] == "spade4d-predictions-video" and len(raw["sequences"]) == meta["preset_values"]["test"]
    assert len(list((out / "render_video").glob("frame_*.png"))) == meta["preset_values"]["frames"]
    # with the 2D core's tubes: the video model's objects first, unchanged, then the core's, scored apart
    with_2d = json.loads((out / "predictions_video_test_2d.json").read_text())["sequences"]
    for vid, seq in raw["sequences"].items():
        ids = [o["id"] for o in seq["objects"]]
        assert [o["id"] for o in with_2d[vid]["objects"][: len(ids)]] == ids
    assert json.loads((out / "metrics_video_test_2d.json").read_text())["num_gt_relations"] == video["num_gt_relations"]
