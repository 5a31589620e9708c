"""Config files and key=value overrides (spade4d.config): the shipped YAML files are the presets, unknown keys and
wrong types are refused with their name, and a run's saved config repeats the run."""

import json
from pathlib import Path

import pytest

from spade4d.config import ConfigError, dump_config, load_config
from spade4d.training.finetune_4d import PRESETS, Train4DConfig, nested_schema, preset

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "finetune_4d"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_files_are_the_presets(name):
    assert load_config(Train4DConfig, Train4DConfig(), CONFIGS / f"{name}.yaml", (), nested_schema()) == PRESETS[name]


def _other_kinds():
    from spade4d.data.synthetic.generate import PRESETS as SYNTHETIC
    from spade4d.data.synthetic.generate import Preset
    from spade4d.models.scene_llm import LLM_PRESETS, SceneLLMConfig
    from spade4d.training.pretrain_2d import PRESETS_2D, Pretrain2DConfig, nested_schema_2d
    from spade4d.training.pretrain_diffusion import DIFFUSION_PRESETS, DiffusionTrainConfig

    return {
        "synthetic": (Preset, SYNTHETIC, None),
        "pretrain_diffusion": (DiffusionTrainConfig, DIFFUSION_PRESETS, None),
        "pretrain_2d": (Pretrain2DConfig, PRESETS_2D, nested_schema_2d()),
        "scene_llm": (SceneLLMConfig, LLM_PRESETS, None),
    }


@pytest.mark.parametrize("kind", ["synthetic", "pretrain_diffusion", "pretrain_2d", "scene_llm"])
def test_every_preset_of_every_stage_is_a_config_file(kind):
    cls, presets, nested = _other_kinds()[kind]
    files = sorted((CONFIGS.parent / kind).glob("*.yaml"))
    assert [f.stem for f in files] == sorted(presets)
    for f in files:
        assert load_config(cls, presets[f.stem], f, (), nested) == presets[f.stem], f


def test_the_2d_and_synthetic_presets_take_files_and_overrides(tmp_path):
    from spade4d.data.synthetic.generate import synthetic_preset
    from spade4d.training.finetune_4d import scene_llm_settings
    from spade4d.training.pretrain_2d import preset_2d
    from spade4d.training.pretrain_diffusion import diffusion_preset

    cfg = preset_2d("quick", None, ["model.dim=32", "diffusion.steps=7", "weights.dice=1"], steps=5)
    assert cfg.steps == 5 and cfg.model["dim"] == 32 and cfg.diffusion == {"steps": 7} and cfg.weights == {"dice": 1}
    with pytest.raises(ConfigError, match="unknown key 'model.dimm'"):
        preset_2d("quick", None, ["model.dimm=32"])
    with pytest.raises(ConfigError, match="unknown key 'backbone.blocks'"):
        diffusion_preset("quick", None, ["backbone.blocks=3"])
    assert synthetic_preset("quick", None, ["train=3", "test=2"]).train == 3
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        synthetic_preset("tiny")
    llm = scene_llm_settings(str(CONFIGS.parent / "scene_llm" / "tiny.yaml"), "single")
    assert llm["llm"] == "tiny" and llm["train_base"] is True and llm["chain"] == "single"


def test_overrides_merge_into_nested_fields_and_dump_round_trips(tmp_path):
    cfg = preset("quick", None, ["steps=50", "model.dim=32", "weights.dice=2.5", "frame_strides=[1, 3]", "lr=1e-4"])
    assert cfg.steps == 50 and cfg.lr == 1e-4 and cfg.frame_strides == (1, 3)
    assert cfg.model == {"voxel_size": 0.1, "num_queries": 16, "dim": 32} and cfg.weights == {"deep": 1.0, "dice": 2.5}
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    assert load_config(Train4DConfig, Train4DConfig(), tmp_path / "c.yaml", (), nested_schema()) == cfg
    assert preset("quick", tmp_path / "c.yaml", ["steps=7"], lr=0.5) == Train4DConfig(
        **{**cfg.__dict__, "steps": 7, "lr": 0.5}
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["stepz=3"], "unknown key 'stepz'"),
        (["model.dimm=3"], "unknown key 'model.dimm' \\(Model4DConfig has"),
        (["weights.dicee=1"], "unknown key 'weights.dicee' \\(LossWeights has"),
        (["steps=abc"], "steps: expected a int, got 'abc'"),
        (["lift=3"], "lift: expected a bool"),
        (["steps"], "is not key=value"),
    ],
)
def test_unknown_keys_and_wrong_types_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        preset("quick", None, overrides)


def test_a_bad_config_file_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("steps: 10\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key 'learning_rate'"):
        preset("quick", f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        preset("quick", f)


def test_a_runs_saved_config_repeats_the_run(synthetic_root, tmp_path, capsys):
    from spade4d.cli import main

    tiny = ["model.voxel_size=0.15", "model.channels=[8, 16]", "model.dim=16", "model.num_queries=6"]
    tiny += ["model.decoder_layers=1", "model.heads=2", "model.ffn_dim=32", "model.window=3"]
    argv = ["finetune-4d", "--format", "synthetic", "--root", str(synthetic_root), "--quiet"]
    run = ["--config", str(CONFIGS / "quick.yaml"), "steps=2", "clip_frames=3", "points_per_frame=256"]
    run += ["checkpoint_every=2", "bn_windows=2", *tiny]
    assert main([*argv, "--out", str(tmp_path / "a"), *run]) == 0
    saved = tmp_path / "a" / "train_config.json"
    first = load_config(Train4DConfig, Train4DConfig(), saved, (), nested_schema())
    assert first.steps == 2 and first.model["dim"] == 16 and first.clip_frames == 3
    assert main([*argv, "--out", str(tmp_path / "b"), "--config", str(saved)]) == 0
    again = json.loads((tmp_path / "b" / "train_config.json").read_text())
    assert again == json.loads(saved.read_text())  # the same config, so the same run
    err = capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "c"), "stepz=2"]) == 2
    assert "unknown key 'stepz'" in capsys.readouterr().err and "Traceback" not in err


def test_video_defaults_come_before_the_users_settings():
    from spade4d.training.finetune_4d import video_preset, video_settings

    cfg = video_preset("quick", None, [], 4, True)
    assert cfg == video_settings(PRESETS["quick"], 4, from_2d=True)
    assert cfg.weights["deep"] == 0.0 and PRESETS["quick"].weights["deep"] == 1.0 and cfg.lift is True
    asked = video_preset("quick", None, ["weights.deep=1", "augment.color=0.2"], 8, False, steps=5)
    assert asked.weights["deep"] == 1.0 and asked.steps == 5 and asked.model["video"] == {"stride": 8}
    assert asked.augment["color"] == 0.2 and asked.augment["rotate"] == 0.0  # merged into the video defaults
