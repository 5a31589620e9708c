"""scripts/bench_accuracy.py: the settings of each kind of model, and a sweep that refuses to mix a folder trained
with other settings into its tables."""

import importlib.util
import json
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from spade4d.io import write_json

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ARGS = SimpleNamespace(preset="quick", steps=None, steps_after=None, steps_2d=None, llm="tiny", threads=1, jobs=2)


def test_kinds_differ_only_in_what_they_name(bench):
    transfer, from_core = bench.model_config(0, "transfer", ARGS)
    last, last_core = bench.model_config(0, "transfer-last", ARGS)
    scratch, scratch_core = bench.model_config(0, "scratch", ARGS)
    video, _ = bench.model_config(0, "video-transfer", ARGS)
    assert from_core and last_core and not scratch_core
    assert transfer.weights["deep"] == 1.0 and scratch.weights["deep"] == 1.0  # the presets' default
    assert last.weights["deep"] == 0.0 and replace(last, weights=transfer.weights) == transfer
    assert video.weights["deep"] == 0.0  # measured on point clouds only
    assert transfer.llm is not None and scratch.llm is None
    slow, slow_core = bench.model_config(0, "transfer-slow", ARGS)
    assert slow_core and slow.transfer_lr == 0.1 and replace(slow, transfer_lr=1.0) == transfer


def test_rows_can_be_chosen_by_what_follows_the_model(bench):
    every = SimpleNamespace(rows=None)
    some = SimpleNamespace(rows=["head", "head + 2D proposals"])
    assert bench.chosen("transfer / chain + 2D proposals", every)
    assert bench.chosen("transfer / head", some) and bench.chosen("scratch / head + 2D proposals", some)
    assert not bench.chosen("transfer / chain", some)
    assert bench.chosen("transfer, transferred parts at lr / 10 / head", some)  # a model name with a slash
    assert not bench.chosen("transfer / head + 2D proposals, 4D names kept", some)


def test_a_folder_trained_otherwise_is_refused(bench, tmp_path):
    cfg, _ = bench.model_config(1, "transfer", ARGS)
    run = tmp_path / "seed1" / "transfer"
    assert bench.other_settings(run, cfg) is None  # nothing started there
    write_json(run / "train_config.json", {"train": json.loads(json.dumps(asdict(cfg)))})
    assert bench.other_settings(run, cfg) is None
    assert bench.other_settings(run, replace(cfg, num_threads=2)) is None  # threads are not a setting of the model
    old = replace(cfg, weights={})  # trained before deep supervision became the default
    write_json(run / "train_config.json", {"train": json.loads(json.dumps(asdict(old)))})
    why = bench.other_settings(run, cfg)
    assert str(run / "train_config.json") in why and "weights" in why and "\n" not in why
    write_json(tmp_path / "data" / "dataset.json", {})
    with pytest.raises(SystemExit) as stop:  # before any training starts
        bench.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path), "--seeds", "1", "--models", "transfer"])
    assert stop.value.code == why and not (tmp_path / "seed1" / "pretrain_2d").exists()


def test_a_sceneLLM_after_checks_the_model_it_builds_on(bench, tmp_path):
    after, _ = bench.model_config(0, "transfer-tiny", ARGS)
    assert after.train_only == ("llm.",) and after.llm["llm"] == "tiny" and after.llm["chain"] == "two"
    assert bench.model_config(0, "transfer-single", ARGS)[0].llm["chain"] == "single"
    base, _ = bench.model_config(0, "transfer", ARGS)
    assert after.steps == base.steps  # by default the stage after trains as long as the 4D model did
    short = SimpleNamespace(**{**vars(ARGS), "steps_after": 150})
    assert bench.model_config(0, "transfer-tiny", short)[0].steps == 150
    assert bench.model_config(0, "transfer", short)[0] == base  # the frozen model's settings are untouched
    old = replace(base, weights={})  # the frozen 4D model was trained before deep supervision
    write_json(tmp_path / "seed0" / "transfer" / "train_config.json", {"train": json.loads(json.dumps(asdict(old)))})
    write_json(tmp_path / "data" / "dataset.json", {})
    with pytest.raises(SystemExit) as stop:
        bench.main(
            ["--data", str(tmp_path / "data"), "--out", str(tmp_path), "--seeds", "0", "--models", "transfer-tiny"]
        )
    assert "seed0/transfer/train_config.json" in stop.value.code and "weights" in stop.value.code
    assert not (tmp_path / "seed0" / "transfer-tiny").exists()


def test_the_report_names_the_commit_it_ran_from_and_each_folders_commits(bench, tmp_path):
    import subprocess

    from spade4d.provenance import code_version, record_environment

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    assert code_version(tmp_path) == "unknown"  # not a checkout
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "new.txt").write_text("untracked files are not the code that ran")
    assert code_version(tmp_path) == head and len(head) == 12
    (tmp_path / "a.txt").write_text("2")
    assert code_version(tmp_path) == head + "+changes"

    # a sweep's report: its own commit, and those each run folder was trained with (older folders: not recorded)
    out = tmp_path / "runs"
    for seed in (0, 1):
        (out / f"seed{seed}" / "scratch").mkdir(parents=True)
        record_environment(out / f"seed{seed}" / "transfer", step=0)
        record_environment(out / f"seed{seed}" / "transfer", step=300)  # resumed: a second start, same code
    write_json(
        tmp_path / "data" / "dataset.json",
        {"preset": "bench", "seed": 3, "noise": 0.0, "oov_classes": ["bicycle", "cart"], "oov_predicates": ["riding"]},
    )
    runs = {seed: {m: 40.0 + seed + i for i, m in enumerate(bench.METRICS)} for seed in (0, 1)}
    shifted = {s: {m: v + 2 for m, v in r.items()} for s, r in runs.items()}
    results = {"scratch / head": runs, "transfer / head": shifted}
    args = SimpleNamespace(out=str(out), models="scratch,transfer", report=str(tmp_path / "rep"), preset="quick",
                           llm="tiny")  # fmt: skip
    bench.report(results, [0, 1], args, tmp_path / "data", 90.0)
    rep = json.loads((tmp_path / "rep.json").read_text())
    now = code_version()
    assert rep["code"] == now
    assert rep["trained_with"] == {"seed0/scratch": ["not recorded"], "seed0/transfer": [now],
                                   "seed1/scratch": ["not recorded"], "seed1/transfer": [now]}  # fmt: skip
    md = (tmp_path / "rep.md").read_text()
    assert f"code {now}" in md and f"trained with code: not recorded (2), {now} (2)" in md
    data_line = "Data: `spade4d make-synthetic --preset bench --seed 3`; out of 4D training: objects bicycle, cart;"
    assert data_line + " predicates riding." in md and "--noise" not in md
    diff = rep["differences"]["transfer - scratch (head)"]["R@50"]
    assert diff["mean"] == diff["low"] == diff["high"] == pytest.approx(2.0) and diff["n"] == 2
