"""Fine-tuning: checkpoints, exact resume, outputs of a run, two CPU ranks agreeing."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spade4d.training.finetune_4d import TrainError, finetune_4d, preset

TINY = {
    "voxel_size": 0.15,
    "channels": [8, 16],
    "dim": 16,
    "num_queries": 6,
    "decoder_layers": 1,
    "heads": 2,
    "ffn_dim": 32,
    "window": 2,
}
ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(steps, **kw):
    return preset(
        "quick",
        steps=steps,
        checkpoint_every=2,
        log_every=1,
        clip_frames=4,
        points_per_frame=256,
        warmup=1,
        model=TINY,
        **kw,
    )


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_resumes_exactly(root, out, cfg, straight):
    """The run of ``cfg`` killed after its step-2 checkpoint (what is left on disk), then resumed, ends with the
    uninterrupted run's ``straight`` weights; returns the resumed run."""
    finetune_4d(root, out, cfg, progress=False)
    shutil.rmtree(out / "checkpoints" / "step_000004")
    resumed = finetune_4d(root, out, cfg, resume=True, progress=False)
    a, b = params(straight.model), params(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    return resumed


def test_resume_continues_exactly(synthetic_root, tmp_path, capsys):
    root = synthetic_root / "psg4d_pc"
    straight = finetune_4d(root, tmp_path / "a", tiny_cfg(4), progress=False)
    # the same run killed after its step-2 checkpoint (what is left on disk), then resumed
    finetune_4d(root, tmp_path / "b", tiny_cfg(4), progress=False)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "b" / "model")
    resumed = finetune_4d(root, tmp_path / "b", tiny_cfg(4), resume=True, progress=False)
    assert resumed.step == 4
    a, b = params(straight.model), params(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert [h["loss"] for h in straight.history] == pytest.approx([h["loss"] for h in resumed.history])
    run = tmp_path / "a"
    assert (run / "model" / "config.json").is_file() and (run / "loss.png").stat().st_size > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    assert list((run / "logs").glob("events.out.tfevents.*"))
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 4
    with pytest.raises(TrainError, match="--resume"):
        finetune_4d(root, run, tiny_cfg(4), progress=False)

    # stopped on purpose at step 3 of the schedule (finetune-4d --stop-after): checkpointed there, no model; resumed,
    # it ends with the uninterrupted run's weights
    stopped = finetune_4d(root, tmp_path / "c", tiny_cfg(4), progress=False, stop_after=3)
    assert stopped.model_dir is None and stopped.step == 3 and not (tmp_path / "c" / "model").exists()
    assert sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir()) == ["step_000002", "step_000003"]
    assert [h["step"] for h in stopped.history] == [1, 2, 3]
    resumed = finetune_4d(root, tmp_path / "c", tiny_cfg(4), resume=True, progress=False)
    assert resumed.model_dir == tmp_path / "c" / "model"
    c = params(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], c[k], msg=k)
    starts = json.loads((tmp_path / "c" / "environment.json").read_text())  # each start of the run, recorded
    assert [e["step"] for e in starts] == [0, 3] and starts[0]["torch"] == torch.__version__
    assert {"spade4d", "code", "python", "platform"} <= set(starts[0])
    assert_first_steps_repeat(run, capsys)


