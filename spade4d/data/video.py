"""RGB video as model input: a frame becomes a grid of cells on the image plane (docs/video.md).

The video model is the 4D model run on the image plane. Every ``stride`` x ``stride`` block of pixels is one
"point" at its centre pixel, placed at depth 1 in camera coordinates with a pinhole camera whose focal length
makes neighbouring cells exactly one voxel apart. So the sparse encoder acts as a 2D convolution, the 2D core's
pixel features are lifted onto the cells through that camera (each cell reads its own pixel), and everything of
the 4D model (queries shared over the frames of a window, the temporal aggregator and memory, the relation graph
transformer and head, training, inference) applies unchanged. A predicted cell mask becomes a pixel mask by
giving every pixel its block's value.

Frames are decoded with decord by seeking, ``chunk`` frames at a time and only those asked for, so a long video
never sits in memory.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from spade4d.data.files import DatasetError
from spade4d.structures import ObjectTube, PointSequence, SceneGraph4D

DEFAULT_STRIDE = 4
DEFAULT_VOXEL = 0.08


class CellGrid:
    """The cells of a ``height`` x ``width`` frame: centre pixels ``rows`` x ``cols``, their points ``xyz``
    (camera coordinates at depth 1, ``voxel`` apart) and the camera ``K`` that projects them back onto them."""

    def __init__(self, height: int, width: int, stride: int = DEFAULT_STRIDE, voxel: float = DEFAULT_VOXEL):
        if stride < 1 or voxel <= 0:
            raise ValueError(f"cell stride must be >= 1 and voxel > 0, got {stride} and {voxel}")
        self.height, self.width, self.stride = height, width, stride
        self.rows = np.arange(min(stride // 2, height - 1), height, stride)
        self.cols = np.arange(min(stride // 2, width - 1), width, stride)
        f = stride / voxel
        cx, cy = (width - 1) / 2, (height - 1) / 2
        x, y = np.meshgrid((self.cols - cx) / f, (self.rows - cy) / f)
        self.xyz = np.stack([x.ravel(), y.ravel(), np.ones(x.size)], 1).astype(np.float32)
        self.K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    def sample(self, image: np.ndarray) -> np.ndarray:
        """``(h * w, ...)`` values of ``image`` (H, W, ...) at the cell centres."""
        return image[self.rows][:, self.cols].reshape(len(self.rows) * len(self.cols), *image.shape[2:])

    def to_pixels(self, cells: np.ndarray) -> np.ndarray:
        """``(H, W)`` pixel mask of a ``(h * w,)`` cell mask: every pixel takes the value of its block."""
        grid = np.asarray(cells).reshape(self.shape)
        rows = np.minimum(np.arange(self.height) // self.stride, grid.shape[0] - 1)
        cols = np.minimum(np.arange(self.width) // self.stride, grid.shape[1] - 1)
        return grid[rows][:, cols]


class VideoFrames:
    """RGB frames of videos read with decord (``path_of(video_id)`` -> file), ``chunk`` frames per seek; the
    last chunk of each open video is kept. ``get(video_id, t)`` gives ``(rgb, K, None)``, the frame and the
    camera of its :class:`CellGrid`: the RGB source the 2D features are lifted from. ``num_frames`` /
    ``size`` (H, W), when given per video, are checked against the file: a shorter video or another frame size
    is a one-line error naming the file."""

    def __init__(self, path_of: Callable[[str], Path], stride: int, voxel: float, chunk: int = 16):
        self.path_of, self.stride, self.voxel, self.chunk = path_of, stride, voxel, chunk
        self.expected: dict[str, tuple[int, tuple[int, int]]] = {}
        self._readers: OrderedDict[str, object] = OrderedDict()
        self._chunks: dict[str, tuple[int, np.ndarray]] = {}
        self._grids: dict[tuple[int, int], CellGrid] = {}

    def reader(self, video_id: str):
        vr = self._readers.get(video_id)
        if vr is not None:
            return vr
        try:
            from decord import VideoReader, cpu
        except ImportError as e:  # pragma: no cover - decord is in the video extra
            raise DatasetError("reading videos needs decord (pip install 'spade4d[video]')") from e
        path = Path(self.path_of(video_id))
        if not path.is_file():
            raise DatasetError(f"{path}: video not found")
        try:
            vr = VideoReader(str(path), ctx=cpu(0))
            n, shape = len(vr), vr[0].shape
        except Exception as e:  # decord raises its own DECORDError on corrupt or truncated files
            raise DatasetError(f"{path}: unreadable or truncated video ({_one_line(e)})") from None
        if video_id in self.expected:
            want, size = self.expected[video_id]
            if n < want:
                raise DatasetError(f"{path}: the video has {n} frames, its annotation says {want}")
            if tuple(shape[:2]) != tuple(size):
                raise DatasetError(f"{path}: frames are {shape[1]}x{shape[0]}, its annotation says {size[1]}x{size[0]}")
        self._readers[video_id] = vr
        if len(self._readers) > 2:
            old, _ = self._readers.popitem(last=False)
            self._chunks.pop(old, None)
        return vr

    def frames(self, video_id: str, indices: Sequence[int]) -> np.ndarray:
        """``(len(indices), H, W, 3)`` uint8 frames, decoded by seeking (only these frames)."""
        vr = self.reader(video_id)
        n = len(vr)
        bad = [int(i) for i in indices if not 0 <= i < n]
        if bad:
            raise DatasetError(f"{self.path_of(video_id)}: frames {bad[:5]} outside the video's {n} frames")
        try:
            return vr.get_batch(list(indices)).asnumpy()
        except Exception as e:
            raise DatasetError(
                f"{self.path_of(video_id)}: frames {list(indices)[:3]}... unreadable ({_one_line(e)})"
            ) from None

    def grid(self, height: int, width: int) -> CellGrid:
        if (height, width) not in self._grids:
            self._grids[height, width] = CellGrid(height, width, self.stride, self.voxel)
        return self._grids[height, width]

    def get(self, video_id: str, t: int) -> tuple[np.ndarray, np.ndarray, None]:
        start, block = self._chunks.get(video_id, (-1, None))
        if block is None or not start <= t < start + len(block):
            n = len(self.reader(video_id))
            block = self.frames(video_id, list(range(t, min(t + self.chunk, n))) or [t])
            start = t
            self._chunks[video_id] = (start, block)
        rgb = block[t - start]
        return rgb, self.grid(*rgb.shape[:2]).K, None


def video_sequence(
    source: VideoFrames,
    video_id: str,
    num_frames: int,
    read_mask: Callable[[int], np.ndarray] | None = None,
    where: Callable[[int], str] = str,
) -> PointSequence:
    """One video as cells (:class:`CellGrid`): colours from the frames and, with ``read_mask(t)`` ((H, W) object
    ids, 0: none), each cell's object id (-100 for none). Frames are decoded a chunk at a time."""
    xyz, rgb, inst = [], [], []
    grid = None
    for a in range(0, num_frames, source.chunk):
        block = source.frames(video_id, list(range(a, min(a + source.chunk, num_frames))))
        for k, frame in enumerate(block):
            grid = grid or source.grid(*frame.shape[:2])
            xyz.append(grid.xyz)
            rgb.append(grid.sample(frame).astype(np.float32) / 255.0)
            if read_mask is not None:
                m = read_mask(a + k)
                if m.shape != frame.shape[:2]:
                    (h, w), (H, W) = m.shape[:2], frame.shape[:2]
                    raise DatasetError(f"{where(a + k)}: mask is {w}x{h}, the video {W}x{H}")
                ids = grid.sample(m)
                inst.append(np.where(ids > 0, ids, -100))
    return PointSequence.from_frames(xyz, rgb, video_id, instance=inst if read_mask is not None else None)


