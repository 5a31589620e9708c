import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_preset():
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
def synthetic_root(tmp_path_factory, tiny_preset):
    from spade4d.data.synthetic.generate import generate

    out = tmp_path_factory.mktemp("syn") / "data"
    generate(out, tiny_preset, seed=3, workers=1, progress=False)
    return out
