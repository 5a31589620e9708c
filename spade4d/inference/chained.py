"""Chained scene-graph inference with the SceneLLM: objects first, then their relations.

1. The 4D model runs over the sequence window by window (memory carried); each query's states are averaged
   into a tube state, and the tube states become the LLM's scene tokens.
2. Turn 1 — "which objects are in this scene?" — is decoded under :class:`ObjectListGrammar`: each object is a
   tube pointer, a name and ``<obj>``. The LLM's hidden state at each ``<obj>`` becomes a query for the mask
   decoder (:class:`ObjectMaskQuery`, which favours the pointed tube), giving that object's mask in every frame.
   Points go to the object maximising ``score x mask probability`` where that probability is >= 0.5. An object's
   score is the geometric mean probability of its pointer, name tokens and ``<obj>``.
3. Turn 2 — "which relations hold, and when?", with turn 1's objects listed as ``name#i`` — continues the same
   KV cache (only the new question is encoded; ``reuse_cache=False`` re-encodes everything, for comparison) and
   is decoded under :class:`RelationGrammar`: greedily, then ``samples`` more times by sampling (the cache is
   cropped back to the question between answers), so a pair can get several predicates. A relation's LLM score
   is the geometric mean probability of its subject, predicate and object tokens; with ``rescore > 0`` it is
   combined with the 4D relation head's probability for that predicate between the tubes the two objects' queries
   point at (``llm^(1-w) x head^w``), times the geometric mean of the two object scores.
4. With ``closed_vocabulary`` the free-text names are mapped to the model's class / predicate names by text
   embedding similarity (evaluation against a fixed label set); otherwise they are written as the LLM said them.
   With ``name_rescore`` w > 0 (default 1; None: ``rescore``) an object's label and score also weigh in the 4D
   model's naming of the tube it points at (its query and dense point class heads, as
   :func:`spade4d.inference.infer_4d.predict_sequence` names tubes): label = argmax over names of
   ``said^(1-w) x head^w`` (``said``: a softmax over the name's text similarities), score =
   ``llm^(1-w) x (head x objectness)^w``. At 1 the LLM decides which tubes are objects and their masks, and the
   4D model names them.
5. ``spans="head"`` (closed vocabulary): a relation the LLM chose keeps its score but takes its frames from the 4D
   relation head — the frames where the head's probability of that predicate between the two pointed tubes reaches
   ``relation_threshold`` (runs shorter than ``min_span`` dropped; else the frames within half of its maximum), as
   :func:`spade4d.inference.infer_4d.predict_sequence` does. ``"llm"``: the spans as written.
6. ``complete="after"|"joint"`` (closed vocabulary): the 4D relation head's relations among the LLM's objects join
   the LLM's (:func:`complete_relations`), so the ranked list is not limited to what the LLM wrote.
   ``complete="graph"``: as ``"joint"``, and the tubes the 4D model keeps as objects (its object threshold on
   name confidence x objectness, as :func:`spade4d.inference.infer_4d.predict_sequence` does) that no LLM object
   points at join as objects too, with the 4D model's masks and names. The LLM then re-ranks the 4D model's
   graph (its objects' masks and names, its relations' scores) instead of bounding it.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from spade4d.data.frames import load_frames, sequence_center
from spade4d.inference.grammar import (
    GrammarLogitsProcessor,
    ObjectListGrammar,
    ParseError,
    RelationGrammar,
    SingleTurnGrammar,
    TokenGrammar,
    parse_objects,
    parse_relations,
    render,
)
from spade4d.inference.infer_4d import assign_window, relation_frames, tube_names
from spade4d.structures import ObjectTube, PointSequence, Relation4D, SceneGraph4D, frames_to_spans, merge_spans

COMPLETE_MODES = ("none", "after", "joint", "graph")
NAME_TEMPERATURE = 0.05  # cosine similarity of a said name to the vocabulary -> a distribution over names


@dataclass
class Decoded:
    tokens: list[int]
    logprobs: list[float]
    obj_hidden: list[torch.Tensor]
    complete: bool


@dataclass
class ChainStats:
    """Where the time went (seconds) and how many tokens each turn encoded / generated."""

    model4d_s: float = 0.0
    turn1_s: float = 0.0
    turn2_s: float = 0.0
    masks_s: float = 0.0
    prompt1_tokens: int = 0
    turn1_tokens: int = 0
    prompt2_tokens: int = 0
    turn2_tokens: int = 0
    answers: list[str] = field(default_factory=list)


def decode(
    llm,
    grammar: TokenGrammar,
    logits: torch.Tensor,
    cache,
    max_new_tokens: int,
    generator=None,
    temperature: float = 0.0,
    scene: torch.Tensor | None = None,
) -> tuple[Decoded, object]:
    """Grammar-constrained decoding from the next-token ``logits`` (tokens.size,) on ``cache``; every chosen token
    is fed, so the cache ends holding the whole answer. ``temperature`` 0: greedy. ``scene``: the scene tokens
    (tube pointers' logits and embeddings)."""
    proc = GrammarLogitsProcessor(grammar)
    keys = None if scene is None else llm.pointer_keys(scene)  # once per answer, not per token
    toks, lps, obj_h = [], [], []
    for _ in range(max_new_tokens):
        masked = proc(None, logits.float()[None])[0]
        logp = torch.log_softmax(masked, -1)
        if temperature > 0:
            probs = torch.softmax(masked / temperature, -1).cpu()  # drawn on the CPU: ``generator`` is a CPU one
            tok = int(torch.multinomial(probs, 1, generator=generator))
        else:
            tok = int(masked.argmax())
        grammar.advance(tok)
        toks.append(tok)
        lps.append(float(logp[tok]))
        hidden, cache = llm.run(llm.embed([tok], scene), cache)
        if tok == llm.obj_id:
            obj_h.append(hidden[-1])
        logits = llm.logits(hidden[-1], keys)
        if grammar.done:
            return Decoded(toks, lps, obj_h, True), cache
    return Decoded(toks, lps, obj_h, False), cache


def _truncate(d: Decoded, sep: int, period: int) -> Decoded:
    """An answer cut by the token budget: keep the items before its last separator and close it with '.'."""
    if d.complete:
        return d
    cut = max((i for i, t in enumerate(d.tokens) if t == sep), default=0)
    return Decoded(d.tokens[:cut] + [period], d.logprobs[:cut] + [0.0], d.obj_hidden, False)


def _segments(tokens: list[int], sep: int) -> list[list[int]]:
    out, cur = [], []
    for i, t in enumerate(tokens):
        if t == sep:
            out.append(cur)
            cur = []
        else:
            cur.append(i)
    out.append(cur)
    return out


def _similarity(names: list[str], embed: torch.Tensor, text_model) -> torch.Tensor:
    """(len(names), V) cosine similarities of the names to the vocabulary's text embeddings (on the CPU)."""
    from spade4d.models.text import encode_texts

    return encode_texts(names, text_model) @ embed.float().cpu().T


def _nearest(names: list[str], embed: torch.Tensor, text_model) -> list[int]:
    return _similarity(names, embed, text_model).argmax(1).tolist()


def complete_relations(
    merged: dict[tuple[int, str, int], tuple[float, list]],
    head_prob: dict[tuple[int, int], np.ndarray],
    kept: set[int],
    obj_scores: list[float],
    predicates: list[str],
    mode: str,
    w: float,
    floor: float,
    threshold: float,
    min_span: int,
    per_pair: int = 5,
) -> dict[tuple[int, str, int], tuple[float, list]]:
    """The LLM's relations ``merged`` ((subject, predicate, object) -> (score, spans)) plus the 4D relation head's
    among the LLM's objects: for every ordered pair of kept objects with head probabilities ``(T, P)``, its
    ``per_pair`` most likely predicates that the LLM did not write, with the frames where the head fires.

    ``mode="after"``: a head relation scores ``lowest LLM score x head x sqrt(object scores)``, so it ranks below
    every relation the LLM chose. ``mode="joint"``: it scores like an LLM relation re-scored by the head, with
    the LLM probability ``floor`` for a relation the LLM did not write: ``floor^(1-w) x head^w x sqrt(...)``.
    """
    out = dict(merged)
    lowest = min((sc for sc, _ in merged.values()), default=1.0)
    for (s, o), pr in head_prob.items():
        if s not in kept or o not in kept or s == o:
            continue
        top = pr.max(0)  # (P,)
        for j in np.argsort(-top, kind="stable")[:per_pair].tolist():
            key = (s, predicates[j], o)
            if key in out:
                continue
            if mode == "after":
                sc = lowest * float(top[j])
            else:
                sc = floor ** (1 - w) * max(float(top[j]), 1e-6) ** w
            sc *= float(np.sqrt(obj_scores[s] * obj_scores[o]))
            out[key] = (sc, frames_to_spans(relation_frames(pr[:, j], threshold, min_span)))
    return out


@torch.no_grad()
def score_continuations(
    llm, cache, first: torch.Tensor, scene: torch.Tensor, conts: list[list[int]], chunk: int = 64
) -> np.ndarray:
    """The geometric mean probability of each token list in ``conts`` as the continuation of ``cache`` (whose
    next-token logits are ``first``), by teacher forcing: the cache is copied and repeated over a batch of
    candidates, which are right-padded (causal attention keeps the padding out of the real tokens' states).
    ``cache`` itself is left as it is."""
    out = np.zeros(len(conts))
    if not conts:
        return out
    keys = llm.pointer_keys(scene)
    lp0 = torch.log_softmax(first.float(), -1)
    for a in range(0, len(conts), chunk):
        batch = conts[a : a + chunk]
        n = max(len(c) for c in batch)
        if n == 1:
            for b, c in enumerate(batch):
                out[a + b] = float(lp0[c[0]].exp())
            continue
        ids = [c[:-1] + [c[0]] * (n - len(c)) for c in batch]  # every token but the last, padded
        emb = torch.cat([llm.embed(i, scene) for i in ids])  # (B, n - 1, H)
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(len(batch))
        hidden = llm.forward_cached(emb, batch_cache).last_hidden_state
        logp = torch.log_softmax(llm.logits(hidden, keys).float(), -1)  # (B, n - 1, V)
        for b, cont in enumerate(batch):
            lp = [float(lp0[cont[0]])] + [float(logp[b, i, t]) for i, t in enumerate(cont[1:])]
            out[a + b] = float(np.exp(np.mean(lp)))
    return out


def dense_relations(llm, cache, first, scene, merged, head_prob, kept, K, obj_scores, cfg, name_ids, tubes, w):
    """Relations among the LLM's ``K`` objects scored densely: the candidates are the relation head's
    ``dense_per_pair`` best predicates of each pair of kept objects, cut to the ``dense_top`` best by head score x
    the objects' scores, plus the relations decoded (``merged``); each gets the LLM probability of being the first
    relation of turn 2's answer (:func:`score_continuations` after the question), combined with the head as
    ``llm^(1-w) x head^w x sqrt(object scores)``, and the head's frames. Relations of other objects in ``merged``
    are kept as they are."""
    lcfg = llm.config
    tok = llm.tokens
    pidx = {p: i for i, p in enumerate(cfg.predicates)}
    pool: dict[tuple[int, str, int], float] = {}
    for (s, o), pr in head_prob.items():
        if s >= K or o >= K or s not in kept or o not in kept:
            continue
        top = pr.max(0)
        for j in np.argsort(-top, kind="stable")[: lcfg.dense_per_pair].tolist():
            pool[(s, cfg.predicates[j], o)] = float(top[j])

    def rank(key):
        return pool[key] * np.sqrt(obj_scores[key[0]] * obj_scores[key[2]])

    chosen = sorted(pool, key=lambda k: -rank(k))[: lcfg.dense_top]
    picked = set(chosen)
    chosen += [k for k in merged if k[0] < K and k[2] < K and k not in picked]
    conts = [
        llm.ref_tokens(name_ids[s], s, tubes[s])
        + tok.encode_name(llm.tokenizer, p)
        + llm.ref_tokens(name_ids[o], o, tubes[o])
        for s, p, o in chosen
    ]
    p_llm = score_continuations(llm, cache, first, scene, conts)
    out = {k: v for k, v in merged.items() if not (k[0] < K and k[2] < K)}
    for (s, p, o), q in zip(chosen, p_llm):
        pr = head_prob[(s, o)][:, pidx[p]]
        sc = float(q) ** (1 - w) * max(float(pr.max()), 1e-6) ** w * float(np.sqrt(obj_scores[s] * obj_scores[o]))
        spans = frames_to_spans(relation_frames(pr, cfg.relation_threshold, cfg.min_span))
        out[(s, p, o)] = (sc, spans)
    return out


@torch.no_grad()
def run_4d(model, seq: PointSequence, video_id: str, window: int | None = None, rgb_source=None):
    """The 4D model over a sequence, window by window (memory carried). Returns the windows as
    ``(frame indices, kept point indices per frame, WindowOutput)`` and the (Q, D) tube states: each query's
    states averaged over all frames (the SceneLLM's scene tokens)."""
    W = window or model.config.window
    T = seq.num_frames
    center = sequence_center(seq)
    memory = model.init_memory()
    wins = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*dropped.*")
        for a in range(0, T, W):
            times = list(range(a, min(a + W, T)))
            fr = load_frames(seq, times, video_id, rgb_source if model.lift is not None else None)
            out = model.forward_window(fr.xyz, fr.rgb, fr.frame, fr.times, center, memory, fr.images, fr.uv)
            memory = out.memory
            wins.append((times, fr.keep, out))
    nf = torch.tensor([len(t) for t, _, _ in wins], dtype=torch.float32)
    tube_states = sum(o.states.mean(0) * n for (_, _, o), n in zip(wins, nf)) / nf.sum()
    return wins, tube_states


@torch.no_grad()
def chained_predict(
    model,
    seq: PointSequence,
    video_id: str,
    window: int | None = None,
    closed_vocabulary: bool = True,
    samples: int | None = None,
    rescore: float | None = None,
    name_rescore: float | None = None,
    reuse_cache: bool = True,
    rgb_source=None,
    max_new_tokens: int = 768,
    chain: str | None = None,
    stats: ChainStats | None = None,
    spans: str | None = None,
    complete: str | None = None,
    scores: str | None = None,
) -> SceneGraph4D:
    llm = model.llm
    if llm is None:
        raise ValueError("this 4D model has no SceneLLM (train it with --llm)")
    cfg, lcfg = model.config, llm.config
    chain = chain or lcfg.chain
    samples = lcfg.samples if samples is None else samples
    w_head = lcfg.rescore if rescore is None else rescore
    w_name = lcfg.name_rescore if name_rescore is None else name_rescore
    w_name = w_head if w_name is None else w_name
    for k, w in (("rescore", w_head), ("name_rescore", w_name)):
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"{k} must be in [0, 1], got {w}")
    span_source = spans or lcfg.spans
    if span_source not in ("llm", "head"):
        raise ValueError(f"spans must be 'llm' or 'head', got {span_source!r}")
    complete = complete or lcfg.complete
    if complete not in COMPLETE_MODES:
        raise ValueError(f"complete must be one of {', '.join(COMPLETE_MODES)}, got {complete!r}")
    scores = scores or lcfg.scores
    if scores not in ("decoded", "dense"):
        raise ValueError(f"scores must be 'decoded' or 'dense', got {scores!r}")
    stats = stats if stats is not None else ChainStats()
    model.eval()
    W = window or cfg.window
    T = seq.num_frames
    counts = [int(c) for c in seq.counts]

    # 1. the 4D model over the sequence
    t0 = time.perf_counter()
    wins, tube_states = run_4d(model, seq, video_id, W, rgb_source)
    stats.model4d_s += time.perf_counter() - t0

    # 2. turn 1 (or the single turn)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(lcfg.seed)
    prompt = llm.prompt_ids(T, chain)
    stats.prompt1_tokens += len(prompt)
    scene = llm.scene_tokens(tube_states)
    hidden, cache = llm.run(llm.embed(prompt, scene))
    logits = llm.logits(hidden[-1], llm.pointer_keys(scene))
    tok = llm.tokens

    def refs_of(names_ids, tubes):
        return [llm.ref_tokens(n, i, q) for i, (n, q) in enumerate(zip(names_ids, tubes))]

    if chain == "single":
        grammar = SingleTurnGrammar(
            tok,
            refs_of,
            T,
            lcfg.max_objects,
            max_name_tokens=lcfg.max_name_tokens,
            max_relations=lcfg.max_relations,
        )
    else:
        grammar = ObjectListGrammar(tok, lcfg.max_objects, lcfg.max_name_tokens)
    ans1, cache = decode(llm, grammar, logits, cache, max_new_tokens, scene=scene)
    obj_grammar = grammar.objects if chain == "single" else grammar
    if chain == "single":
        split = ans1.tokens.index(tok.period) + 1 if tok.period in ans1.tokens else len(ans1.tokens)
        obj_dec = Decoded(ans1.tokens[:split], ans1.logprobs[:split], ans1.obj_hidden, True)
        rel_decs = [Decoded(ans1.tokens[split:], ans1.logprobs[split:], [], ans1.complete)]
    else:
        obj_dec = _truncate(ans1, tok.comma, tok.period)
        rel_decs = []
    text1 = render(llm.tokenizer, obj_dec.tokens, llm.obj_id)
    stats.answers.append(render(llm.tokenizer, obj_dec.tokens, llm.obj_id, pointers=True))
    names = parse_objects(text1)
    K = len(names)
    tubes = obj_grammar.tubes[:K]
    dev = model.device
    tubes_t = torch.tensor(tubes, dtype=torch.long, device=dev)
    obj_h = torch.stack(obj_dec.obj_hidden[:K]) if K else torch.zeros((0, llm.hidden_size), device=dev)
    # object scores: geometric mean probability of each name's tokens and its <obj>
    obj_scores, cur = [], []
    for t, lp in zip(obj_dec.tokens, obj_dec.logprobs):
        if t in (tok.comma, tok.period):
            continue
        cur.append(lp)
        if t == llm.obj_id:
            obj_scores.append(float(np.exp(np.mean(cur))))
            cur = []
    name_ids = [tok.encode_name(llm.tokenizer, n) for n in names]  # canonical tokens of the parsed names
    stats.turn1_s += time.perf_counter() - t0
    stats.turn1_tokens += len(ans1.tokens)

    # 3. masks of the objects (and of the 4D model's own objects no LLM object points at, for "graph")
    t0 = time.perf_counter()
    C = len(cfg.classes)
    # (Q, C + 1), on the CPU like everything below that is not a model call
    class_prob = torch.stack([o.class_logits.softmax(-1) for _, _, o in wins]).mean(0).float().cpu()
    named = None  # the 4D model's names of its tubes, as predict_sequence gives them; only when they are used
    if closed_vocabulary and (complete == "graph" or (K and w_name > 0)):
        sem_sum = torch.zeros(len(class_prob), C, device=dev)
        scratch = [np.full(n, -1, dtype=np.int16) for n in counts]
        for times, keep, out in wins:
            assign_window(model, out, times, keep, out.class_logits.softmax(-1), scratch, sem_sum)
        named = torch.from_numpy(tube_names(class_prob.numpy(), sem_sum)).float()  # (Q, C)
    extra, extra_labels, extra_scores = [], [], []
    if complete == "graph" and closed_vocabulary:
        conf, lab = named.max(1)
        own = (conf * (1 - class_prob[:, C])).sqrt()  # the 4D model's object score (name confidence x objectness)
        pointed = set(tubes)
        extra = [q for q in range(len(own)) if q not in pointed and float(own[q]) >= cfg.object_threshold]
        extra_labels = [cfg.classes[int(lab[q])] for q in extra]
        extra_scores = [float(own[q]) for q in extra]
    all_tubes = list(tubes) + extra
    assign = [np.full(n, -1, dtype=np.int16) for n in counts]
    score_t = torch.tensor(obj_scores[:K] + extra_scores, dtype=torch.float32, device=dev)
    if all_tubes:
        for times, keep, out in wins:
            emb = llm.mask_query(obj_h, out.states, out.mask_embed, tubes_t) if K else None  # (Tw, K, D)
            for i, t in enumerate(times):
                if len(keep[i]) == 0:
                    continue
                idx = torch.nonzero(out.point_frame == i).squeeze(1)
                parts = [(emb[i] @ out.point_feats[idx].T).sigmoid()] if K else []  # (K, n)
                if extra:
                    parts.append(out.mask_logits(i)[extra].sigmoid())  # (E, n)
                mp = torch.cat(parts)
                _, k = (mp * score_t[:, None]).max(0)
                ok = mp.gather(0, k[None]).squeeze(0) >= 0.5
                assign[t][keep[i][ok.cpu().numpy()]] = k[ok].cpu().numpy().astype(np.int16)
    stats.masks_s += time.perf_counter() - t0

    # 4. turn 2: relations, greedy then sampled
    t0 = time.perf_counter()
    refs = [llm.ref_text(n, i) for i, n in enumerate(names)]
    if chain != "single" and K >= 2:
        bridge = llm.bridge_ids(T, refs)
        if reuse_cache:
            base_len = len(prompt) + len(ans1.tokens)
            hidden, cache = llm.run(llm.embed(bridge), cache)
            stats.prompt2_tokens += len(bridge)
        else:
            full = prompt + ans1.tokens + bridge
            hidden, cache = llm.run(llm.embed(full, scene))
            stats.prompt2_tokens += len(full)
            base_len = len(prompt) + len(ans1.tokens)
        q_len = base_len + len(bridge)
        first = llm.logits(hidden[-1], llm.pointer_keys(scene))
        for j in range(1 + samples):
            if j:  # back to the end of the question (a negative count removes tokens in every version)
                cache.crop(-(cache.get_seq_length() - q_len))
            g2 = RelationGrammar(tok, refs_of(name_ids, tubes), T, lcfg.max_relations, lcfg.max_name_tokens)
            temp = 0.0 if j == 0 else lcfg.temperature
            d, cache = decode(llm, g2, first, cache, max_new_tokens, gen, temp, scene)
            rel_decs.append(_truncate(d, tok.semicolon, tok.period))
            stats.turn2_tokens += len(d.tokens)
        cache.crop(-(cache.get_seq_length() - q_len))  # back to the question, for dense scoring
    stats.turn2_s += time.perf_counter() - t0

    cands: dict[tuple[int, str, int], tuple[float, list]] = {}
    for d in rel_decs:
        text = render(llm.tokenizer, d.tokens, llm.obj_id)
        stats.answers.append(render(llm.tokenizer, d.tokens, llm.obj_id, pointers=True))
        try:
            parsed = parse_relations(text, refs, T) if K >= 2 else []
        except ParseError as e:  # the grammar makes this unreachable; never guess if it happens
            raise ParseError(f"{video_id}: {e}") from e
        segs = _segments(d.tokens[:-1], tok.semicolon) if parsed else []
        for r, seg in zip(parsed, segs):
            cut = next((i for i, p in enumerate(seg) if d.tokens[p] == tok.lbracket), len(seg))
            lp = [d.logprobs[p] for p in seg[:cut]]
            sc = float(np.exp(np.mean(lp))) if lp else 0.0
            key = (r.subject, r.predicate, r.object)
            if key not in cands or cands[key][0] < sc:
                cands[key] = (sc, r.spans)

    # 5. names: free text, or the closest names of the model's vocabulary
    labels = list(names)
    pred_names = sorted({k[1] for k in cands})
    pred_map = {p: p for p in pred_names}
    if closed_vocabulary:
        if names and w_name > 0:  # the LLM's name and the class head of the tube its <obj> attends to
            tube = class_prob[tubes]  # (K, C + 1)
            head_p = named[tubes] / named[tubes].sum(1, keepdim=True).clamp_min(1e-9)
            joint = head_p**w_name
            if w_name < 1:  # at 1 the LLM's words carry no weight: no need to embed them
                said = torch.softmax(_similarity(names, model.class_embed, cfg.text_model) / NAME_TEMPERATURE, -1)
                joint = said ** (1 - w_name) * joint
            best = joint.argmax(1)
            labels = [cfg.classes[i] for i in best.tolist()]
            objectness = 1 - tube[:, C]
            obj_scores = [
                float(sc ** (1 - w_name) * (head_p[k, best[k]] * objectness[k]) ** w_name)
                for k, sc in enumerate(obj_scores)
            ]
        elif names:
            labels = [cfg.classes[i] for i in _nearest(names, model.class_embed, cfg.text_model)]
        if pred_names:
            idx = _nearest(pred_names, model.predicate_embed, cfg.text_model)
            pred_map = {p: cfg.predicates[i] for p, i in zip(pred_names, idx)}

    # relation head probabilities for re-scoring, head spans and completion (closed predicates only)
    labels, obj_scores = labels[:K] + extra_labels, list(obj_scores[:K]) + extra_scores
    N = K + len(extra)  # objects: the LLM's, then the 4D model's own ("graph")
    head, head_on, head_prob = {}, {}, {}
    fill = complete != "none" and closed_vocabulary and N >= 2
    dense = scores == "dense" and closed_vocabulary and chain != "single" and K >= 2
    if ((w_head > 0 or span_source == "head") and cands and closed_vocabulary) or fill or dense:
        every = {(s, o) for s in range(N) for o in range(N) if s != o} if (fill or dense) else set()
        pairs = sorted({(s, o) for s, _, o in cands} | every)
        qp = torch.tensor([(all_tubes[s], all_tubes[o]) for s, o in pairs], dtype=torch.long, device=dev)
        prob = torch.cat([model.relation_logits(out, qp).sigmoid() for _, _, out in wins], 1).float().cpu()  # (R, T, P)
        row = {pair: r for r, pair in enumerate(pairs)}
        head_prob = {pair: prob[r].numpy() for pair, r in row.items()}  # (T, P) each
        best = prob.max(1).values
        pidx = {p: i for i, p in enumerate(cfg.predicates)}
        for (s, p, o), _ in cands.items():
            r, j = row[(s, o)], pidx[pred_map[p]]
            if w_head > 0:
                head[(s, p, o)] = float(best[r, j])
            if span_source == "head":
                head_on[(s, p, o)] = relation_frames(prob[r, :, j].numpy(), cfg.relation_threshold, cfg.min_span)

    objects = []
    for k in range(N):
        masks = {t: assign[t] == k for t in range(T) if (assign[t] == k).any()}
        if masks:
            objects.append(ObjectTube(k + 1, labels[k], masks, obj_scores[k]))
    kept = {o.id - 1 for o in objects}
    merged: dict[tuple[int, str, int], tuple[float, list]] = {}
    for (s, p, o), (sc, spans) in cands.items():
        if s not in kept or o not in kept:
            continue
        if (s, p, o) in head_on:
            spans = frames_to_spans(head_on[(s, p, o)])
        if (s, p, o) in head:
            sc = sc ** (1 - w_head) * max(head[(s, p, o)], 1e-6) ** w_head
        sc *= float(np.sqrt(obj_scores[s] * obj_scores[o]))
        key = (s, pred_map[p], o)
        if key not in merged or merged[key][0] < sc:
            merged[key] = (sc, spans)
    if dense:
        t0 = time.perf_counter()
        merged = dense_relations(
            llm, cache, first, scene, merged, head_prob, kept, K, obj_scores, cfg, name_ids, tubes, w_head
        )
        stats.turn2_s += time.perf_counter() - t0
    if fill:
        merged = complete_relations(
            merged,
            head_prob,
            kept,
            obj_scores,
            cfg.predicates,
            "joint" if complete == "graph" else complete,
            w_head if w_head > 0 else 0.5,
            lcfg.floor,
            cfg.relation_threshold,
            cfg.min_span,
        )
    rels = sorted(merged.items(), key=lambda kv: -kv[1][0])[: cfg.max_relations]
    relations = [Relation4D(s + 1, o + 1, p, merge_spans(sp), sc) for (s, p, o), (sc, sp) in rels]
    return SceneGraph4D(video_id, T, objects, relations, counts)
