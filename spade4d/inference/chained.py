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

from spade4d.data.frames import frame_loader, sequence_center
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
from spade4d.inference.options import InferenceOptions
from spade4d.structures import ObjectTube, PointSequence, Relation4D, SceneGraph4D, frames_to_spans, merge_spans

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


def dense_relations(llm, cache, first, turn, merged, head_prob, kept, obj_scores, cfg, w):
    """Relations among the LLM's ``K = turn.K`` objects scored densely: the candidates are the relation head's
    ``dense_per_pair`` best predicates of each pair of kept objects, cut to the ``dense_top`` best by head score x
    the objects' scores, plus the relations decoded (``merged``); each gets the LLM probability of being the first
    relation of turn 2's answer (:func:`score_continuations` after the question), combined with the head as
    ``llm^(1-w) x head^w x sqrt(object scores)``, and the head's frames. Relations of other objects in ``merged``
    are kept as they are."""
    lcfg, tok = llm.config, llm.tokens
    K, name_ids, tubes = turn.K, turn.name_ids, turn.tubes
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
    p_llm = score_continuations(llm, cache, first, turn.scene, conts)
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
    load = frame_loader(seq, video_id, rgb_source if model.lift is not None else None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*dropped.*")
        steps = model.run(load, model.windows(seq.num_frames, window), sequence_center(seq))
        wins = [(times, fr.keep, out) for times, fr, out in steps]
    nf = torch.tensor([len(t) for t, _, _ in wins], dtype=torch.float32)
    tube_states = sum(o.states.mean(0) * n for (_, _, o), n in zip(wins, nf)) / nf.sum()
    return wins, tube_states


@dataclass(frozen=True)
class ChainSettings:
    """The chain's settings for one call: :class:`InferenceOptions` (already checked) over the SceneLLM's config."""

    chain: str
    closed_vocabulary: bool
    samples: int
    w_head: float  # relation-head weight in relation scores
    w_name: float  # class-head weight in object names
    spans: str
    complete: str
    scores: str
    reuse_cache: bool
    max_new_tokens: int

    @classmethod
    def resolve(cls, lcfg, opts: InferenceOptions, chain: str | None, reuse_cache: bool, max_new_tokens: int):
        w_head = lcfg.rescore if opts.rescore is None else opts.rescore
        w_name = lcfg.name_rescore if opts.name_rescore is None else opts.name_rescore
        return cls(
            chain=chain or lcfg.chain,
            closed_vocabulary=opts.closed_vocabulary,
            samples=lcfg.samples if opts.samples is None else opts.samples,
            w_head=w_head,
            w_name=w_head if w_name is None else w_name,
            spans=opts.spans or lcfg.spans,
            complete=opts.complete or lcfg.complete,
            scores=opts.scores or lcfg.scores,
            reuse_cache=reuse_cache,
            max_new_tokens=max_new_tokens,
        )


@dataclass
class ObjectTurn:
    """Turn 1's outcome: the objects the LLM listed (K of them) and the state to continue from."""

    prompt: list[int]  # the question's tokens
    answer: Decoded  # the whole answer (with a single turn: objects and relations)
    scene: torch.Tensor  # the scene tokens
    cache: object  # the KV cache after the answer
    names: list[str]  # as said
    tubes: list[int]  # the tube each object points at
    hidden: torch.Tensor  # (K, H) the LLM's hidden state at each <obj>
    scores: list[float]  # geometric mean probability of each object's tokens
    name_ids: list[list[int]]  # canonical tokens of each name
    relation_answers: list[Decoded] = field(default_factory=list)  # the single turn's relation part

    @property
    def K(self) -> int:
        return len(self.names)

    def refs(self, llm) -> list[list[int]]:
        """Each object's reference tokens (name, index, tube pointer), as turn 2 writes them."""
        return [llm.ref_tokens(n, i, q) for i, (n, q) in enumerate(zip(self.name_ids, self.tubes))]


def object_turn(llm, tube_states: torch.Tensor, T: int, cfg: ChainSettings, stats: ChainStats) -> ObjectTurn:
    """Turn 1 (or the single turn): which objects are in the scene, each a tube pointer, a name and ``<obj>``."""
    t0 = time.perf_counter()
    lcfg, tok = llm.config, llm.tokens
    prompt = llm.prompt_ids(T, cfg.chain)
    stats.prompt1_tokens += len(prompt)
    scene = llm.scene_tokens(tube_states)
    hidden, cache = llm.run(llm.embed(prompt, scene))
    logits = llm.logits(hidden[-1], llm.pointer_keys(scene))
    if cfg.chain == "single":

        def refs_of(names_ids, tubes):
            return [llm.ref_tokens(n, i, q) for i, (n, q) in enumerate(zip(names_ids, tubes))]

        grammar = SingleTurnGrammar(
            tok, refs_of, T, lcfg.max_objects, max_name_tokens=lcfg.max_name_tokens, max_relations=lcfg.max_relations
        )
    else:
        grammar = ObjectListGrammar(tok, lcfg.max_objects, lcfg.max_name_tokens)
    ans, cache = decode(llm, grammar, logits, cache, cfg.max_new_tokens, scene=scene)
    rel_decs = []
    if cfg.chain == "single":
        split = ans.tokens.index(tok.period) + 1 if tok.period in ans.tokens else len(ans.tokens)
        obj_dec = Decoded(ans.tokens[:split], ans.logprobs[:split], ans.obj_hidden, True)
        rel_decs = [Decoded(ans.tokens[split:], ans.logprobs[split:], [], ans.complete)]
        grammar = grammar.objects
    else:
        obj_dec = _truncate(ans, tok.comma, tok.period)
    stats.answers.append(render(llm.tokenizer, obj_dec.tokens, llm.obj_id, pointers=True))
    names = parse_objects(render(llm.tokenizer, obj_dec.tokens, llm.obj_id))
    K = len(names)
    dev = tube_states.device
    obj_h = torch.stack(obj_dec.obj_hidden[:K]) if K else torch.zeros((0, llm.hidden_size), device=dev)
    scores, cur = [], []  # geometric mean probability of each name's tokens and its <obj>
    for t, lp in zip(obj_dec.tokens, obj_dec.logprobs):
        if t in (tok.comma, tok.period):
            continue
        cur.append(lp)
        if t == llm.obj_id:
            scores.append(float(np.exp(np.mean(cur))))
            cur = []
    name_ids = [tok.encode_name(llm.tokenizer, n) for n in names]
    stats.turn1_s += time.perf_counter() - t0
    stats.turn1_tokens += len(ans.tokens)
    return ObjectTurn(prompt, ans, scene, cache, names, grammar.tubes[:K], obj_h, scores, name_ids, rel_decs)


def tube_naming(model, wins, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4D model's view of its tubes: (Q, C + 1) class probabilities averaged over the windows and (Q, C) names
    as :func:`~spade4d.inference.infer_4d.predict_sequence` gives them (query and dense point heads), on the CPU."""
    class_prob = torch.stack([o.class_logits.softmax(-1) for _, _, o in wins]).mean(0).float().cpu()
    sem_sum = torch.zeros(len(class_prob), len(model.config.classes), device=model.device)
    scratch = [np.full(n, -1, dtype=np.int16) for n in counts]
    for times, keep, out in wins:
        assign_window(model, out, times, keep, out.class_logits.softmax(-1), scratch, sem_sum)
    return class_prob, torch.from_numpy(tube_names(class_prob.numpy(), sem_sum)).float()


def own_objects(model, class_prob, named, pointed: list[int]) -> tuple[list[int], list[str], list[float]]:
    """The tubes the 4D model keeps as objects (name confidence x objectness >= its object threshold) that no LLM
    object points at: their query indices, labels and scores."""
    cfg = model.config
    conf, lab = named.max(1)
    own = (conf * (1 - class_prob[:, len(cfg.classes)])).sqrt()
    pointed = set(pointed)
    extra = [q for q in range(len(own)) if q not in pointed and float(own[q]) >= cfg.object_threshold]
    return extra, [cfg.classes[int(lab[q])] for q in extra], [float(own[q]) for q in extra]


def assign_points(model, wins, counts, turn: ObjectTurn, extra: list[int], scores: list[float]) -> list[np.ndarray]:
    """Per frame, the object (index into the LLM's objects, then ``extra``) of every point, -1 for none: the LLM's
    objects' masks come from their ``<obj>`` states (:meth:`SceneLLM.mask_query`), the extra tubes' from the 4D
    model; a point goes to the object maximising score x mask probability where that probability is >= 0.5."""
    llm, K, dev = model.llm, turn.K, model.device
    assign = [np.full(n, -1, dtype=np.int16) for n in counts]
    if not K and not extra:
        return assign
    score_t = torch.tensor(scores, dtype=torch.float32, device=dev)
    tubes_t = torch.tensor(turn.tubes, dtype=torch.long, device=dev)
    for times, keep, out in wins:
        emb = llm.mask_query(turn.hidden, out.states, out.mask_embed, tubes_t) if K else None  # (Tw, K, D)
        for i, t in enumerate(times):
            if len(keep[i]) == 0:
                continue
            idx = torch.nonzero(out.point_frame == i).squeeze(1)
            parts = [(emb[i] @ out.point_feats[idx].T).sigmoid()] if K else []  # (K, n)
            if extra:
                parts.append(out.mask_logits(i)[extra].sigmoid())  # (E, n)
            mp = torch.cat(parts)  # (K + E, n)
            _, k = (mp * score_t[:, None]).max(0)
            ok = mp.gather(0, k[None]).squeeze(0) >= 0.5
            assign[t][keep[i][ok.cpu().numpy()]] = k[ok].cpu().numpy().astype(np.int16)
    return assign


def relation_turn(llm, turn: ObjectTurn, T: int, cfg: ChainSettings, stats: ChainStats):
    """Turn 2 on turn 1's cache (or re-encoded): the relations among the objects, greedy then ``samples`` sampled
    answers. Appends the answers to ``turn.relation_answers``; returns the next-token logits after the question and
    the cache cropped back to the question (for dense scoring)."""
    t0 = time.perf_counter()
    lcfg, tok = llm.config, llm.tokens
    refs = [llm.ref_text(n, i) for i, n in enumerate(turn.names)]
    bridge = llm.bridge_ids(T, refs)
    base_len = len(turn.prompt) + len(turn.answer.tokens)
    if cfg.reuse_cache:
        hidden, cache = llm.run(llm.embed(bridge), turn.cache)
        stats.prompt2_tokens += len(bridge)
    else:
        full = turn.prompt + turn.answer.tokens + bridge
        hidden, cache = llm.run(llm.embed(full, turn.scene))
        stats.prompt2_tokens += len(full)
    q_len = base_len + len(bridge)
    first = llm.logits(hidden[-1], llm.pointer_keys(turn.scene))
    gen = torch.Generator().manual_seed(lcfg.seed)
    for j in range(1 + cfg.samples):
        if j:  # back to the end of the question (a negative count removes tokens in every version)
            cache.crop(-(cache.get_seq_length() - q_len))
        g2 = RelationGrammar(tok, turn.refs(llm), T, lcfg.max_relations, lcfg.max_name_tokens)
        temp = 0.0 if j == 0 else lcfg.temperature
        d, cache = decode(llm, g2, first, cache, cfg.max_new_tokens, gen, temp, turn.scene)
        turn.relation_answers.append(_truncate(d, tok.semicolon, tok.period))
        stats.turn2_tokens += len(d.tokens)
    cache.crop(-(cache.get_seq_length() - q_len))
    stats.turn2_s += time.perf_counter() - t0
    return first, cache


def parse_answers(llm, turn: ObjectTurn, T: int, video_id: str, stats: ChainStats):
    """The relations of every answer: (subject, predicate as said, object) -> (best LLM score, spans); a
    relation's score is the geometric mean probability of its subject, predicate and object tokens."""
    tok = llm.tokens
    refs = [llm.ref_text(n, i) for i, n in enumerate(turn.names)]
    cands: dict[tuple[int, str, int], tuple[float, list]] = {}
    for d in turn.relation_answers:
        stats.answers.append(render(llm.tokenizer, d.tokens, llm.obj_id, pointers=True))
        try:
            text = render(llm.tokenizer, d.tokens, llm.obj_id)
            parsed = parse_relations(text, refs, T) if turn.K >= 2 else []
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
    return cands


def closed_names(model, turn: ObjectTurn, said_predicates, class_prob, named, w_name: float):
    """Closed vocabulary: the LLM's objects' labels and scores (weighing in the 4D model's naming of the tube each
    points at with weight ``w_name``), each said predicate's nearest predicate of the vocabulary, and the name
    distributions the labels were chosen by ((K, C), None without the 4D model's naming)."""
    cfg, C = model.config, len(model.config.classes)
    labels, scores, dist = list(turn.names), list(turn.scores), None
    if turn.names and w_name > 0:
        head_p = named[turn.tubes] / named[turn.tubes].sum(1, keepdim=True).clamp_min(1e-9)  # (K, C)
        joint = head_p**w_name
        if w_name < 1:  # at 1 the LLM's words carry no weight: no need to embed them
            said = torch.softmax(_similarity(turn.names, model.class_embed, cfg.text_model) / NAME_TEMPERATURE, -1)
            joint = said ** (1 - w_name) * joint
        best = joint.argmax(1)
        labels = [cfg.classes[i] for i in best.tolist()]
        dist = (joint / joint.sum(1, keepdim=True).clamp_min(1e-12)).cpu().numpy()
        objectness = 1 - class_prob[turn.tubes][:, C]
        scores = [
            float(sc ** (1 - w_name) * (head_p[k, best[k]] * objectness[k]) ** w_name) for k, sc in enumerate(scores)
        ]
    elif turn.names:
        labels = [cfg.classes[i] for i in _nearest(turn.names, model.class_embed, cfg.text_model)]
    pred_map = {}
    if said_predicates:
        idx = _nearest(said_predicates, model.predicate_embed, cfg.text_model)
        pred_map = {p: cfg.predicates[i] for p, i in zip(said_predicates, idx)}
    return labels, scores, pred_map, dist


def head_probabilities(model, wins, pairs: list[tuple[int, int]], tubes: list[int]) -> dict:
    """(T, P) relation head probabilities of each ordered object pair (objects given by their tubes)."""
    dev = model.device
    qp = torch.tensor([(tubes[s], tubes[o]) for s, o in pairs], dtype=torch.long, device=dev)  # (R, 2)
    prob = torch.cat([model.relation_logits(out, qp).sigmoid() for _, _, out in wins], 1).float().cpu()  # (R, T, P)
    return {pair: prob[r].numpy() for r, pair in enumerate(pairs)}


def merge_relations(cands, kept, pred_map, obj_scores, head_prob, cfg: ChainSettings, model_cfg):
    """The LLM's relations between kept objects under vocabulary names, re-scored by the relation head (weight
    ``w_head``), with the head's frames when ``spans == "head"``, times the geometric mean of the object scores."""
    pidx = {p: i for i, p in enumerate(model_cfg.predicates)}
    merged: dict[tuple[int, str, int], tuple[float, list]] = {}
    for (s, p, o), (sc, spans) in cands.items():
        if s not in kept or o not in kept:
            continue
        if head_prob:
            pr = head_prob[(s, o)][:, pidx[pred_map[p]]]  # (T,)
            if cfg.spans == "head":
                spans = frames_to_spans(relation_frames(pr, model_cfg.relation_threshold, model_cfg.min_span))
            if cfg.w_head > 0:
                sc = sc ** (1 - cfg.w_head) * max(float(pr.max()), 1e-6) ** cfg.w_head
        sc *= float(np.sqrt(obj_scores[s] * obj_scores[o]))
        key = (s, pred_map[p], o)
        if key not in merged or merged[key][0] < sc:
            merged[key] = (sc, spans)
    return merged


def object_tubes(assign: list[np.ndarray], labels: list[str], scores: list[float], probs=None) -> list[ObjectTube]:
    """Object k's tube: the points ``assign`` gives it, on the frames where it has any (none: no object);
    ``probs``: per object, the name distribution its label was chosen by, or None."""
    objects = []
    probs = probs if probs is not None else [None] * len(labels)
    for k, (label, score, prob) in enumerate(zip(labels, scores, probs)):
        masks = {t: a == k for t, a in enumerate(assign) if (a == k).any()}
        if masks:
            objects.append(ObjectTube(k + 1, label, masks, score, prob))
    return objects


def _completion_settings(cfg: ChainSettings, floor: float, model_cfg) -> dict:
    """:func:`complete_relations`' settings for the chain: ``graph`` completes as ``joint``; with no head weight
    the LLM floor and the head count half each."""
    return {
        "predicates": model_cfg.predicates,
        "mode": "joint" if cfg.complete == "graph" else cfg.complete,
        "w": cfg.w_head if cfg.w_head > 0 else 0.5,
        "floor": floor,
        "threshold": model_cfg.relation_threshold,
        "min_span": model_cfg.min_span,
    }


@torch.no_grad()
def chained_predict(
    model,
    seq: PointSequence,
    video_id: str,
    options: InferenceOptions | None = None,
    *,
    reuse_cache: bool = True,
    rgb_source=None,
    max_new_tokens: int = 768,
    chain: str | None = None,
    stats: ChainStats | None = None,
    **option_values,
) -> SceneGraph4D:
    """The scene graph of ``seq`` through the chain (module docstring). ``options`` (or its fields as keywords:
    ``window``, ``samples``, ``rescore``...) are checked once by :class:`InferenceOptions`."""
    llm = model.llm
    if llm is None:
        raise ValueError("this 4D model has no SceneLLM (train it with --llm)")
    opts = options if options is not None else InferenceOptions(**option_values)
    cfg = ChainSettings.resolve(llm.config, opts, chain, reuse_cache, max_new_tokens)
    closed = cfg.closed_vocabulary
    stats = stats if stats is not None else ChainStats()
    model.eval()
    T, counts = seq.num_frames, [int(c) for c in seq.counts]
    t0 = time.perf_counter()
    wins, tube_states = run_4d(model, seq, video_id, opts.window, rgb_source)
    stats.model4d_s += time.perf_counter() - t0

    turn = object_turn(llm, tube_states, T, cfg, stats)
    t0 = time.perf_counter()
    class_prob = named = None
    if closed and (cfg.complete == "graph" or (turn.K and cfg.w_name > 0)):
        class_prob, named = tube_naming(model, wins, counts)
    extra, extra_labels, extra_scores = [], [], []
    if closed and cfg.complete == "graph":
        extra, extra_labels, extra_scores = own_objects(model, class_prob, named, turn.tubes)
    assign = assign_points(model, wins, counts, turn, extra, turn.scores[: turn.K] + extra_scores)
    stats.masks_s += time.perf_counter() - t0

    first = cache = None
    if cfg.chain != "single" and turn.K >= 2:
        first, cache = relation_turn(llm, turn, T, cfg, stats)
    cands = parse_answers(llm, turn, T, video_id, stats)
    said = sorted({k[1] for k in cands})
    labels, obj_scores, pred_map, dist = list(turn.names), list(turn.scores), {p: p for p in said}, None
    if closed:
        labels, obj_scores, pred_map, dist = closed_names(model, turn, said, class_prob, named, cfg.w_name)
    labels, obj_scores = labels[: turn.K] + extra_labels, obj_scores[: turn.K] + extra_scores
    # the name distributions behind the labels (the 2D core's proposals mix theirs in): None where not known
    n = len(labels) - len(extra)
    probs = (list(dist[:n]) if dist is not None else [None] * n) + [named[q].cpu().numpy() for q in extra]
    all_tubes, N = list(turn.tubes) + extra, turn.K + len(extra)

    fill = cfg.complete != "none" and closed and N >= 2
    dense = cfg.scores == "dense" and closed and cfg.chain != "single" and turn.K >= 2
    head_prob = {}
    if ((cfg.w_head > 0 or cfg.spans == "head") and cands and closed) or fill or dense:
        every = {(s, o) for s in range(N) for o in range(N) if s != o} if (fill or dense) else set()
        head_prob = head_probabilities(model, wins, sorted({(s, o) for s, _, o in cands} | every), all_tubes)
    objects = object_tubes(assign, labels, obj_scores, probs)
    kept = {o.id - 1 for o in objects}
    merged = merge_relations(cands, kept, pred_map, obj_scores, head_prob, cfg, model.config)
    if dense:
        t0 = time.perf_counter()
        merged = dense_relations(llm, cache, first, turn, merged, head_prob, kept, obj_scores, model.config, cfg.w_head)
        stats.turn2_s += time.perf_counter() - t0
    if fill:
        merged = complete_relations(
            merged, head_prob, kept, obj_scores, **_completion_settings(cfg, llm.config.floor, model.config)
        )
    rels = sorted(merged.items(), key=lambda kv: -kv[1][0])[: model.config.max_relations]
    relations = [Relation4D(s + 1, o + 1, p, merge_spans(sp), sc) for (s, p, o), (sc, sp) in rels]
    return SceneGraph4D(video_id, T, objects, relations, counts)
