import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def tiny_preset_value():
    """The tests' synthetic preset (a plain function too, for ``python tests/conftest.py DIR``)."""
    from spade4d.data.synthetic.generate import Preset

    # 7 test sequences cover every template once; train covers the 5 in-vocabulary templates
    return Preset(
        frames=6,
        width=96,
        height=72,
        train=5,
        val=1,
        test=7,
        images_2d=21,
        width_2d=128,
        height_2d=96,
        min_points=3,
        min_pixels_2d=8,
    )


@pytest.fixture(scope="session")
def tiny_preset():
    return tiny_preset_value()


def make_synthetic(out, preset) -> Path:
    """The tests' synthetic dataset (needs Open3D to render)."""
    from spade4d.data.synthetic.generate import generate

    generate(out, preset, seed=3, workers=1, progress=False)
    return Path(out)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory, request):
    # SPADE4D_TEST_SYNTHETIC=DIR: a copy of this dataset made elsewhere, for a machine without Open3D (a GPU box
    # running tests/test_cuda.py); make it with: python tests/conftest.py DIR
    pre = os.environ.get("SPADE4D_TEST_SYNTHETIC")
    if pre:
        if not (Path(pre) / "dataset.json").is_file():
            raise FileNotFoundError(f"SPADE4D_TEST_SYNTHETIC={pre}: no dataset.json there")
        return Path(pre)
    return make_synthetic(tmp_path_factory.mktemp("syn") / "data", request.getfixturevalue("tiny_preset"))


@pytest.fixture(scope="session")
def clip(synthetic_root):
    """(classes, predicates, sequence, graph) of the first training sequence: one clip for the SceneLLM tests."""
    import json

    from spade4d.data.psg4d import PSG4DPointCloud

    d = json.loads((synthetic_root / "dataset.json").read_text())
    seq, graph = PSG4DPointCloud(synthetic_root / "psg4d_pc", "train")[0]
    return d["thing_classes"] + d["stuff_classes"], d["predicates"], seq, graph


if __name__ == "__main__":
    import sys

    make_synthetic(sys.argv[1], tiny_preset_value())
