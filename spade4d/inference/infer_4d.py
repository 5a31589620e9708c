"""Inference of the 4D model: any sequence in, a :class:`SceneGraph4D` (docs/formats.md) out.

Frames are processed in windows of ``window`` frames with the query memory carried from window to window, so
query q is the same tube over the whole sequence and memory stays bounded by the window: per window only the
frame assignment of every point (one small int per point) and the per-frame predicate probabilities of the
candidate query pairs are kept.

Object q: class probabilities averaged over the windows and with the dense head's probabilities over the points the
tube takes; label = the most probable name (never "no object"), score = sqrt(its probability x objectness);
kept when score >= ``object_threshold`` and its tube is not empty. Points go to the
query maximising ``score x mask probability`` where that mask probability is >= 0.5 (one object per point).
Relation (s, o, p): score = max over frames of the predicate probability x score_s x score_o; its spans are the
frames where the probability reaches ``relation_threshold``, runs shorter than ``min_span`` dropped (when none
survive, the frames within half of the maximum). The ``max_relations`` best are written.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from spade4d.data.frames import frame_loader, sequence_center
from spade4d.models.model4d import Model4D
from spade4d.structures import ObjectTube, PointSequence, Relation4D, SceneGraph4D, frames_to_spans


def _runs_at_least(on: np.ndarray, min_len: int) -> np.ndarray:
    if min_len <= 1 or not on.any():
        return on
    out = on.copy()
    t = 0
    while t < len(on):
        if on[t]:
            e = t
            while e + 1 < len(on) and on[e + 1]:
                e += 1
            if e - t + 1 < min_len:
                out[t : e + 1] = False
            t = e + 1
        else:
            t += 1
    return out


def assign_window(model: Model4D, out, times, keep, prob: torch.Tensor, assign, sem_sum: torch.Tensor) -> None:
    """One window's points to the 4D model's tubes: each point to the query maximising ``name confidence x mask
    probability`` where that probability is >= 0.5 (written into ``assign[t]``, per frame); the dense head's class
    probabilities of the points a query takes are added to ``sem_sum[q]``. ``prob``: the window's (Q, C + 1)
    class probabilities."""
    C = sem_sum.shape[1]
    score = prob[:, :C].max(1).values  # (Q,)
    for i, t in enumerate(times):
        if len(keep[i]) == 0:
            continue
        mp = out.mask_logits(i).sigmoid()  # (Q, n)
        _, q = (mp * score[:, None]).max(0)
        ok = mp.gather(0, q[None]).squeeze(0) >= 0.5
        assign[t][keep[i][ok.cpu().numpy()]] = q[ok].cpu().numpy().astype(np.int16)
        fidx = torch.nonzero(out.point_frame == i).squeeze(1)
        sem = model.point_class_logits(out.point_feats[fidx[ok]]).softmax(-1)
        sem_sum.index_add_(0, q[ok], sem)


def tube_names(prob: np.ndarray, sem_sum: torch.Tensor) -> np.ndarray:
    """A tube's name distribution (Q, C): the query's class probabilities (``prob``, (Q, C + 1), averaged over the
    windows) averaged with the dense head's over the points the tube takes (``sem_sum``, from
    :func:`assign_window`); the query's alone where it takes no point."""
    C = sem_sum.shape[1]
    sem_sum = sem_sum.cpu()
    sem = (sem_sum / sem_sum.sum(1, keepdim=True).clamp_min(1e-6)).numpy()
    has_sem = sem_sum.sum(1).numpy() > 0
    return np.where(has_sem[:, None], 0.5 * (prob[:, :C] + sem), prob[:, :C])


@torch.no_grad()
def predict_sequence(
    model: Model4D,
    seq: PointSequence,
    video_id: str,
    window: int | None = None,
    object_threshold: float | None = None,
    max_relations: int | None = None,
    rgb_source=None,
) -> SceneGraph4D:
    cfg = model.config
    obj_thr = cfg.object_threshold if object_threshold is None else object_threshold
    max_rel = cfg.max_relations if max_relations is None else max_relations
    model.eval()
    T, Q, C = seq.num_frames, cfg.num_queries, len(cfg.classes)
    counts = [int(c) for c in seq.counts]
    center = sequence_center(seq)
    assign = [np.full(n, -1, dtype=np.int16) for n in counts]  # per frame: query of every point
    dev = model.device
    prob_sum = torch.zeros(Q, C + 1, device=dev)
    sem_sum = torch.zeros(Q, C, device=dev)  # per query: summed dense class probabilities of the points it takes
    pairs = torch.tensor([(s, o) for s in range(Q) for o in range(Q) if s != o], dtype=torch.long, device=dev)
    rel_prob = np.zeros((len(pairs), T, len(cfg.predicates)), dtype=np.float16)
    n_win = 0
    load = frame_loader(seq, video_id, rgb_source if model.lift is not None else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for times, fr, out in model.run(load, model.windows(T, window), center):
            prob = out.class_logits.softmax(-1)
            prob_sum += prob
            n_win += 1
            assign_window(model, out, times, fr.keep, prob, assign, sem_sum)
            rp = model.relation_logits(out, pairs).sigmoid()  # (R, Tw, P)
            rel_prob[:, times] = rp.float().cpu().numpy().astype(np.float16)
    for w in caught:
        if "dropped" in str(w.message):
            warnings.warn(str(w.message), stacklevel=2)
    prob = (prob_sum / max(n_win, 1)).cpu().numpy()
    named = tube_names(prob, sem_sum)
    labels = named.argmax(1)
    scores = np.sqrt(named[np.arange(Q), labels] * (1 - prob[:, C]))  # name confidence x objectness
    objects = {}
    for q in range(Q):
        if scores[q] < obj_thr:
            continue
        masks = {t: assign[t] == q for t in range(T) if (assign[t] == q).any()}
        if masks:
            objects[q] = ObjectTube(q + 1, cfg.classes[labels[q]], masks, float(scores[q]), named[q])
    cands = []
    for r, (s, o) in enumerate(pairs.tolist()):
        if s not in objects or o not in objects:
            continue
        pr = rel_prob[r].astype(np.float32)  # (T, P)
        best = pr.max(0)
        base = scores[s] * scores[o]
        for p in np.argsort(-best)[:5]:  # a pair's five most likely predicates
            cands.append((float(best[p] * base), s, o, int(p), pr[:, p]))
    cands.sort(key=lambda c: -c[0])
    relations = []
    for sc, s, o, p, pr in cands[:max_rel]:
        on = relation_frames(pr, cfg.relation_threshold, cfg.min_span)
        relations.append(Relation4D(s + 1, o + 1, cfg.predicates[p], frames_to_spans(on), sc))
    return SceneGraph4D(video_id, T, list(objects.values()), relations, counts)


def relation_frames(prob: np.ndarray, threshold: float, min_span: int) -> np.ndarray:
    """(T,) per-frame probabilities of one relation -> (T,) bool: the frames where it holds (reaching
    ``threshold``, runs shorter than ``min_span`` dropped; when none survive, the frames within half of the
    maximum)."""
    on = _runs_at_least(prob >= threshold, min_span)
    return on if on.any() else prob >= 0.5 * prob.max()


def predict_dataset(model: Model4D, dataset, window: int | None = None, rgb_source=None) -> Iterator[SceneGraph4D]:
    for i in range(len(dataset)):
        seq, graph = dataset[i]
        yield predict_sequence(model, seq, graph.video_id, window, rgb_source=rgb_source)
