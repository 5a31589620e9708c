"""Training clips: frames of one sequence with per-point GT object indices and per-frame relation targets,
and the loss of the 4D model on a clip (windows with carried memory, one tube-level matching)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from spade4d.batch import Frames
from spade4d.data.frames import FramesError, load_frames, sequence_center  # noqa: F401 - re-exported
from spade4d.models.losses import LossWeights, dice_loss, hungarian_match, mask_match_cost
from spade4d.models.model4d import Model4D
from spade4d.structures import SceneGraph4D, frames_to_spans, spans_to_frames


class ClipError(FramesError):
    """A clip cannot be built (a class outside the model's vocabulary, mismatched frames)."""


@dataclass(frozen=True)
class Augment:
    """Random geometric and colour changes of a training clip, the same for all its frames.

    The usual ones for indoor/outdoor point clouds (as in Mask3D and OneFormer3D): a rotation about the up axis,
    a mirror of one horizontal axis, an isotropic scale, a colour jitter. Every relation of the synthetic world
    is defined relative to the objects (facing directions, distances, contact), so none of them changes meaning
    under these; a dataset with relations in a fixed world frame ("left of" the room) should turn ``rotate`` and
    ``flip`` off. ``up_axis`` is the vertical axis of the data (2 for the synthetic world's +z up).
    """

    rotate: float = 180.0  # degrees: angle drawn uniformly in [-rotate, rotate]
    flip: bool = True  # mirror the first horizontal axis with probability 1/2 (with the rotation: any mirror)
    scale: tuple[float, float] = (0.9, 1.1)
    color: float = 0.05  # brightness shift and per-channel gain, both in [-color, color]
    up_axis: int = 2

    def __post_init__(self):
        if self.up_axis not in (0, 1, 2):
            raise ValueError(f"up_axis must be 0, 1 or 2, got {self.up_axis}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be a range 0 < lo <= hi, got {self.scale}")

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        """A (3, 3) linear map: rotation about the up axis, then an optional mirror, then the scale."""
        a = np.deg2rad(rng.uniform(-self.rotate, self.rotate))
        h = [i for i in range(3) if i != self.up_axis]  # the two horizontal axes
        m = np.eye(3)
        m[h[0], h[0]] = m[h[1], h[1]] = np.cos(a)
        m[h[0], h[1]], m[h[1], h[0]] = -np.sin(a), np.sin(a)
        if self.flip and rng.random() < 0.5:
            m = np.diag([-1.0 if i == h[0] else 1.0 for i in range(3)]) @ m
        return m * rng.uniform(*self.scale)

    def __call__(self, frames: Frames, center: torch.Tensor, rng: np.random.Generator) -> Frames:
        """``frames`` changed about ``center`` (the point the model centres on, which stays put)."""
        m = torch.from_numpy(self.matrix(rng).astype(np.float32))
        xyz = (frames.xyz - center) @ m.T + center
        gain = torch.from_numpy(rng.uniform(1 - self.color, 1 + self.color, 3).astype(np.float32))
        rgb = (frames.rgb * gain + float(rng.uniform(-self.color, self.color))).clamp(0, 1)
        return replace(frames, xyz=xyz, rgb=rgb)


@dataclass
class ClipTargets:
    labels: torch.Tensor  # (G,) class indices
    instance: torch.Tensor  # (N,) GT object index (0..G-1) of every kept point, -1 none
    relations: torch.Tensor  # (G, G, T, P) {0,1}
    object_ids: list[int]

    def to(self, device: torch.device | str) -> ClipTargets:
        return ClipTargets(self.labels.to(device), self.instance.to(device), self.relations.to(device), self.object_ids)


def clip_targets(graph: SceneGraph4D, frames: Frames, classes: list[str], predicates: list[str]) -> ClipTargets:
    cidx = {c: i for i, c in enumerate(classes)}
    pidx = {p: i for i, p in enumerate(predicates)}
    times = frames.times.tolist()
    objs = [o for o in graph.objects if any(t in o.masks and o.masks[t].any() for t in times)]
    for o in objs:
        if o.label not in cidx:
            raise ClipError(f"sequence {graph.video_id!r}: class {o.label!r} is not in the model's vocabulary")
    inst = []
    for i, t in enumerate(times):
        keep = frames.keep[i]
        lab = np.full(len(keep), -1, dtype=np.int64)
        for g, o in enumerate(objs):
            m = o.masks.get(t)
            if m is not None:
                lab[m[keep]] = g
        inst.append(lab)
    T, G, P = len(times), len(objs), len(predicates)
    rel = torch.zeros((G, G, T, P))
    gi = {o.id: g for g, o in enumerate(objs)}
    for r in graph.relations:
        if r.subject in gi and r.object in gi and r.predicate in pidx:
            on = spans_to_frames(r.spans, graph.num_frames)[times]
            rel[gi[r.subject], gi[r.object], torch.from_numpy(on), pidx[r.predicate]] = 1.0
    return ClipTargets(
        torch.tensor([cidx[o.label] for o in objs], dtype=torch.long),
        torch.from_numpy(np.concatenate(inst)) if inst else torch.zeros(0, dtype=torch.long),
        rel,
        [o.id for o in objs],
    )


def run_windows(model: Model4D, frames: Frames, center: torch.Tensor, window: int | None = None):
    """Forward a clip window by window, carrying the memory. Returns the window outputs and their frame ranges."""
    windows = model.windows(len(frames.times), window)
    steps = model.run(lambda w: frames.window(w[0], w[-1] + 1), windows, center)
    return [(times[0], times[-1] + 1, out) for times, _, out in steps]


def clip_loss(
    model: Model4D,
    frames: Frames,
    targets: ClipTargets,
    center: torch.Tensor,
    weights: LossWeights = LossWeights(),
    points_per_frame: int = 2048,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor | float]:
    """The 4D model's losses on a clip, each multiplied by its weight: ``loss_sem`` (dense point classes),
    ``loss_cls`` (tube classes, every window), ``loss_bce`` and ``loss_dice`` (the matched tubes' masks on
    ``points_per_frame`` sampled points of every frame), ``loss_rel`` (per-frame predicates of every ordered pair
    of matched tubes) and, with a SceneLLM, ``loss_lm`` and ``loss_llm_mask``; plus ``matched``, the number of
    matched tubes (a float, not a loss). The training loop sums the ``loss_*`` terms."""
    dev = model.device  # the data go where the model is (CPU or a GPU)
    frames, targets, center = frames.to(dev), targets.to(dev), center.to(dev)
    model.keep_layers = weights.deep > 0  # the decoder's earlier layers, for deep supervision
    outs = run_windows(model, frames, center)
    C = len(model.config.classes)
    G = len(targets.labels)
    # sampled points of every frame, their mask logits (Q, S) and targets (G, S)
    logits_t, tgt_t, sem_logits, sem_tgt, sampled = [], [], [], [], []
    for a, b, out in outs:
        for t in range(b - a):
            idx = torch.nonzero(frames.frame == a + t).squeeze(1)
            if len(idx) > points_per_frame:
                local = torch.randperm(len(idx), generator=generator)[:points_per_frame].to(dev)
            else:
                local = torch.arange(len(idx), device=dev)
            fidx = out.frame_points(t, local)
            pf = out.points.select(fidx)  # the sampled points' features only: the rest are never read
            logits_t.append(out.mask_embed[t] @ pf.T)
            lab = targets.instance[idx[local]]
            sampled.append((out, t, pf))
            has = lab >= 0
            sem_logits.append(model.point_class_logits(pf[has]))
            sem_tgt.append(targets.labels[lab[has]])
            tgt_t.append((lab[None, :] == torch.arange(G, device=dev)[:, None]).float())
    qi, gi, loss_cls = _match_and_classify([o.class_logits for _, _, o in outs], logits_t, tgt_t, targets, weights)
    qi_t, gi_t = torch.from_numpy(qi).to(dev), torch.from_numpy(gi).to(dev)
    loss_bce, loss_dice = _mask_losses(logits_t, tgt_t, qi_t, gi_t, dev)
    loss_deep = _deep_supervision(model, outs, sampled, tgt_t, targets, weights) if weights.deep > 0 else None
    loss_rel = _relation_loss(model, outs, targets, qi, gi, weights.relation_pos_weight)
    loss_lm = loss_llm_mask = torch.zeros((), device=dev)
    if model.llm is not None and (weights.llm > 0 or weights.llm_mask > 0):
        loss_lm, loss_llm_mask = llm_clip_loss(
            model, outs, sampled, tgt_t, targets, qi, gi, frames.times.tolist(), generator
        )
    sem_l = torch.cat(sem_logits) if sem_logits else torch.zeros((0, C), device=dev)
    loss_sem = F.cross_entropy(sem_l, torch.cat(sem_tgt)) if len(sem_l) else torch.zeros((), device=dev)
    terms = {
        "loss_sem": weights.semantic * loss_sem,
        "loss_cls": weights.cls * loss_cls,
        "loss_bce": weights.bce * loss_bce,
        "loss_dice": weights.dice * loss_dice,
        "loss_rel": weights.relation * loss_rel,
    }
    if loss_deep is not None:
        terms["loss_deep"] = weights.deep * loss_deep
    if model.llm is not None:
        terms.update(loss_lm=weights.llm * loss_lm, loss_llm_mask=weights.llm_mask * loss_llm_mask)
    return {**terms, "matched": float(len(qi))}


def _deep_supervision(model: Model4D, outs, sampled, tgt_t, targets: ClipTargets, weights: LossWeights):
    """Mask2Former's deep supervision: every decoder layer but the last predicts classes and masks through the
    last layer's heads, is matched to the ground truth on its own, and takes the same class, BCE and Dice losses
    (with their weights); the sum over those layers."""
    dev = model.device
    per_window = {id(out): model.layer_predictions(out) for _, _, out in outs}
    total = torch.zeros((), device=dev)
    for layer in range(min((len(p) for p in per_window.values()), default=0)):
        logits_t = [per_window[id(out)][layer][1][t] @ pf.T for out, t, pf in sampled]
        class_logits = [p[layer][0] for p in per_window.values()]
        qi, gi, loss_cls = _match_and_classify(class_logits, logits_t, tgt_t, targets, weights)
        bce, dice = _mask_losses(logits_t, tgt_t, torch.from_numpy(qi).to(dev), torch.from_numpy(gi).to(dev), dev)
        total = total + weights.cls * loss_cls + weights.bce * bce + weights.dice * dice
    return total


def _match_and_classify(class_logits: list[torch.Tensor], logits_t, tgt_t, targets: ClipTargets, weights):
    """Hungarian matching of the queries to the ground truth (class probabilities averaged over the windows'
    ``class_logits`` (Q, C + 1) each, the mask cost of every frame's sampled points) and the class loss of every
    window against the matched labels (the rest: no object). Returns (query index, GT index, class loss)."""
    dev = class_logits[0].device
    (Q, C1), G = class_logits[0].shape, len(targets.labels)
    class_prob = torch.stack([c.softmax(-1) for c in class_logits]).mean(0)
    with torch.no_grad():
        mcost = sum(mask_match_cost(lg, tg, weights) for lg, tg in zip(logits_t, tgt_t) if lg.shape[1])
        if not torch.is_tensor(mcost):
            mcost = torch.zeros((Q, G), device=dev)
        qi, gi = hungarian_match(class_prob, targets.labels, mcost / max(len(logits_t), 1), weights)
    cls_target = torch.full((Q,), C1 - 1, dtype=torch.long, device=dev)
    cls_target[torch.from_numpy(qi).to(dev)] = targets.labels[torch.from_numpy(gi).to(dev)]
    cw = torch.ones(C1, device=dev)
    cw[C1 - 1] = weights.no_object
    return qi, gi, sum(F.cross_entropy(c, cls_target, weight=cw) for c in class_logits) / len(class_logits)


def _mask_losses(logits_t, tgt_t, qi_t, gi_t, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE and Dice of the matched tubes' masks, averaged over the frames that have sampled points."""
    bce, dice = [], []
    for lg, tg in zip(logits_t, tgt_t):  # (Q, S) logits and (G, S) targets of one frame's sampled points
        if len(qi_t) and lg.shape[1]:
            bce.append(F.binary_cross_entropy_with_logits(lg[qi_t], tg[gi_t]))
            dice.append(dice_loss(lg[qi_t], tg[gi_t]).mean())
    if not bce:
        return torch.zeros((), device=dev), torch.zeros((), device=dev)
    return torch.stack(bce).mean(), torch.stack(dice).mean()


def _relation_loss(model, outs, targets, qi, gi, pos_weight: float) -> torch.Tensor:
    """Per-frame multi-label BCE of the predicates of every ordered pair of matched tubes."""
    dev = model.device
    if len(qi) < 2:
        return torch.zeros((), device=dev)
    s, o = np.meshgrid(np.arange(len(qi)), np.arange(len(qi)), indexing="ij")
    off = s != o
    s, o = s[off], o[off]
    pairs = torch.from_numpy(np.stack([qi[s], qi[o]], 1)).to(dev)  # (R, 2) query pairs
    logits = torch.cat([model.relation_logits(out, pairs) for _, _, out in outs], 1)  # (R, T, P)
    target = targets.relations[torch.from_numpy(gi[s]).to(dev), torch.from_numpy(gi[o]).to(dev)]  # (R, T, P)
    pw = torch.tensor(pos_weight, device=dev)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)


def clip_graph(
    targets: ClipTargets, qi: np.ndarray, gi: np.ndarray, classes: list[str], predicates: list[str], times: list[int]
):
    """The clip's scene graph in the SceneLLM's canonical order: objects in the order of the query tubes they
    are matched to (the order of the scene tokens), relations as (subject, predicate, object, spans) over those
    positions, spans in sequence frame numbers (``times``: the clip's frames; a run of clip frames i..j is the
    span times[i]-times[j]). Returns (GT index per position, names, relations)."""
    order = gi[np.argsort(qi)]
    pos = {int(g): i for i, g in enumerate(order)}
    names = [classes[int(targets.labels[g])] for g in order]
    rels = []
    relations = targets.relations.cpu()
    nz = torch.nonzero(relations.any(2))  # (n, 3): subject g, object g, predicate
    for gs, go, p in nz.tolist():
        if gs in pos and go in pos:
            on = relations[gs, go, :, p].numpy() > 0
            spans = [(times[a], times[b]) for a, b in frames_to_spans(on)]
            rels.append((pos[gs], predicates[p], pos[go], spans))
    return order, names, rels


def llm_clip_loss(model, outs, sampled, tgt_t, targets, qi, gi, times: list[int], generator=None):
    """SceneLLM losses of a clip: the LM loss of its serialised graph (teacher forcing) and the mask losses of
    the ``<obj>`` queries against the GT masks of the objects in that order. ``generator``: the step's draw
    (the relation order, when the SceneLLM shuffles it)."""
    llm = model.llm
    cfg = model.config
    order, names, rels = clip_graph(targets, qi, gi, cfg.classes, cfg.predicates, times)
    order, names = order[: llm.config.max_objects], names[: llm.config.max_objects]
    tubes = np.sort(qi)[: len(order)]  # the query tube each object is read from (its pointer)
    share = llm.config.grad_to_4d

    def to_4d(x: torch.Tensor) -> torch.Tensor:  # the value of x; a share of the gradient flows back into it
        return x if share == 1.0 else x.detach() if share == 0.0 else x * share + x.detach() * (1 - share)

    tube_states = to_4d(torch.cat([o.states for _, _, o in outs]).mean(0))  # (Q, D) over the clip's frames
    loss_lm, obj_h = llm.teacher_forced(tube_states, names, tubes.tolist(), rels, (times[0], times[-1]), generator)
    dev = tube_states.device
    if len(order) == 0:
        return loss_lm, torch.zeros((), device=dev)
    emb = {}
    bce, dice = [], []
    gt = torch.from_numpy(np.asarray(order)).to(dev)
    tubes_t = torch.from_numpy(tubes).to(dev)
    for (out, t, pf), tg in zip(sampled, tgt_t):
        if len(pf) == 0:
            continue
        if id(out) not in emb:
            emb[id(out)] = llm.mask_query(obj_h, to_4d(out.states), to_4d(out.mask_embed), tubes_t)  # (Tw, K, D)
        lg = emb[id(out)][t] @ to_4d(pf).T  # (K, S)
        bce.append(F.binary_cross_entropy_with_logits(lg, tg[gt]))
        dice.append(dice_loss(lg, tg[gt]).mean())
    if not bce:
        return loss_lm, torch.zeros((), device=dev)
    return loss_lm, torch.stack(bce).mean() + torch.stack(dice).mean()
