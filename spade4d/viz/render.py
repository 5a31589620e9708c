"""Rendering of 4D scene graphs: points by Open3D's offscreen renderer, the graph drawn over them.

Points are coloured by object (things saturated, stuff muted, unlabelled grey) and rendered with Open3D's
Filament renderer (offscreen; on a machine without a GPU it runs on mesa's llvmpipe Vulkan). The graph is
projected with the same camera and drawn on top: a node at each visible object's centroid, an arrow per
relation holding on the frame with its predicate at the middle, and a panel listing the frame's relations.
One PNG per frame plus an animated GIF.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spade4d.data.lift import project
from spade4d.geometry import intrinsics, look_at
from spade4d.io import atomic_path
from spade4d.structures import PointSequence, SceneGraph4D
from spade4d.viz.figures import FigureOptions, frame_relations, relation_tag, view_direction

STUFF_NAMES = {"floor", "wall", "grass", "road", "ceiling", "sky", "ground", "sidewalk"}


class RenderError(RuntimeError):
    """Rendering could not run (no renderer, nothing to draw)."""


def object_color(oid: int, stuff: bool = False) -> tuple[float, float, float]:
    """A stable, well-separated colour per object id (golden-ratio hue walk); stuff is muted."""
    h = (0.13 + oid * 0.618034) % 1.0
    s, v = (0.12, 0.86) if stuff else (0.8, 0.88)
    return colorsys.hsv_to_rgb(h, s, v)


def _font(size: int) -> ImageFont.FreeTypeFont:
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:  # pragma: no cover - matplotlib always ships DejaVu; keep a fallback anyway
        return ImageFont.load_default(size=size)


@dataclass
class Camera:
    K: np.ndarray
    world_from_camera: np.ndarray
    width: int
    height: int


def overview_camera(
    xyz: np.ndarray, width: int, height: int, fov_deg: float = 50.0, direction: Sequence[float] = (-0.55, -0.8, 0.75)
) -> Camera:
    """A fixed camera above and in front of the points' bulk, framing them for the whole sequence."""
    lo, hi = np.percentile(xyz, 1, axis=0), np.percentile(xyz, 99, axis=0)
    center = (lo + hi) / 2
    radius = max(float(np.linalg.norm(hi - lo)) / 2, 1.0)
    d = np.asarray(direction, dtype=np.float64)
    d /= np.linalg.norm(d)
    dist = radius / np.tan(np.radians(fov_deg) / 2) * 1.05
    eye = center + d * dist
    return Camera(intrinsics(width, height, fov_deg), look_at(eye, center), width, height)


@contextmanager
def native_output_silenced():
    """Open3D and its Filament engine write set-up lines ("FEngine created", the Vulkan device...) from C++ straight
    to the process's stdout and stderr, past Python's logging. Inside this block both go to /dev/null, unless
    spade4d logs at DEBUG (``--verbose``)."""
    import ctypes
    import logging
    import sys

    if logging.getLogger("spade4d").isEnabledFor(logging.DEBUG):
        yield
        return
    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio buffers written while silenced go to /dev/null too
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