def assert_first_steps_repeat(run, capsys):
    """``spade4d reproduce`` on the finished 4-step run ``run``: its first two steps trained again log the same
    values bit for bit; once its history or environment is edited, the command says where and what, and exits 1."""
    from spade4d.cli import main
    from spade4d.training.reproduce import rerun

    rep = rerun(run, steps=2, progress=False)
    assert rep.steps == 2 and rep.identical and not rep.mismatches and not rep.changed
    assert {r.step for r in rep.rows} == {1, 2}
    assert {"loss", "lr", "loss_dice"} <= {r.key for r in rep.rows} and "time" not in {r.key for r in rep.rows}
    logged = json.loads((run / "trainer_state.json").read_text())["history"]
    assert [r.logged for r in rep.rows if r.key == "loss"] == [h["loss"] for h in logged[:2]]
    one = next(r for r in rep.rows if r.key == "loss_dice" and r.step == 2)
    one.repeated = one.logged * 1.5  # a tolerance is relative to the logged value
    assert rep.mismatches == [one] and not replace(rep, tolerance=0.51).mismatches
    assert replace(rep, tolerance=0.49).mismatches == [one]

    env = json.loads((run / "environment.json").read_text())
    env[0]["torch"] = "1.0.0"
    (run / "environment.json").write_text(json.dumps(env))
    state = json.loads((run / "trainer_state.json").read_text())
    state["history"][1]["loss_dice"] += 0.5
    (run / "trainer_state.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["reproduce", "--run", str(run), "--steps", "2", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 3  # the header and the two logged steps
    assert err.count("\n") == 1 and "trainer_state.json" in err and "1 of" in err and "loss_dice" in err
    assert f"torch 1.0.0 then, {torch.__version__} now" in err and "\x1b" not in err
    assert main(["reproduce", "--run", str(run.parent), "--quiet"]) == 2  # a folder that is no run
    assert "train_config.json: not found" in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not found",
)
def test_two_cpu_processes_train_the_full_method_through_the_launcher_script(synthetic_root, tmp_path):
    """scripts/finetune_4d.py takes every option of finetune-4d: two ranks train the method the README describes
    (2D transfer + SceneLLM) for two steps, in step."""
    import sys as _sys

    _sys.path.insert(0, str(ROOT / "tests"))
    from test_core2d import tiny_2d

    core = tiny_2d().save_pretrained(tmp_path / "core2d")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    report = tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    tiny = [f"model.{k}={json.dumps(v)}" for k, v in TINY.items()]
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29517", str(ROOT / "scripts" / "finetune_4d.py")]
    cmd += ["--format", "synthetic", "--root", str(synthetic_root), "--out", str(tmp_path / "run")]
    cmd += ["--steps", "2", "--checkpoint-every", "2", "--init-from-2d", str(core), "--llm", "tiny"]
    cmd += ["--report", str(report), *tiny, "clip_frames=4", "points_per_frame=256", "bn_windows=2"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads(Path(f"{report}.rank{r}").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and all(r["llm"] for r in ranks)
    # DDP averaged the gradients: both ranks hold the same parameters after drawing different clips
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)
    assert ranks[0]["abs"] == pytest.approx(ranks[1]["abs"], rel=1e-6)
    run = tmp_path / "run"
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 2
    assert json.loads((run / "transfer.json").read_text())["moved"]  # the 2D core's tensors moved
    assert (run / "model" / "scene_llm" / "lora").is_dir() and (run / "model" / "README.md").is_file()


def test_open_vocabulary_training_leaves_unseen_names_out_of_the_loss(synthetic_root, tmp_path):
    from spade4d.data.psg4d import PSG4DPointCloud
    from spade4d.models.model4d import Model4D
    from spade4d.models.text import encode_texts

    root = synthetic_root / "psg4d_pc"
    meta = json.loads((synthetic_root / "dataset.json").read_text())
    oov = set(meta["oov_classes"]) | set(meta["oov_predicates"])
    used_c, used_p = PSG4DPointCloud(root, "train").names_used()
    assert not (used_c | used_p) & oov and "person" in used_c  # the OOV scripts are kept out of 4D training
    res = finetune_4d(root, tmp_path / "seen", tiny_cfg(2), progress=False)
    trained = json.loads((tmp_path / "seen" / "train_config.json").read_text())["model"]
    assert set(trained["classes"]) == used_c and set(trained["predicates"]) == used_p
    full = meta["thing_classes"] + meta["stuff_classes"]
    back = Model4D.from_pretrained(res.model_dir)  # the saved model scores every name, the unseen ones too
    assert back.config.classes == full and back.config.predicates == meta["predicates"]
    assert set(back.config.trained_classes) == used_c  # what the 2D core's proposals may rename (proposals.py)
    assert back.config.trained_classes == [c for c in full if c in used_c]
    i = full.index("bicycle")
    torch.testing.assert_close(back.class_embed[i], encode_texts(["bicycle"])[0])
    finetune_4d(root, tmp_path / "all", tiny_cfg(2, train_vocabulary="all"), progress=False)
    trained = json.loads((tmp_path / "all" / "train_config.json").read_text())["model"]
    assert trained["classes"] == full
    with pytest.raises(TrainError, match="train_vocabulary"):
        finetune_4d(root, tmp_path / "bad", tiny_cfg(2, train_vocabulary="some"), progress=False)


def test_checkpoints_leave_frozen_parameters_out_and_resume_exactly(synthetic_root, tmp_path):
    from safetensors import safe_open

    root = synthetic_root / "psg4d_pc"
    cfg = tiny_cfg(4, train_only=("head.",))
    straight = finetune_4d(root, tmp_path / "a", cfg, progress=False)
    with safe_open(str(tmp_path / "a" / "checkpoints" / "step_000002" / "model.safetensors"), "pt") as st:
        saved = set(st.keys())
    trainable = {n for n, p in straight.model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in straight.model.named_parameters() if not p.requires_grad}
    assert trainable and frozen
    assert trainable <= saved and not (frozen & saved)
    # killed after step 2, resumed: the frozen parameters come from the run's set-up, the rest from the checkpoint
    assert_resumes_exactly(root, tmp_path / "b", cfg, straight)
    # a checkpoint without tensors this configuration trains is refused, naming the file
    with pytest.raises(TrainError, match=r"step_000004.*model\.safetensors.*lacks"):
        finetune_4d(root, tmp_path / "b", tiny_cfg(6), resume=True, progress=False)


@pytest.mark.parametrize("apart", [False, True])
def test_gradient_clipping_per_part_keeps_a_small_gradient_whole(tmp_path, apart):
    """A part with a large gradient sets the common norm and shrinks the other part's step; clipped apart, the
    small gradient is left as it is and the large one is clipped on its own."""
    from spade4d.training.loop import LoopSettings, make_accelerator, train_loop

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"small": torch.nn.Linear(3, 1, bias=False), "big": torch.nn.Linear(3, 1, bias=False)})
    x = torch.ones(1, 3)
    seen = {}

    def step_fn(step, k):
        return {"loss_small": model["small"](x).sum() * 0.01, "loss_big": model["big"](x).sum() * 100.0}

    acc = make_accelerator(tmp_path)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model_p, opt, sched = acc.prepare(model, opt, sched)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = [list(model["small"].parameters()), list(model["big"].parameters())] if apart else None
    settings = LoopSettings(steps=1, grad_clip=1.0, checkpoint_every=1000)
    train_loop(acc, model_p, opt, sched, tmp_path, settings, step_fn, "clip", progress=False, params=groups)
    for n, p in model.named_parameters():
        seen[n] = float((before[n] - p.detach()).norm())  # SGD with lr 1: the step is the clipped gradient
    small, big = 0.01 * float(x.norm()), 100.0 * float(x.norm())  # each part's own gradient norm
    if apart:
        assert seen["small.weight"] == pytest.approx(small, rel=1e-4)
        assert seen["big.weight"] == pytest.approx(1.0, rel=1e-4)
    else:
        assert seen["small.weight"] == pytest.approx(small / (small**2 + big**2) ** 0.5, rel=1e-4)  # shrunk 173x
        assert seen["small.weight"] ** 2 + seen["big.weight"] ** 2 == pytest.approx(1.0, rel=1e-4)


