"""Objects the 4D model never learned, found through the 2D core (docs/open-vocabulary.md).

The 4D model only segments what its 4D training showed. The 2D core was trained on images that also show the
unseen classes, so on sequences with RGB frames and cameras it adds tubes of its own:

1. **Lifting.** The 2D core runs on every RGB frame. Each instance mask it predicts takes the frame's points
   that project into the mask and are visible there (not more than ``depth_tolerance`` behind the nearest point
   of their pixel): a class-agnostic proposal.
2. **Association.** Proposals of successive frames are linked into tubes (Hungarian assignment) by their
   affinity: how closely their voxel cells lie to the tube's last cells (the mean share of each side's cells with
   a cell of the other within one cell), those cells either left in place or moved by the tube's last velocity,
   whichever lies closer, times the cosine similarity of their class probabilities. Links need an affinity
   >= ``link``; a tube may miss ``max_gap`` frames.
3. **Naming.** A tube's name is the most probable one under the 2D core's open-vocabulary head (text embeddings
   of any names), averaged over its frames; its score is that name's mean probability.
4. **Merging.** A tube repeats a 4D tube (or a better proposal tube) and is dropped when their tube IoU reaches
   ``duplicate_iou`` or when a share ``inside`` of its points lies in that tube (a fragment of an object the
   4D model already has), so no object is predicted twice. With ``strict_unseen_fragments``, a tube named with a
   class the 4D model never saw (``seen`` below) is a fragment only of a tube with the same name: a cart that
   lies half inside a 4D tube named ``table`` is kept.
   **Naming the 4D tubes.** Before that, with ``name_weight`` > 0, a 4D tube's name distribution (its model's,
   :attr:`~spade4d.structures.ObjectTube.class_probs`) is mixed with the 2D core's class probabilities of the
   2D queries it matches (step 5), averaged over those frames: ``(1 - w) p_4D + w p_2D``, each normalised over
   the classes, and the tube takes the most probable name (mask and score unchanged). The 4D model learned its
   names from its 4D training sequences, the core from many images. On by default (``name_weight`` 0.5).
   **Renaming.** Before that, a 4D tube may take a proposal tube's name: when the 2D core names a tube with a
   class the 4D model never saw in training (``seen``: the names its training split showed) and that tube
   overlaps a 4D tube named with a seen class by a tube IoU of at least ``rename_iou`` (its best such overlap),
   the 4D tube keeps its masks and score and takes the unseen name; the proposal tube is then used up. The 4D
   model can name such an object only by a class it was trained on (a suitcase as ``box``), while the 2D core
   learned the name from images. One renaming per 4D tube, best proposal first. Off unless ``rename_iou`` is
   set: measured on the bench split, it did not help.
5. **Relations** of the new tubes come from the 2D core's relation graph transformer and head, per frame: a 4D
   tube takes part through the 2D query whose lifted points match its mask on that frame (IoU >= ``match_iou``).
   Scores and spans follow the 4D model's rules (:mod:`spade4d.inference.infer_4d`); ``relation_weight``
   scales these scores where they meet the 4D model's relations in one ranking.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from spade4d.data.lift import project
from spade4d.structures import ObjectTube, PointSequence, Relation4D, SceneGraph4D, frames_to_spans

__all__ = [
    "ProposalOptions",
    "Proposal",
    "visible_points",
    "frame_proposals",
    "associate",
    "name_tubes",
    "merge_tubes",
    "rename_unseen",
    "fuse_names",
    "tube_relations",
    "Proposals2D",
]


@dataclass(frozen=True)
class ProposalOptions:
    min_score: float | None = None  # name confidence for a mask to become a proposal (None: the core's threshold)
    min_points: int = 8  # lifted points a proposal needs
    depth_tolerance: float = 0.05  # relative depth behind the nearest point of a pixel that still counts as visible
    voxel: float = 0.1  # metres: the cells in which proposals of different frames are compared
    link: float = 0.3  # affinity that links a proposal to a tube of an earlier frame
    max_gap: int = 2  # frames a tube may miss and still be continued
    min_frames: int = 2  # frames a tube needs to be kept
    duplicate_iou: float = 0.5  # tube IoU at which a proposal repeats a 4D tube or a better proposal
    inside: float = 0.5  # share of a proposal's points inside one such tube that makes it a fragment of it
    match_iou: float = 0.3  # point IoU at which a 4D tube takes a 2D query's relations on a frame
    # tube IoU at which a 4D tube named with a seen class takes an unseen name from a proposal tube (None: never).
    # Off by default: at 0.25 it did not raise OOV recall on the bench split (docs/open-vocabulary.md, "Renaming")
    rename_iou: float | None = None
    # factor on the new tubes' relation scores where they meet the 4D model's: the largest of 1, 0.5, 0.25, 0.1 at
    # which they leave the quick demo model's val R@20 as without them (docs/open-vocabulary.md)
    relation_weight: float = 0.5
    # a tube named with an unseen class is a fragment only of a tube with its name (needs the seen classes)
    strict_unseen_fragments: bool = False
    # weight of the 2D core's class probabilities in the names of the 4D tubes it matches (0: the 4D names kept).
    # 0.5: R@50 +2.63 ± 0.52 (transferred) and +2.00 ± 1.56 (from scratch) on the bench split, 3 seeds paired
    # (docs/open-vocabulary.md, step 4)
    name_weight: float = 0.5

    def __post_init__(self):
        for name in ("depth_tolerance", "link", "duplicate_iou", "inside", "match_iou", "relation_weight",
                     "name_weight"):  # fmt: skip
            v = getattr(self, name)
            if not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must lie in [0, 1], not {v!r}")
        if self.rename_iou is not None and not (np.isfinite(self.rename_iou) and 0.0 < self.rename_iou <= 1.0):
            raise ValueError(f"rename_iou must lie in (0, 1] or be None, not {self.rename_iou!r}")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must lie in [0, 1], not {self.min_score!r}")
        if self.voxel <= 0 or self.min_points < 1 or self.min_frames < 1 or self.max_gap < 0:
            raise ValueError("voxel must be positive, min_points and min_frames at least 1, max_gap at least 0")


@dataclass
class Proposal:
    """One 2D instance lifted onto one frame: ``points`` index the frame's points."""

    t: int
    query: int  # the 2D query that predicted it
    points: np.ndarray  # (n,) int64
    prob: np.ndarray  # (C + 1,) the 2D core's class probabilities (last: no object)
    cells: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))  # occupied voxel codes
    center: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(3))  # mean of its points

    @property
    def score(self) -> float:
        return float(self.prob[:-1].max())

    @functools.cached_property
    def near(self) -> np.ndarray:
        """The cells within one cell of ``cells`` (their 26-neighbourhoods), sorted and unique."""
        return np.unique((self.cells[:, None] + _NEIGHBOURS[None]).ravel())