class GraphRenderer:
    """Renders frames of one sequence; keeps one Open3D renderer alive across frames."""

    def __init__(self, width: int = 960, height: int = 720, point_size: float = 5.0, panel_width: int = 320):
        try:
            from open3d.visualization import rendering
        except ImportError as e:  # pragma: no cover - open3d is a dependency of the viz extra
            raise RenderError("rendering needs open3d (pip install 'spade4d[viz]')") from e
        self._rendering = rendering
        self.width, self.height, self.panel_width = width, height, panel_width
        try:
            with native_output_silenced():
                self.renderer = rendering.OffscreenRenderer(width, height)
        except Exception as e:  # pragma: no cover - depends on the machine's graphics stack
            raise RenderError(
                f"Open3D's offscreen renderer failed to start ({e}); on a machine without a GPU install "
                "libvulkan1 and mesa-vulkan-drivers"
            ) from e
        self.renderer.scene.set_background([1.0, 1.0, 1.0, 1.0])
        self.renderer.scene.view.set_post_processing(False)  # no tone mapping: colours stay as given
        self.material = rendering.MaterialRecord()
        self.material.shader = "defaultUnlit"
        self.material.point_size = point_size
        self.font = _font(15)
        self.font_small = _font(13)
        self.font_title = _font(18)

    def render_frame(
        self,
        points: PointSequence,
        graph: SceneGraph4D,
        t: int,
        camera: Camera,
        title: str = "",
        options: FigureOptions = FigureOptions(),
        scored: bool = False,
    ) -> Image.Image:
        import open3d as o3d

        fr = points.frame(t)
        xyz = fr["xyz"].astype(np.float64)
        n = len(xyz)
        colors = np.full((n, 3), 0.72)
        labels = {o.id: o.label for o in graph.objects}
        centroids: dict[int, np.ndarray] = {}
        for obj in graph.objects:
            m = obj.masks.get(t)
            if m is None or not m.any() or len(m) != n:
                continue
            stuff = obj.label in STUFF_NAMES
            colors[m] = object_color(obj.id, stuff)
            if not stuff:
                centroids[obj.id] = np.median(xyz[m], axis=0)
        scene = self.renderer.scene
        scene.clear_geometry()
        if n:
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
            pc.colors = o3d.utility.Vector3dVector(colors)
            scene.add_geometry("points", pc, self.material)
        extrinsic = np.linalg.inv(camera.world_from_camera)
        self.renderer.setup_camera(o3d.camera.PinholeCameraIntrinsic(camera.width, camera.height, camera.K), extrinsic)
        with native_output_silenced():
            img = Image.fromarray(np.asarray(self.renderer.render_to_image())).convert("RGB")
        rels = frame_relations(graph, t, options)
        tags = [relation_tag(r, options, scored) for r in rels]
        return self._overlay(img, graph, t, camera, centroids, labels, title, rels, tags)

    def _overlay(
        self,
        img: Image.Image,
        graph: SceneGraph4D,
        t: int,
        camera: Camera,
        centroids: dict[int, np.ndarray],
        labels: dict[int, str],
        title: str,
        rels: list,
        tags: list[str],
    ) -> Image.Image:
        canvas = Image.new("RGB", (self.width + self.panel_width, self.height), "white")
        canvas.paste(img, (0, 0))
        draw = ImageDraw.Draw(canvas)
        uv = {}
        for oid, c in centroids.items():
            u, v, z = project(c[None], camera.K, camera.world_from_camera)[0]
            if z > 0:
                uv[oid] = (float(u), float(v))
        by_pair: dict[tuple[int, int], list[str]] = {}  # one tag per predicate, stacked along the pair's arrow
        for r, tag in zip(rels, tags):
            by_pair.setdefault((r.subject, r.object), []).append(tag)
        for s, o in by_pair:
            if s in uv and o in uv:
                self._arrow(draw, uv[s], uv[o], object_color(s))
        for oid, p in uv.items():
            col = tuple(int(255 * c) for c in object_color(oid))
            r = 7
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=col, outline=(0, 0, 0), width=2)
        # object names first (they matter most), then predicates wherever they do not collide with a drawn tag;
        # the side panel lists every relation, so a predicate with no free spot is still shown there
        taken: list[tuple[float, float, float, float]] = []
        for oid, p in sorted(uv.items(), key=lambda kv: kv[1][1]):
            col = tuple(int(255 * c) for c in object_color(oid))
            for dy in (-20, 20, -40, 40):
                if self._tag(
                    draw, (p[0], p[1] + dy), f"{labels[oid]}#{oid}", col, (0, 0, 0), self.font, (0, 0, 0), taken
                ):
                    break
        for (s, o), texts in by_pair.items():
            if s not in uv or o not in uv:
                continue
            for text in texts:
                for f in (0.5, 0.35, 0.65, 0.2, 0.8):
                    at = (uv[s][0] + f * (uv[o][0] - uv[s][0]), uv[s][1] + f * (uv[o][1] - uv[s][1]))
                    if self._tag(draw, at, text, (255, 255, 255), (90, 90, 90), self.font_small, (40, 40, 40), taken):
                        break
        # side panel
        x0 = self.width + 14
        draw.line([(self.width, 0), (self.width, self.height)], fill=(200, 200, 200), width=2)
        head = title or graph.video_id
        draw.text((x0, 12), head, fill=(0, 0, 0), font=self.font_title)
        draw.text((x0, 36), f"frame {t} (0-{graph.num_frames - 1})", fill=(90, 90, 90), font=self.font_small)
        y = 64
        for r, tag in zip(rels, tags):
            if y > self.height - 24:
                draw.text((x0, y), f"... {len(rels)} relations", fill=(90, 90, 90), font=self.font_small)
                break
            col = tuple(int(255 * c) for c in object_color(r.subject))
            draw.rectangle([x0, y + 3, x0 + 10, y + 13], fill=col)
            txt = f"{labels.get(r.subject, '?')}#{r.subject} {tag} {labels.get(r.object, '?')}#{r.object}"
            draw.text((x0 + 16, y), txt, fill=(20, 20, 20), font=self.font_small)
            y += 20
        return canvas

    @staticmethod
    def _arrow(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], color) -> None:
        col = tuple(int(255 * c * 0.8) for c in color)
        draw.line([a, b], fill=col, width=3)
        d = np.array(b) - np.array(a)
        L = float(np.linalg.norm(d))
        if L < 1e-6:
            return
        d /= L
        tip = np.array(b) - d * 9
        nrm = np.array([-d[1], d[0]])
        pts = [tuple(tip), tuple(tip - d * 12 + nrm * 6), tuple(tip - d * 12 - nrm * 6)]
        draw.polygon(pts, fill=col)

    @staticmethod
    def _tag(
        draw: ImageDraw.ImageDraw,
        center: tuple[float, float],
        text: str,
        fill,
        outline,
        font,
        text_fill,
        taken: list | None = None,
    ) -> tuple | None:
        """Draw a rounded label at ``center`` unless it would overlap a box in ``taken``; return its box."""
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        w, h = r - l, b - t
        x, y = center[0] - w / 2, center[1] - h / 2
        rect = (x - 5, y - 3, x + w + 5, y + h + 5)
        if taken is not None:
            if any(rect[0] < q[2] and q[0] < rect[2] and rect[1] < q[3] and q[1] < rect[3] for q in taken):
                return None
            taken.append(rect)
        draw.rounded_rectangle(list(rect), radius=5, fill=fill, outline=outline)
        draw.text((x - l, y - t + 1), text, fill=text_fill, font=font)
        return rect