def test_saved_model_carries_recalibrated_batchnorm_statistics_and_the_cli_recalibrates(synthetic_root, tmp_path):
    from safetensors.torch import load_file

    from spade4d.cli import main

    root = synthetic_root / "psg4d_pc"
    finetune_4d(root, tmp_path / "kept", tiny_cfg(2, bn_windows=0), progress=False)
    finetune_4d(root, tmp_path / "precise", tiny_cfg(2), progress=False)
    kept = load_file(tmp_path / "kept" / "model" / "model.safetensors")
    precise = load_file(tmp_path / "precise" / "model" / "model.safetensors")
    stats = [k for k in kept if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(kept[k], precise[k]) for k in kept if k not in stats and "num_batches" not in k)
    assert not any(torch.allclose(kept[k], precise[k]) for k in stats if k.endswith("running_var"))
    # the CLI on the training-time statistics gives what training saved (same weights, same windows)
    argv = ["recalibrate-bn", "--model", str(tmp_path / "kept" / "model"), "--root", str(root), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "fixed")]) == 0
    fixed = load_file(tmp_path / "fixed" / "model.safetensors")
    for k in stats:
        torch.testing.assert_close(fixed[k], precise[k], msg=k)
    assert torch.equal(load_file(tmp_path / "kept" / "model" / "model.safetensors")[stats[0]], kept[stats[0]])


def test_the_demos_training_stage_runs_as_a_function_call(synthetic_root, tmp_path):
    """The demo's 4D stage calls the library with the preset it names (no argument lists to drift)."""
    from spade4d.demo import DemoSettings, demo_model_4d

    model_dir = demo_model_4d(tmp_path, synthetic_root, None, DemoSettings(steps=1, llm="none"), log=lambda m: None)
    assert model_dir == tmp_path / "finetune_4d" / "model" and (model_dir / "config.json").is_file()
    saved = json.loads((tmp_path / "finetune_4d" / "train_config.json").read_text())["train"]
    assert saved["steps"] == 1 and saved["llm"] is None and saved["clip_frames"] == preset("quick").clip_frames


