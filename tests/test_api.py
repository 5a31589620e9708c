"""The README's Python example, run as written (with its two paths pointed at a tiny model and the tests' data)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def model_dir(synthetic_root, tmp_path_factory):
    import json

    import torch

    from spade4d.models.model4d import Model4D, Model4DConfig

    d = json.loads((synthetic_root / "dataset.json").read_text())
    torch.manual_seed(0)
    tiny = dict(
        voxel_size=0.15, channels=(8, 16), dim=16, num_queries=6, decoder_layers=1, heads=2, ffn_dim=32, window=3
    )
    model = Model4D(Model4DConfig(classes=d["thing_classes"] + d["stuff_classes"], predicates=d["predicates"], **tiny))
    model.config.object_threshold = 0.0  # an untrained model: keep its tubes, so the example has relations to print
    return model.save_pretrained(tmp_path_factory.mktemp("api") / "model")


def test_readme_python_example_runs_as_written(model_dir, synthetic_root, tmp_path, monkeypatch, capsys):
    code = readme_example()
    code = code.replace('"outputs/demo/finetune_4d/model"', repr(str(model_dir)))
    code = code.replace('"outputs/demo/synthetic/psg4d_pc"', repr(str(synthetic_root / "psg4d_pc")))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"R@50 \d+\.\d  mR@50 \d+\.\d", out)
    from spade4d.evaluation.predictions import load_predictions_4d

    assert len(load_predictions_4d(tmp_path / "predictions.json")) == 7  # the tests' 7 test sequences


def test_pipeline_takes_plain_arrays_and_checks_options(model_dir):
    import numpy as np

    import spade4d

    pipe = spade4d.Pipeline4D.from_pretrained(model_dir, window=2)
    frames = [np.random.default_rng(t).uniform(-2, 2, size=(300, 3)) for t in range(4)]
    graph = pipe(frames, "mine")
    assert graph.video_id == "mine" and graph.num_frames == 4 and graph.num_points == [300] * 4
    with pytest.raises(TypeError, match="unknown option 'windw'"):
        spade4d.Pipeline4D.from_pretrained(model_dir, windw=2)
    with pytest.raises(ValueError, match="spans must be one of llm, head"):
        spade4d.Pipeline4D.from_pretrained(model_dir, spans="all")
    with pytest.raises(ValueError, match=r"frame 1: xyz has shape \(5,\)"):
        pipe([np.zeros((3, 3)), np.zeros(5)])
    assert "Pipeline4D" in dir(spade4d)