def render_sequence(
    points: PointSequence,
    graph: SceneGraph4D,
    out_dir: str | os.PathLike,
    width: int = 960,
    height: int = 720,
    frames: Sequence[int] | None = None,
    fps: float = 4.0,
    title: str = "",
    progress: bool = True,
    options: FigureOptions = FigureOptions(),
    ground_truth: SceneGraph4D | None = None,
) -> dict[str, object]:
    """Render ``frames`` (default: all) to ``out_dir/frame_%03d.png`` (numbered as the frames are, from 0),
    ``out_dir/scene_graph.gif`` and ``out_dir/relation_timeline.png``. With ``ground_truth``, ``graph`` is a
    prediction: its objects are drawn in the ids and colours of the GT objects they match (unmatched ones marked
    "?"), its relations with their scores, and the timeline shows both."""
    import imageio.v2 as imageio
    from tqdm import tqdm

    from spade4d.viz.figures import in_ground_truth_ids, relation_timeline

    if points.num_frames != graph.num_frames:
        raise RenderError(
            f"sequence {graph.video_id!r}: the points have {points.num_frames} frames, the graph {graph.num_frames}"
        )
    if len(points.xyz) == 0:
        raise RenderError(f"sequence {graph.video_id!r} has no points to render")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = list(range(points.num_frames)) if frames is None else list(frames)
    if ground_truth is not None:
        graph = in_ground_truth_ids(graph, ground_truth)
    focus = _focus_points(points, ground_truth or graph)
    r = GraphRenderer(width, height)
    images, paths = [], []
    for t in tqdm(frames, desc=f"render {graph.video_id}", disable=not progress):
        camera = overview_camera(focus, width, height, direction=view_direction(options.view, t, points.num_frames))
        img = r.render_frame(points, graph, t, camera, title, options, scored=ground_truth is not None)
        path = out_dir / f"frame_{t:03d}.png"
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        paths.append(path)
        images.append(np.asarray(img))
    gif = out_dir / "scene_graph.gif"
    with atomic_path(gif) as tmp:
        imageio.mimsave(tmp, images, format="GIF", duration=1000.0 / fps, loop=0)
    timeline = relation_timeline(out_dir / "relation_timeline.png", ground_truth or graph,
                                 graph if ground_truth is not None else None, options)  # fmt: skip
    return {"frames": paths, "gif": gif, "timeline": timeline}