def test_validation_keeps_the_best_model_and_any_checkpoint_exports_to_a_model_folder(synthetic_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from spade4d.cli import main
    from spade4d.models.model4d import Model4D

    run = tmp_path / "run"
    cfg = tiny_cfg(4, validate_every=2, val_sequences=2, bn_windows=0)
    res = finetune_4d(synthetic_root / "psg4d_pc", run, cfg, progress=False)
    passes = [h for h in res.history if "val_R@50" in h]
    assert [h["step"] for h in passes] == [2, 4]
    assert all(0 <= h["val_R@50"] <= 100 and h["val_loss"] > 0 and "loss" in h for h in passes)
    best = json.loads((run / "model_best" / "validation.json").read_text())
    first_best = max(passes, key=lambda h: (h["val_R@50"], -h["step"]))  # ties keep the earlier model
    assert best["step"] == first_best["step"] and best["val_R@50"] == first_best["val_R@50"]
    from spade4d.data.psg4d import PSG4DPointCloud

    assert best["sequences"] == min(2, len(PSG4DPointCloud(synthetic_root / "psg4d_pc", "val")))
    saved = Model4D.from_pretrained(run / "model_best")
    assert saved.config.classes == res.model.config.classes and saved.config.frames["floor_normal"] == "+z"
    events = EventAccumulator(str(next((run / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert [e.step for e in events.Scalars("val_R@50")] == [2, 4]

    # the last checkpoint as a model folder: the trained model exactly (no BatchNorm recalibration here)
    assert main(["export-model", "--run", str(run), "--out", str(tmp_path / "exported")]) == 0
    exported = Model4D.from_pretrained(tmp_path / "exported")
    final = params(res.model)
    for k, v in params(exported).items():
        torch.testing.assert_close(v, final[k], msg=k)
    assert exported.config.to_dict() == res.model.config.to_dict()
    step2 = run / "checkpoints" / "step_000002"
    assert main(["export-model", "--run", str(run), "--checkpoint", str(step2)]) == 0
    assert (run / "model_step_000002" / "config.json").is_file()
    assert main(["export-model", "--run", str(tmp_path / "nothing")]) == 2


def test_weight_average_follows_its_formula_swaps_in_and_round_trips(tmp_path):
    from spade4d.training.loop import WeightAverage

    lin = torch.nn.Linear(2, 1)
    lin.bias.requires_grad_(False)  # frozen: not averaged
    avg = WeightAverage(lin, decay=0.5)
    assert set(avg.average) == {"weight"}
    start = lin.weight.detach().clone()
    values = [start]
    expected = start.clone()
    for n in (1, 2, 3, 4):
        with torch.no_grad():
            lin.weight.add_(1.0)
        avg.update()
        d = min(0.5, (1 + n) / (10 + n))  # 2/11, 3/12, 4/13, then the decay itself
        expected = d * expected + (1 - d) * lin.weight.detach()
        values.append(lin.weight.detach().clone())
        torch.testing.assert_close(avg.average["weight"], expected)
    own = lin.weight.detach().clone()
    with avg.applied():
        torch.testing.assert_close(lin.weight.detach(), expected)
    torch.testing.assert_close(lin.weight.detach(), own)  # the model's own weights come back
    avg.save(tmp_path)
    other = WeightAverage(lin, decay=0.5)
    other.load(tmp_path)
    assert other.updates == 4
    torch.testing.assert_close(other.average["weight"], expected)
    with pytest.raises(TrainError, match="without weight averaging"):
        other.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(lin, decay=1.0)


def test_weight_averaged_run_saves_the_average_and_resumes_exactly(synthetic_root, tmp_path):
    from safetensors.torch import load_file

    root = synthetic_root / "psg4d_pc"
    cfg = tiny_cfg(4, weight_average=0.6, validate_every=0)
    straight = finetune_4d(root, tmp_path / "a", cfg, progress=False)
    average = load_file(str(tmp_path / "a" / "checkpoints" / "step_000004" / "weight_average.safetensors"))
    saved = straight.model.state_dict()
    for name, value in average.items():  # the saved model's weights are the average, not the last step's
        torch.testing.assert_close(saved[name], value, msg=name)
    plain = finetune_4d(root, tmp_path / "p", tiny_cfg(4, validate_every=0), progress=False).model.state_dict()
    assert any(not torch.equal(plain[n], v) for n, v in average.items())
    # killed after its step-2 checkpoint, then resumed: the average continues from the checkpoint's
    assert_resumes_exactly(root, tmp_path / "b", cfg, straight)
    # a checkpoint exports the averaged weights, as the end of the run saves them
    from spade4d.training.validation import export_checkpoint

    exported = export_checkpoint(tmp_path / "a", out=tmp_path / "exported")
    state = load_file(str(next(exported.glob("*.safetensors"))))
    for name, value in average.items():
        torch.testing.assert_close(state[name], value, msg=name)