def visible_points(xyz: np.ndarray, K: np.ndarray, pose: np.ndarray | None, height: int, width: int,
                   depth_tolerance: float = 0.05) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(index, pixel)``: the points of a frame that land in the image in front of the camera and are not hidden
    behind a nearer point of their pixel, with the flat pixel (``v * width + u``) each lands on. Integer pixel
    coordinates are pixel centres (docs/formats.md), so a point belongs to the pixel nearest its projection."""
    uvz = project(xyz, K, pose)
    with np.errstate(invalid="ignore"):
        u = np.floor(uvz[:, 0] + 0.5)
        v = np.floor(uvz[:, 1] + 0.5)
        ok = np.isfinite(uvz).all(1) & (uvz[:, 2] > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    idx = np.flatnonzero(ok)
    pix = (v[idx] * width + u[idx]).astype(np.int64)
    z = uvz[idx, 2]
    nearest = np.full(height * width, np.inf)
    np.minimum.at(nearest, pix, z)
    front = z <= nearest[pix] * (1.0 + depth_tolerance)
    return idx[front], pix[front]


_BIAS = 1 << 20  # cell indices are packed as three 21-bit fields, offset to stay positive
_NEIGHBOURS = np.array([(dx << 42) + (dy << 21) + dz for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)])


def _cells(xyz: np.ndarray, voxel: float) -> np.ndarray:
    keys = np.floor(xyz / voxel).astype(np.int64) + _BIAS
    return np.unique((keys[:, 0] << 42) | (keys[:, 1] << 21) | keys[:, 2])


def _shift(cells: np.ndarray, by: np.ndarray) -> np.ndarray:
    """Cells moved by whole cells ``by`` (3,)."""
    d = np.round(by).astype(np.int64)
    return cells + (int(d[0]) << 42) + (int(d[1]) << 21) + int(d[2])


def _near_share(a: np.ndarray, b_near: np.ndarray) -> float:
    """The share of the cells ``a`` that have a cell of ``b`` within one cell (``b_near``: ``b``'s
    :attr:`Proposal.near`)."""
    if not len(a) or not len(b_near):
        return 0.0
    return float(np.isin(a, b_near, assume_unique=True).mean())


def _closeness(last: Proposal, p: Proposal, shift: np.ndarray) -> float:
    """The mean share of each side's cells with a cell of the other within one cell, ``last`` moved by ``shift``
    (in cells)."""
    moved, moved_near = _shift(last.cells, shift), _shift(last.near, shift)  # a shift moves the neighbourhoods too
    return 0.5 * (_near_share(p.cells, moved_near) + _near_share(moved, p.near))


def affinity(tube: list[Proposal], p: Proposal, voxel: float) -> float:
    """How well proposal ``p`` continues ``tube``: cell closeness to the tube's last proposal, under the better of
    two motions (standing still, or moving on at the tube's last velocity per frame), times the cosine similarity
    of the class probabilities. Both motions are tried because the velocity is the change of mask centres, which
    also jumps when a mask grows or shrinks on one frame (an animal turning, an occluder passing)."""
    last = tube[-1]
    close = _closeness(last, p, np.zeros(3))
    if len(tube) > 1:
        prev = tube[-2]
        shift = (last.center - prev.center) / (last.t - prev.t) * (p.t - last.t) / voxel
        if np.round(shift).any():  # a shift of less than half a cell in every axis moves nothing
            close = max(close, _closeness(last, p, shift))
    a, b = last.prob[:-1], p.prob[:-1]
    return close * float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def frame_proposals(t: int, prob: np.ndarray, masks: np.ndarray, xyz: np.ndarray, visible: tuple,
                    opts: ProposalOptions) -> tuple[list[Proposal], dict[int, np.ndarray]]:  # fmt: skip
    """One frame's proposals (best first, a mask repeating a better one on this frame dropped) and the lifted
    points of every query with at least ``min_points`` of them, proposal or not (4D tubes borrow their relations).
    ``prob``: (Q, C + 1) class probabilities; ``masks``: (Q, H, W) bool at the image size."""
    idx, pix = visible
    lifted = {}
    for q in range(len(masks)):
        pts = idx[masks[q].reshape(-1)[pix]]
        if len(pts) >= opts.min_points:
            lifted[q] = pts
    order = sorted(lifted, key=lambda q: -prob[q, :-1].max())
    kept: list[Proposal] = []
    for q in order:
        if prob[q, :-1].max() < opts.min_score:
            break
        if any(_iou(lifted[q], p.points) >= opts.duplicate_iou for p in kept):
            continue
        pts = xyz[lifted[q]]
        kept.append(Proposal(t, q, lifted[q], prob[q], _cells(pts, opts.voxel), pts.mean(0)))
    return kept, lifted


def associate(frames: list[list[Proposal]], opts: ProposalOptions) -> list[list[Proposal]]:
    """Link proposals of successive frames into tubes: each frame's proposals are assigned (Hungarian, on
    :func:`affinity`) to the tubes seen within the last ``max_gap + 1`` frames; unassigned ones start new tubes."""
    from scipy.optimize import linear_sum_assignment

    tubes: list[list[Proposal]] = []
    for props in frames:
        if not props:
            continue
        t = props[0].t
        active = [i for i, tube in enumerate(tubes) if t - tube[-1].t <= opts.max_gap + 1]
        taken = set()
        if active:
            aff = np.array([[affinity(tubes[i], p, opts.voxel) for p in props] for i in active])
            for r, c in zip(*linear_sum_assignment(-aff)):
                if aff[r, c] >= opts.link:
                    tubes[active[r]].append(props[c])
                    taken.add(c)
        tubes.extend([p] for c, p in enumerate(props) if c not in taken)
    return tubes


@dataclass
class NamedTube:
    label: int  # index into the vocabulary
    score: float
    proposals: dict[int, Proposal]  # frame -> proposal

    def masks(self, counts: list[int]) -> dict[int, np.ndarray]:
        out = {}
        for t, p in self.proposals.items():
            m = np.zeros(counts[t], dtype=bool)
            m[p.points] = True
            out[t] = m
        return out


def name_tubes(tubes: list[list[Proposal]], opts: ProposalOptions) -> list[NamedTube]:
    """Tubes of at least ``min_frames`` frames, named by their mean class probabilities (no-object left out) and
    scored by the mean probability of that name; best first."""
    named = []
    for tube in tubes:
        if len(tube) < opts.min_frames:
            continue
        mean = np.mean([p.prob[:-1] for p in tube], 0)
        label = int(mean.argmax())
        named.append(NamedTube(label, float(mean[label]), {p.t: p for p in tube}))
    return sorted(named, key=lambda n: -n.score)


def _tube_overlap(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> tuple[float, float]:
    """(tube IoU of ``a`` and ``b``, share of ``a``'s points inside ``b``), summed over frames."""
    inter = size_a = size_b = 0
    for t, ma in a.items():
        size_a += int(ma.sum())
        if t in b:
            inter += int((ma & b[t]).sum())
    size_b = sum(int(mb.sum()) for mb in b.values())
    union = size_a + size_b - inter
    return (inter / union if union else 0.0), (inter / size_a if size_a else 0.0)


def merge_tubes(objects: list[ObjectTube], tubes: list[NamedTube], counts: list[int], opts: ProposalOptions,
                classes: list[str] | None = None, seen: frozenset[str] | None = None):  # fmt: skip
    """The proposal tubes that repeat neither a 4D tube nor a better proposal tube (tube IoU below
    ``duplicate_iou`` and less than a share ``inside`` of their points in it), best first, with their masks.
    With ``opts.strict_unseen_fragments``, ``classes`` (the proposals' names) and ``seen``, a tube named with an
    unseen class counts as a fragment only of a tube with the same name."""
    strict = opts.strict_unseen_fragments and classes is not None and bool(seen)
    taken = [(o.masks, o.label) for o in objects]
    kept = []
    for tube in tubes:
        masks = tube.masks(counts)
        name = classes[tube.label] if classes is not None else None
        unseen = strict and name not in seen
        for other, other_name in taken:
            iou, share = _tube_overlap(masks, other)
            if iou >= opts.duplicate_iou or (share >= opts.inside and (not unseen or name == other_name)):
                break
        else:
            kept.append((tube, masks))
            taken.append((masks, name))
    return kept


def rename_unseen(objects: list[ObjectTube], tubes: list[NamedTube], counts: list[int], classes: list[str],
                  seen: frozenset[str] | None, opts: ProposalOptions):  # fmt: skip
    """The renaming step of the module docstring: ``(objects, renamed ids, tubes left)``; renamed objects are
    copies, ``objects`` is left as it is. Without ``seen`` or ``rename_iou`` nothing is renamed."""
    if not seen or opts.rename_iou is None:
        return objects, set(), tubes
    out, renamed, left = list(objects), set(), []
    for tube in tubes:
        name = classes[tube.label]
        if name not in seen and out:
            masks = tube.masks(counts)
            iou, k = max((_tube_overlap(masks, o.masks)[0], k) for k, o in enumerate(out))
            o = out[k]
            if iou >= opts.rename_iou and o.label in seen and o.id not in renamed:
                out[k] = ObjectTube(o.id, name, o.masks, o.score)
                renamed.add(o.id)
                continue
        left.append(tube)
    return out, renamed, left


def fuse_names(objects: list[ObjectTube], queries: dict[int, dict[int, int]], probs: list[np.ndarray | None],
               classes: list[str], weight: float):  # fmt: skip
    """The naming of 4D tubes in the module docstring: ``(objects, ids whose name changed)``; changed objects
    are copies. ``queries``: object id -> {frame: its 2D query}; ``probs``: per frame, the core's (Q, C + 1) class
    probabilities over ``classes``. A tube without ``class_probs`` (over the same classes) or matched queries is
    left as it is."""
    if weight <= 0:
        return objects, set()
    out, changed = [], set()
    for o in objects:
        frames = [(t, q) for t, q in queries.get(o.id, {}).items() if probs[t] is not None]
        if o.class_probs is None or len(o.class_probs) != len(classes) or not frames:
            out.append(o)
            continue
        core = np.mean([probs[t][q, :-1] for t, q in frames], 0)
        mixed = (1 - weight) * o.class_probs / max(float(o.class_probs.sum()), 1e-12)
        mixed = mixed + weight * core / max(float(core.sum()), 1e-12)
        name = classes[int(mixed.argmax())]
        if name != o.label:
            o = ObjectTube(o.id, name, o.masks, o.score, mixed)
            changed.add(o.id)
        out.append(o)
    return out, changed


def _borrowed_queries(obj: ObjectTube, lifted: list[dict[int, np.ndarray]], opts: ProposalOptions):
    """Frame -> the 2D query whose lifted points best match a 4D tube's mask there (IoU >= ``match_iou``)."""
    out = {}
    for t, m in obj.masks.items():
        size = int(m.sum())
        ious = ((int(m[pts].sum()), len(pts), q) for q, pts in lifted[t].items())  # (intersection, |lifted|, q)
        best = max(((i / max(size + n - i, 1), q) for i, n, q in ious), default=(0.0, -1))
        if best[0] >= opts.match_iou:
            out[t] = best[1]
    return out


@dataclass
class CoreFrames:
    """What the 2D core said about each frame of a sequence."""

    proposals: list[list[Proposal]]
    lifted: list[dict[int, np.ndarray]]
    relations: list[np.ndarray | None]  # (Q, Q, P) float16 predicate probabilities per frame
    probs: list[np.ndarray | None] = field(default_factory=list)  # (Q, C + 1) class probabilities per frame


class Proposals2D:
    """The 2D core and the RGB frames + cameras of a dataset, adding unseen objects to 4D predictions."""

    def __init__(self, core, cameras, options: ProposalOptions | None = None, batch: int = 8, seen=None):
        self.core, self.cameras, self.batch = core.eval(), cameras, batch
        self.options = options or ProposalOptions()
        # the class names the 4D model was trained on (Model4DConfig.trained_classes); None: no renaming
        self.seen = None if seen is None else frozenset(seen)

    @property
    def options(self) -> ProposalOptions:
        return self._options

    @options.setter
    def options(self, options: ProposalOptions) -> None:
        if options.min_score is None:  # the core's own object threshold (its predict() keeps the same objects)
            options = replace(options, min_score=self.core.config.object_threshold)
        self._options = options

    @classmethod
    def from_pretrained(cls, core_dir: str | os.PathLike, cameras, classes, predicates, device="cpu", seen=None,
                        **options):  # fmt: skip
        """The 2D core of ``core_dir`` (``pretrain-2d``'s model folder) naming ``classes`` / ``predicates``;
        ``seen``: the classes the 4D model was trained on (for renaming)."""
        from spade4d.models.spade2d import Spade2D

        core = Spade2D.from_pretrained(core_dir)
        core.set_vocabulary(list(classes), list(predicates))
        return cls(core.to(device), cameras, ProposalOptions(**options), seen=seen)

    @torch.no_grad()
    def _run_core(self, images: list[np.ndarray]):
        """(prob (Q, C + 1), masks (Q, H, W) bool, relation probabilities (Q, Q, P)) per image."""
        core = self.core
        Q = core.config.num_queries
        pairs = torch.tensor([(s, o) for s in range(Q) for o in range(Q) if s != o], device=core.device)
        subj, obj = pairs.cpu().numpy().T
        for i in range(0, len(images), self.batch):
            chunk = np.stack(images[i : i + self.batch])
            x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float().div(255.0).to(core.device)
            out = core(x)
            prob = out.class_logits.softmax(-1).cpu().numpy()
            masks = F.interpolate(out.mask_logits, size=chunk.shape[1:3], mode="bilinear", align_corners=False) > 0
            rel = core.relation_logits(out, pairs).sigmoid().cpu().numpy()  # (B, R, P)
            for b in range(len(chunk)):
                full = np.zeros((Q, Q, rel.shape[-1]), dtype=np.float16)
                full[subj, obj] = rel[b]
                yield prob[b], masks[b].cpu().numpy(), full

    def core_frames(self, seq: PointSequence, video_id: str) -> CoreFrames:
        T = seq.num_frames
        res = CoreFrames([[] for _ in range(T)], [{} for _ in range(T)], [None] * T, [None] * T)
        for start in range(0, T, self.batch):
            times = list(range(start, min(T, start + self.batch)))
            views = [self.cameras.get(video_id, t) for t in times]
            for t, (rgb, K, pose), (prob, masks, rel) in zip(times, views, self._run_core([v[0] for v in views])):
                xyz = seq.frame(t)["xyz"]
                vis = visible_points(xyz, K, pose, rgb.shape[0], rgb.shape[1], self.options.depth_tolerance)
                res.proposals[t], res.lifted[t] = frame_proposals(t, prob, masks, xyz, vis, self.options)
                res.relations[t], res.probs[t] = rel, prob
        return res

    def __call__(self, graph: SceneGraph4D, seq: PointSequence, video_id: str, relation_threshold: float,
                 min_span: int, max_relations: int) -> SceneGraph4D:  # fmt: skip
        """``graph`` (the 4D model's prediction of ``seq``) with the unseen objects and their relations added."""
        opts = self.options
        counts = [int(c) for c in seq.counts]
        frames = self.core_frames(seq, video_id)
        classes = self.core.config.classes
        tubes = name_tubes(associate(frames.proposals, opts), opts)
        queries = {o.id: _borrowed_queries(o, frames.lifted, opts) for o in graph.objects}
        old, named = fuse_names(graph.objects, queries, frames.probs, classes, opts.name_weight)
        old, renamed, tubes = rename_unseen(old, tubes, counts, classes, self.seen, opts)
        kept = merge_tubes(old, tubes, counts, opts, classes, self.seen)
        if not kept and not renamed:
            return graph if not named else replace(graph, objects=old)
        next_id = max((o.id for o in old), default=0) + 1
        new = [ObjectTube(next_id + i, classes[t.label], m, t.score) for i, (t, m) in enumerate(kept)]
        queries.update({o.id: {f: p.query for f, p in t.proposals.items()} for o, (t, _) in zip(new, kept)})
        objects = old + new
        new_ids, predicates = {o.id for o in new} | renamed, self.core.config.predicates
        rel = tube_relations(objects, new_ids, queries, frames.relations, predicates, relation_threshold, min_span)
        for r in rel:
            r.score *= opts.relation_weight
        relations = sorted(graph.relations + rel, key=lambda r: -r.score)[:max_relations]
        return SceneGraph4D(graph.video_id, graph.num_frames, objects, relations, graph.num_points)


def tube_relations(objects: list[ObjectTube], new_ids: set[int], queries: dict[int, dict[int, int]],
                   rel_frames: list[np.ndarray | None], predicates: list[str], threshold: float,
                   min_span: int) -> list[Relation4D]:  # fmt: skip
    """Relations of every ordered pair of ``objects`` with a new tube (``new_ids``). ``queries``: object id ->
    {frame: its 2D query}; ``rel_frames``: per frame, (Q, Q, P) predicate probabilities of query pairs. A pair's
    per-frame probabilities are its queries' (0 where either has none, or both have the same); score = max over
    frames x score_s x score_o; a pair's five most likely predicates; frames as :func:`relation_frames`."""
    from spade4d.inference.infer_4d import relation_frames

    T = len(rel_frames)
    out = []
    for s in objects:
        for o in objects:
            if s.id == o.id or (s.id not in new_ids and o.id not in new_ids):
                continue
            pr = np.zeros((T, len(predicates)), dtype=np.float32)
            for t in set(queries[s.id]) & set(queries[o.id]):
                qs, qo = queries[s.id][t], queries[o.id][t]
                if qs != qo and rel_frames[t] is not None:
                    pr[t] = rel_frames[t][qs, qo]
            best = pr.max(0)
            for p in np.argsort(-best)[:5]:
                if best[p] > 0:
                    on = relation_frames(pr[:, p], threshold, min_span)
                    out.append(
                        Relation4D(s.id, o.id, predicates[p], frames_to_spans(on), float(best[p]) * s.score * o.score)
                    )
    return out