def _focus_points(points: PointSequence, graph: SceneGraph4D) -> np.ndarray:
    """Points of the thing objects over all frames (what a figure should frame), or all points if none."""
    keep = np.zeros(len(points.xyz), dtype=bool)
    for obj in graph.objects:
        if obj.label in STUFF_NAMES:
            continue
        for t, m in obj.masks.items():
            sl = points.frame_slice(t)
            if len(m) == sl.stop - sl.start:
                keep[sl] |= m
    return points.xyz[keep] if keep.sum() >= 10 else points.xyz


def show_interactive(points: PointSequence, graph: SceneGraph4D, t: int = 0) -> None:
    """Open an Open3D window on frame ``t`` (needs a display)."""
    import open3d as o3d

    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise RenderError("--interactive needs a display (DISPLAY is not set); render to files instead")
    fr = points.frame(t)
    colors = np.full((len(fr["xyz"]), 3), 0.72)
    geoms = []
    for obj in graph.objects:
        m = obj.masks.get(t)
        if m is not None and m.any():
            colors[m] = object_color(obj.id, obj.label in STUFF_NAMES)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(fr["xyz"].astype(np.float64)))
    pc.colors = o3d.utility.Vector3dVector(colors)
    geoms.append(pc)
    o3d.visualization.draw_geometries(geoms, window_name=f"{graph.video_id} frame {t}")


def sequence_to_render(ds, video: str | None = None, pred: str | os.PathLike | None = None, frames=None):
    """The points and graph ``render`` draws: sequence ``video`` of the split ``ds`` (default its first) with its
    ground truth, or with its entry of the prediction file ``pred``. Returns (points, graph, title, ground truth
    when ``graph`` is a prediction else None)."""
    if len(ds) == 0:
        raise ValueError("the split holds no sequences")
    gt = None
    vid = video or ds.video_ids()[0]
    points, graph = ds[ds.index_of(vid)]
    title = f"{vid} (ground truth)"
    if pred:
        from spade4d.evaluation.predictions import load_predictions_4d

        preds = load_predictions_4d(pred, {vid: points.counts.tolist()}, only=[vid])
        if vid not in preds:
            raise ValueError(f"{pred}: no predictions for sequence {vid!r}")
        gt, graph, title = graph, preds[vid], f"{vid} (prediction)"
    bad = [t for t in frames or [] if t >= points.num_frames]
    if bad:
        raise ValueError(f"--frames {bad[0]}: sequence {vid!r} has frames 0..{points.num_frames - 1}")
    return points, graph, title, gt


def evaluation_timeline(ds, preds, path: str | os.PathLike, video: str | None = None) -> Path | None:
    """The relation timeline (ground truth and prediction) of one sequence of an evaluation, written to ``path``:
    ``video``, or the split's first sequence the prediction file ``preds`` (an opened ``PredictionFile4D``, as the
    evaluation's report holds it) predicts; None when it predicts none."""
    from spade4d.viz.figures import in_ground_truth_ids, relation_timeline

    vid = video or next((v for v in ds.video_ids() if v in preds), None)
    if vid is None:
        return None
    if vid not in preds:
        raise ValueError(f"--timeline-video {vid}: the prediction file has no such sequence")
    points, gt = ds[ds.index_of(vid)]
    graph = in_ground_truth_ids(preds.get(vid, points.counts.tolist()), gt)
    return relation_timeline(path, gt, graph, FigureOptions())
