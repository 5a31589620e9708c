"""Video scene graphs drawn on their frames: each object's pixel mask as a translucent colour with its label,
each relation that holds on the frame as an arrow from subject to object with its predicate; one PNG per frame
and a GIF of them (docs/video.md)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spade4d.io import atomic_path
from spade4d.structures import SceneGraph4D


def _colour(k: int) -> np.ndarray:
    """A distinct, saturated colour per object (golden-ratio hues)."""
    import colorsys

    return np.array(colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.8, 1.0)) * 255


def draw_frame(rgb: np.ndarray, graph: SceneGraph4D, t: int, top_k: int = 10, min_score: float = 0.0, scale=None):
    """One frame (H, W, 3 uint8) with ``graph``'s masks (flattened or (H, W)), labels and the ``top_k`` best
    relations holding on frame ``t``, upscaled ``scale`` times (default: to at least 480 pixels wide) so that text
    stays legible. Returns a PIL image."""
    from PIL import Image, ImageDraw

    H, W = rgb.shape[:2]
    scale = scale or max(1, -(-480 // W))
    out = rgb.astype(np.float32)
    centres = {}
    for k, o in enumerate(graph.objects):
        m = o.masks.get(t)
        if m is None:
            continue
        m = np.asarray(m, dtype=bool).reshape(H, W)
        if not m.any():
            continue
        out[m] = 0.45 * out[m] + 0.55 * _colour(k)
        ys, xs = np.nonzero(m)
        centres[o.id] = (float(xs.mean()) * scale, float(ys.mean()) * scale, k, o.label)
    im = Image.fromarray(out.clip(0, 255).astype(np.uint8)).resize((W * scale, H * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    rels = [r for r in graph.sorted_relations() if r.score >= min_score and any(s <= t <= e for s, e in r.spans)]
    for r in [r for r in rels if r.subject in centres and r.object in centres][:top_k]:
        (x0, y0, *_), (x1, y1, *_) = centres[r.subject], centres[r.object]
        d.line([(x0, y0), (x1, y1)], fill=(255, 255, 255), width=2)
        a = np.arctan2(y1 - y0, x1 - x0)
        for side in (-0.5, 0.5):  # the arrow head at the object
            d.line([(x1, y1), (x1 - 9 * np.cos(a + side), y1 - 9 * np.sin(a + side))], fill=(255, 255, 255), width=2)
        d.text(((x0 + x1) / 2 + 3, (y0 + y1) / 2 + 3), r.predicate, fill=(255, 255, 0))
    for x, y, k, label in centres.values():
        d.text((x + 1, y + 1), label, fill=(0, 0, 0))
        d.text((x, y), label, fill=tuple(int(c) for c in _colour(k)))
    d.text((4, 4), f"frame {t}", fill=(255, 255, 255))
    return im


def render_video(
    frames, graph: SceneGraph4D, out: str | os.PathLike, times=None, top_k=10, min_score=0.0, fps=4.0, progress=True
) -> dict:
    """Draw ``graph`` on its video: ``frames(t)`` gives frame t (H, W, 3 uint8). Writes ``<out>/frame_%04d.png``
    for each of ``times`` (default: every frame) and ``<out>/<video id>.gif``; returns their paths."""
    import imageio.v2 as imageio
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times = list(range(graph.num_frames)) if times is None else list(times)
    bad = [t for t in times if not 0 <= t < graph.num_frames]
    if bad:
        raise ValueError(f"frames {bad[:5]} outside the video's {graph.num_frames} frames")
    paths, images = [], []
    for t in tqdm(times, desc="render (video)", disable=not progress):
        im = draw_frame(frames(t), graph, t, top_k, min_score)
        path = out / f"frame_{t:04d}.png"
        with atomic_path(path) as tmp:
            im.save(tmp, format="png")
        paths.append(path)
        images.append(np.asarray(im))
    gif = out / f"{graph.video_id}.gif"
    with atomic_path(gif) as tmp:
        imageio.mimsave(tmp, images, format="GIF", duration=1000.0 / fps, loop=0)
    return {"frames": paths, "gif": gif}