class PixelMasks(Mapping):
    """Frame -> flattened ``(H * W,)`` pixel mask of a cell mask (:meth:`CellGrid.to_pixels`), made when read, so
    the pixel masks of a long video never sit in memory together."""

    def __init__(self, cells: Mapping[int, np.ndarray], grid: CellGrid):
        self.cells, self.grid = cells, grid

    def __getitem__(self, t: int) -> np.ndarray:
        return self.grid.to_pixels(self.cells[t]).reshape(-1)

    def __iter__(self):
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)


def pixel_graph(graph: SceneGraph4D, grid: CellGrid) -> SceneGraph4D:
    """A cell-level prediction as pixel masks of ``grid``'s frame size (each pixel takes its block's value); the
    masks are :class:`PixelMasks`, computed frame by frame when read (as writing the prediction file does)."""
    size = grid.height * grid.width
    objects = [ObjectTube(o.id, o.label, {}, o.score) for o in graph.objects]
    out = SceneGraph4D(graph.video_id, graph.num_frames, objects, graph.relations, [size] * graph.num_frames)
    for o, cells in zip(out.objects, graph.objects):
        o.masks = PixelMasks(cells.masks, grid)
    return out


class PVSGVideos:
    """A PVSG-layout split (:class:`~spade4d.data.pvsg.PVSG`) as (cells, ground truth) pairs for the 4D model's
    training and inference code: ``ds[i]`` is the video's :func:`video_sequence` with object ids from the masks
    and its :class:`SceneGraph4D` on the cells. ``frame_source`` is the RGB source to lift 2D features from."""

    kind = "video"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        annotation: str | os.PathLike | None = None,
        stride: int = DEFAULT_STRIDE,
        voxel: float = DEFAULT_VOXEL,
    ):
        from spade4d.data.pvsg import PVSG

        self.pvsg = PVSG(root, split or "train", annotation)
        self.root, self.split = Path(root), self.pvsg.split
        self.classes, self.predicates = self.pvsg.classes, self.pvsg.predicates
        self.frame_source = VideoFrames(self.pvsg.video_path, stride, voxel)
        for i, vid in enumerate(self.pvsg.video_ids()):
            self.frame_source.expected[vid] = (self.pvsg.num_frames(i), self.pvsg.size(i))
        self.stats = {"missing_frames": 0, "unrecallable_relations": 0, "gt_relations": 0}

    def __len__(self) -> int:
        return len(self.pvsg)

    def video_ids(self) -> list[str]:
        return self.pvsg.video_ids()

    def names_used(self) -> tuple[set[str], set[str]]:
        classes = {str(o["category"]) for e in self.pvsg.entries for o in e.get("objects", [])}
        predicates = {str(r[2]) for e in self.pvsg.entries for r in e.get("relations", []) if len(r) == 4}
        return classes, predicates

    def use_grid(self, stride: int, voxel: float) -> None:
        """Cells of ``stride`` pixels placed ``voxel`` apart (a model's own: its config's ``video.stride`` and
        ``voxel_size``)."""
        fs = self.frame_source
        fs.stride, fs.voxel, fs._grids = stride, voxel, {}

    def index_of(self, video_id: str) -> int:
        return self.video_ids().index(video_id)

    def size(self, i: int) -> tuple[int, int]:
        return self.pvsg.size(i)

    def num_frames(self, i: int) -> int:
        return self.frame_source.expected[self.pvsg.entries[i]["video_id"]][0]

    def cells(self, i: int, masks: bool = False) -> PointSequence:
        """Video ``i`` as cells; with ``masks``, each cell's object id from the mask PNGs."""
        e = self.pvsg.entries[i]
        vid, T = e["video_id"], self.num_frames(i)
        read = (lambda t: self.pvsg.read_mask(vid, t)) if masks else None
        return video_sequence(self.frame_source, vid, T, read, lambda t: str(self.pvsg.mask_path(vid, t)))

    def __getitem__(self, i: int) -> tuple[PointSequence, SceneGraph4D]:
        ann = self.pvsg.annotation(i)
        seq = self.cells(i, masks=True)
        return seq, SceneGraph4D.from_labels(seq, ann.labels, ann.relations)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


class VideoFile:
    """One plain video file (no annotation, no masks) as the video model's input: ``cells(0)`` and its
    ``frame_source``; the video id is the file's stem."""

    kind = "video"

    def __init__(self, path: str | os.PathLike, stride: int = DEFAULT_STRIDE, voxel: float = DEFAULT_VOXEL):
        self.path = Path(path)
        self.frame_source = VideoFrames(lambda _: self.path, stride, voxel)
        vr = self.frame_source.reader(self.path.stem)
        self.num_frames, self._size = len(vr), tuple(vr[0].shape[:2])

    use_grid = PVSGVideos.use_grid

    def __len__(self) -> int:
        return 1

    def video_ids(self) -> list[str]:
        return [self.path.stem]

    def index_of(self, video_id: str) -> int:
        return self.video_ids().index(video_id)

    def size(self, i: int) -> tuple[int, int]:
        return self._size

    def cells(self, i: int, masks: bool = False) -> PointSequence:
        return video_sequence(self.frame_source, self.path.stem, self.num_frames)
