import numpy as np
from PIL import Image

from spade4d.data.psg4d import PSG4DPointCloud
from spade4d.viz.render import render_sequence


def test_render_writes_non_blank_images_of_the_right_size(synthetic_root, tmp_path):
    ds = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")
    points, graph = ds[0]
    out = render_sequence(points, graph, tmp_path / "r", width=320, height=240, frames=[0, 3], progress=False)
    assert [p.name for p in out["frames"]] == ["frame_000.png", "frame_003.png"]
    img = np.asarray(Image.open(out["frames"][0]).convert("RGB"))
    assert img.shape == (240, 320 + 320, 3)  # the view plus the relation panel
    view = img[:, :320].astype(float)
    assert view.std() > 10  # points were drawn, not a blank canvas
    # object colours appear: some pixels are strongly saturated (things), not only grey/white
    sat = view.max(-1) - view.min(-1)
    assert (sat > 80).mean() > 0.002
    gif = Image.open(out["gif"])
    assert gif.n_frames == 2 and gif.size == (640, 240)
