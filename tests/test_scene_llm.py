"""SceneLLM: grammar-constrained answers always parse, the parser refuses malformed text, <obj> states train the
LoRA through the mask loss, KV-cache reuse changes no token, adapters round-trip, the chain runs end to end."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spade4d.data.psg4d import PSG4DPointCloud
from spade4d.inference.chained import ChainStats, chained_predict, complete_relations, score_continuations
from spade4d.inference.grammar import (
    GrammarLogitsProcessor,
    ObjectListGrammar,
    ParseError,
    RelationGrammar,
    SingleTurnGrammar,
    parse_objects,
    parse_relations,
    render,
)
from spade4d.models.model4d import Model4D, Model4DConfig
from spade4d.models.scene_llm import SceneLLM, SceneLLMConfig, SceneLLMError, load_tokenizer
from spade4d.training.clips import clip_loss, clip_targets, load_frames, sequence_center
from spade4d.training.loop import sum_losses

TINY4D = dict(voxel_size=0.15, channels=(8, 16), dim=16, num_queries=5, decoder_layers=1, heads=2, ffn_dim=32, window=3)
TINY_LLM = {
    "llm": "tiny",
    "tiny": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    },
    "max_relations": 3,
    "max_objects": 4,
    "samples": 1,
}


@pytest.fixture(scope="module")
def llm():
    torch.manual_seed(0)
    return SceneLLM(SceneLLMConfig.from_dict(TINY_LLM), 16, num_tubes=6)


@pytest.fixture(scope="module")
def toks(llm):
    return llm.tokens


def _decode_random(grammar, seed, limit=2000):
    g = torch.Generator().manual_seed(seed)
    proc = GrammarLogitsProcessor(grammar)
    out = []
    for _ in range(limit):
        logits = torch.randn(grammar.tokens.size, generator=g) * 3
        masked = proc(None, logits[None])[0]
        tok = int(torch.multinomial(torch.softmax(masked, -1), 1, generator=g))
        grammar.advance(tok)
        out.append(tok)
        if grammar.done:
            return out
    raise AssertionError("the grammar did not finish")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n_obj=st.integers(2, 5), T=st.integers(1, 30))
def test_grammar_output_always_parses_and_stays_in_range(llm, toks, seed, n_obj, T):
    names = ["person", "chair", "cup", "traffic light", "dog"][:n_obj]
    refs = [llm.ref_tokens(toks.encode_name(llm.tokenizer, n), i, 5 - i) for i, n in enumerate(names)]
    ref_text = [llm.ref_text(n, i) for i, n in enumerate(names)]
    out = _decode_random(RelationGrammar(toks, refs, T, max_relations=3, max_pred_tokens=3), seed)
    rels = parse_relations(render(llm.tokenizer, out, llm.obj_id), ref_text, T)
    assert len(rels) <= 3
    for r in rels:
        assert r.subject != r.object and 0 <= r.subject < n_obj and 0 <= r.object < n_obj
        assert all(0 <= a <= b < T for a, b in r.spans)
        assert all(r.spans[i][0] > r.spans[i - 1][1] for i in range(1, len(r.spans)))
    g1 = ObjectListGrammar(toks, 4, 3)
    objs = parse_objects(render(llm.tokenizer, _decode_random(g1, seed), llm.obj_id))
    assert len(objs) <= 4 and all(1 <= len(n.split()) for n in objs)
    # one pointer per object, at an existing tube, in increasing order
    assert len(g1.tubes) == len(objs) and all(0 <= q < 6 for q in g1.tubes) and g1.tubes == sorted(set(g1.tubes))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), T=st.integers(1, 12))
def test_single_turn_grammar_parses_both_parts(llm, toks, seed, T):
    g = SingleTurnGrammar(
        toks,
        lambda ns, ts: [llm.ref_tokens(n, i, q) for i, (n, q) in enumerate(zip(ns, ts))],
        T,
        3,
        max_name_tokens=2,
        max_relations=2,
    )
    out = _decode_random(g, seed)
    split = out.index(toks.period) + 1
    names = parse_objects(render(llm.tokenizer, out[:split], llm.obj_id))
    refs = [llm.ref_text(n, i) for i, n in enumerate(names)]
    rels = parse_relations(render(llm.tokenizer, out[split:], llm.obj_id), refs, T) if len(names) >= 2 else []
    assert all(r.subject != r.object for r in rels)


def test_teacher_forced_answers_are_in_the_grammar_and_parse_back(llm, toks):
    names = ["person", "chair", "traffic light"]
    rels = [(0, "sitting on", 1, [(2, 5), (7, 9)]), (2, "in front of", 0, [(0, 11)])]
    tubes = [0, 2, 5]
    ans1, name_ids = llm.object_answer(names, tubes)
    ans2 = llm.relation_answer(name_ids, tubes, rels)
    g1 = ObjectListGrammar(toks, 4, 4)
    for t in ans1:
        assert g1.allowed()[t]
        g1.advance(t)
    assert g1.done and g1.tubes == tubes
    g2 = RelationGrammar(toks, [llm.ref_tokens(n, i, q) for i, (n, q) in enumerate(zip(name_ids, tubes))], 12)
    for t in ans2:
        assert g2.allowed()[t]
        g2.advance(t)
    assert g2.done
    assert parse_objects(render(llm.tokenizer, ans1, llm.obj_id)) == names
    back = parse_relations(render(llm.tokenizer, ans2, llm.obj_id), [f"{n}#{i}" for i, n in enumerate(names)], 12)
    assert [(r.subject, r.predicate, r.object, r.spans) for r in back] == rels


def test_shuffled_relation_order_is_a_permutation_drawn_from_the_step():
    torch.manual_seed(0)
    shuffled = SceneLLM(
        SceneLLMConfig.from_dict({**TINY_LLM, "relation_order": "shuffled", "max_relations": 8}), 16, num_tubes=6
    )
    torch.manual_seed(0)
    canonical = SceneLLM(SceneLLMConfig.from_dict({**TINY_LLM, "max_relations": 8}), 16, num_tubes=6)
    names, tubes = ["person", "chair", "table", "cup"], [0, 1, 3, 4]
    rels = [
        (s, p, o, [(0, 3)]) for s, p, o in [(3, "on", 2), (0, "sitting on", 1), (1, "beside", 2), (0, "holding", 3)]
    ]
    canon = canonical.serialise(4, names, tubes, rels)
    draws = [shuffled.serialise(4, names, tubes, rels, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    again = shuffled.serialise(4, names, tubes, rels, generator=torch.Generator().manual_seed(0))
    assert again.ids == draws[0].ids  # the order is the step's draw: a resumed run sees the same answers
    refs = [f"{n}#{i}" for i, n in enumerate(names)]

    def relations(ser):  # turn 2's answer: the second run of labelled tokens, without the end of the turn
        lab = np.array(ser.labels) != -100
        start = int(np.flatnonzero(lab[1:] & ~lab[:-1])[-1]) + 1
        ans = ser.ids[start : start + ser.ids[start:].index(canonical.tokens.period) + 1]
        text = render(canonical.tokenizer, ans, canonical.obj_id)
        return [(r.subject, r.predicate, r.object) for r in parse_relations(text, refs, 4)]

    base = relations(canon)
    assert base == sorted(base, key=lambda r: (r[0], r[2], r[1])) and len(base) == 4
    orders = [relations(d) for d in draws]
    assert all(sorted(o) == sorted(base) for o in orders)  # the same relations, every time
    assert len({tuple(o) for o in orders}) > 1  # in orders that change with the draw
    assert all(len(d.ids) == len(canon.ids) and d.obj_positions == canon.obj_positions for d in draws)
    with pytest.raises(SceneLLMError, match="relation_order"):
        SceneLLMConfig(llm="tiny", relation_order="random")
    with pytest.raises(SceneLLMError, match="scores"):
        SceneLLMConfig(llm="tiny", scores="sparse")


@torch.no_grad()
def test_dense_scores_equal_token_by_token_teacher_forcing(llm):
    torch.manual_seed(1)
    scene = torch.randn(llm.config.num_tubes + 1, llm.hidden_size)
    prompt = llm.prompt_ids(8)
    hidden, cache = llm.run(llm.embed(prompt, scene))
    keys = llm.pointer_keys(scene)
    first = llm.logits(hidden[-1], keys)
    t = llm.tokens
    name = t.encode_name(llm.tokenizer, "person")
    conts = [
        llm.ref_tokens(name, 0, 2) + t.encode_name(llm.tokenizer, "sitting on") + llm.ref_tokens(name, 1, 4),
        llm.ref_tokens(name, 1, 4) + t.encode_name(llm.tokenizer, "on") + llm.ref_tokens(name, 0, 2),
        [t.period],
    ]
    length = cache.get_seq_length()
    got = score_continuations(llm, cache, first, scene, conts, chunk=2)
    assert cache.get_seq_length() == length  # the question's cache is left for the caller
    import copy

    for c, g in zip(conts, got):
        lp, logits, cc = [], first, copy.deepcopy(cache)
        for tok in c:
            lp.append(float(torch.log_softmax(logits.float(), -1)[tok]))
            h, cc = llm.run(llm.embed([tok], scene), cc)
            logits = llm.logits(h[-1], keys)
        assert g == pytest.approx(float(np.exp(np.mean(lp))), rel=1e-4)
    assert 0 < got.min() and got.max() <= 1


def test_turn_one_learns_to_read_the_scene_through_tube_pointers():
    """Two scenes with different tubes and different objects: after a short teacher-forced fit, greedy turn 1
    names each scene's own objects at its own tubes (the LLM reads the scene tokens, not a memorised list)."""
    from spade4d.inference.chained import decode

    torch.manual_seed(0)
    llm = SceneLLM(SceneLLMConfig.from_dict({**TINY_LLM, "train_base": True}), 16, num_tubes=6)
    scenes = [
        (torch.randn(6, 16), ["person", "chair"], [1, 3]),
        (torch.randn(6, 16), ["cup", "table", "dog"], [0, 4, 5]),
    ]
    opt = torch.optim.Adam([p for p in llm.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(120):
        loss = sum(llm.teacher_forced(x, n, q, [], 4)[0] for x, n, q in scenes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for x, names, tubes in scenes:
            scene = llm.scene_tokens(x)
            hidden, cache = llm.run(llm.embed(llm.prompt_ids(4), scene))
            g = ObjectListGrammar(llm.tokens, 4, 4)
            d, _ = decode(llm, g, llm.logits(hidden[-1], llm.pointer_keys(scene)), cache, 64, scene=scene)
            assert parse_objects(render(llm.tokenizer, d.tokens, llm.obj_id)) == names and g.tubes == tubes
            # a pointer, fed back, is its tube's scene token
            torch.testing.assert_close(llm.embed([llm.pointer(tubes[0])], scene)[0, 0], scene[tubes[0]])


def test_grammar_refuses_out_of_range_and_self_relations(llm, toks):
    refs = [llm.ref_tokens(toks.encode_name(llm.tokenizer, n), i, i) for i, n in enumerate(["cup", "table"])]
    g = RelationGrammar(toks, refs, 5)
    for t in refs[0] + toks.encode_name(llm.tokenizer, "on"):
        g.advance(t)
    assert not g.allowed()[refs[0][0]] and g.allowed()[refs[1][0]]  # cup#0 cannot be its own object
    for t in refs[1] + [toks.lbracket]:
        g.advance(t)
    assert g.allowed()[toks.digits[4]] and not g.allowed()[toks.digits[5]]  # frames 0..4
    g.advance(toks.digits[3])
    g.advance(toks.dash)
    assert not g.allowed()[toks.digits[2]] and g.allowed()[toks.digits[3]]  # the end is not before the start


@pytest.mark.parametrize(
    "text, refs, match",
    [
        ("person <obj>, chair <obj>", None, "must end with '.'"),
        ("person <obj>, Chair <obj>.", None, "item 1"),
        ("person, chair <obj>.", None, "item 0"),
        ("person#0 on chair#1 [0-3].", ["person#0", "chair#1"], None),
        ("person#0 on chair#1 [0-9].", ["person#0", "chair#1"], "outside frames 0-4"),
        ("person#0 on chair#1 [3-1].", ["person#0", "chair#1"], "reversed"),
        ("person#0 on dog#5 [0-1].", ["person#0", "chair#1"], "known object"),
        ("person#0 on person#0 [0-1].", ["person#0", "chair#1"], "same object"),
        ("person#0 on chair#1.", ["person#0", "chair#1"], "relation 0"),
        ("person#0 on chair#1 [0-1]; person#0 On chair#1 [1-2].", ["person#0", "chair#1"], "relation 1"),
        ("person#0 on chair#1 [0to1].", ["person#0", "chair#1"], "is not 'a-b'"),
    ],
)
def test_parser_rejects_malformed_text_with_a_clear_error(text, refs, match):
    if match is None:
        assert parse_relations(text, refs, 5)[0].spans == [(0, 3)]
        return
    with pytest.raises(ParseError, match=match):
        parse_objects(text) if refs is None else parse_relations(text, refs, 5)


def _model(clip, **llm):
    torch.manual_seed(0)
    classes, predicates, _, _ = clip
    return Model4D(Model4DConfig(classes=classes, predicates=predicates, llm={**TINY_LLM, **llm}, **TINY4D))


def test_mask_loss_of_obj_tokens_reaches_the_lora_weights(clip):
    model = _model(clip)
    _, _, seq, graph = clip
    frames = load_frames(seq, list(range(seq.num_frames)), graph.video_id)
    targets = clip_targets(graph, frames, model.config.classes, model.config.predicates)
    from spade4d.models.losses import LossWeights

    only_llm_mask = LossWeights(cls=0, bce=0, dice=0, relation=0, semantic=0, llm=0, llm_mask=1)
    loss, parts = sum_losses(clip_loss(model, frames, targets, sequence_center(seq), only_llm_mask))
    assert parts["loss_llm_mask"] > 0 and parts["loss_cls"] == 0.0
    loss.backward()
    lora = {n: p for n, p in model.llm.named_parameters() if "lora_B" in n}
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())
    frozen = [p for n, p in model.llm.lm.named_parameters() if "lora_" not in n]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_grad_to_4d_sets_how_much_of_the_llm_losses_reaches_the_4d_model(clip, share):
    model = _model(clip, grad_to_4d=share)
    _, _, seq, graph = clip
    frames = load_frames(seq, list(range(seq.num_frames)), graph.video_id)
    targets = clip_targets(graph, frames, model.config.classes, model.config.predicates)
    from spade4d.models.losses import LossWeights

    only_llm = LossWeights(cls=0, bce=0, dice=0, relation=0, semantic=0, llm=1, llm_mask=1)
    loss, _ = sum_losses(
        clip_loss(model, frames, targets, sequence_center(seq), only_llm, generator=torch.Generator().manual_seed(0))
    )
    loss.backward()
    lora = [p for n, p in model.llm.named_parameters() if "lora_B" in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)  # the LLM learns in every case
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("llm.") and p.grad is not None}
    norm = sum(float(g.abs().sum()) for g in grads.values())
    if share == 0.0:
        assert norm == 0.0
    else:
        assert norm > 0
        model.zero_grad()
        full = _model(clip, grad_to_4d=1.0)
        loss, _ = sum_losses(
            clip_loss(full, frames, targets, sequence_center(seq), only_llm, generator=torch.Generator().manual_seed(0))
        )
        loss.backward()
        ref = dict(full.named_parameters())
        for n, g in grads.items():  # the same loss value, its gradient in the 4D model scaled by the share
            assert torch.allclose(g, share * ref[n].grad, atol=1e-6, rtol=1e-4), n
    with pytest.raises(SceneLLMError, match="grad_to_4d"):
        SceneLLMConfig(llm="tiny", grad_to_4d=1.5)


def test_kv_cache_reuse_gives_the_same_tokens(clip):
    model = _model(clip)
    _, _, seq, graph = clip
    a, b = ChainStats(), ChainStats()
    pa = chained_predict(model, seq, graph.video_id, reuse_cache=True, stats=a, rescore=0.0)
    pb = chained_predict(model, seq, graph.video_id, reuse_cache=False, stats=b, rescore=0.0)
    assert a.answers == b.answers and len(a.answers) >= 1
    assert a.prompt2_tokens < b.prompt2_tokens or a.prompt2_tokens == 0
    assert pa.to_json() == pb.to_json()
    # the output is a valid graph over the sequence
    for r in pa.relations:
        assert r.subject != r.object and all(0 <= s <= e < seq.num_frames for s, e in r.spans)


def test_graph_completion_adds_the_4d_models_own_objects(clip):
    model = _model(clip)
    _, _, seq, graph = clip
    joint = chained_predict(model, seq, graph.video_id, samples=0, complete="joint")
    model.config.object_threshold = 2.0  # no tube of the 4D model qualifies: "graph" is "joint"
    assert chained_predict(model, seq, graph.video_id, samples=0, complete="graph").to_json() == joint.to_json()
    model.config.object_threshold = 0.0  # every tube no LLM object points at joins
    full = chained_predict(model, seq, graph.video_id, samples=0, complete="graph")
    ids = {o.id for o in full.objects}
    # the 4D model's objects come after the LLM's (ids K+1...); untrained masks are weak, so only some survive
    assert max(ids) > max((o.id for o in joint.objects), default=0)
    assert all(o.label in model.config.classes for o in full.objects)
    for o in full.objects:  # each carries the name distribution its label was chosen by (the 2D core mixes in)
        assert o.class_probs.shape == (len(model.config.classes),)
        assert model.config.classes[int(o.class_probs.argmax())] == o.label
    # every point belongs to at most one object, and every relation joins two of them
    for t in range(seq.num_frames):
        cover = sum(o.masks[t].astype(int) for o in full.objects if t in o.masks)
        assert np.max(cover, initial=0) <= 1
    assert all(r.subject in ids and r.object in ids and r.subject != r.object for r in full.relations)
    with pytest.raises(ValueError, match="complete"):
        chained_predict(model, seq, graph.video_id, samples=0, complete="everything")


def test_dense_relation_scores_rank_the_heads_candidates_among_the_llms_objects(clip):
    model = _model(clip)
    _, _, seq, graph = clip
    model.config.object_threshold = 0.0
    stats = ChainStats()
    dense = chained_predict(model, seq, graph.video_id, samples=0, scores="dense", rescore=0.5, stats=stats)
    decoded = chained_predict(model, seq, graph.video_id, samples=0, rescore=0.5)
    names = stats.answers[0].split(",")
    ids = {o.id for o in dense.objects}
    assert {o.id for o in decoded.objects} == ids  # turn 1 is the same; only the relations' scores change
    assert all(r.subject in ids and r.object in ids and r.subject != r.object for r in dense.relations)
    if len(ids) >= 2:  # every kept pair gets the head's best predicates, scored by the LLM and the head
        pairs = {(r.subject, r.object) for r in dense.relations}
        assert len(pairs) == len(ids) * (len(ids) - 1) or len(dense.relations) == model.config.max_relations
        assert len(dense.relations) >= len(decoded.relations)
        scores = [r.score for r in dense.relations]
        assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
        assert all(0 <= a <= b < seq.num_frames for r in dense.relations for a, b in r.spans)
    assert names
    with pytest.raises(ValueError, match="scores"):
        chained_predict(model, seq, graph.video_id, samples=0, scores="sparse")


def test_name_rescore_sets_whose_names_the_llms_objects_take(clip, monkeypatch):
    """``name_rescore`` 1: an LLM object's closed-vocabulary label and score come from the 4D model's class heads
    for the tube it points at, whatever the LLM said; 0: the nearest vocabulary name to what it said. The objects,
    their masks and the relation scores' LLM part do not depend on it."""
    import spade4d.inference.chained as chained

    model = _model(clip)
    _, _, seq, graph = clip
    C = len(model.config.classes)

    real = chained._similarity

    def run(w, said_class):
        def fake_similarity(names, embed, text_model):  # the LLM "said" one class for every object
            if embed is not model.class_embed:
                return real(names, embed, text_model)
            sim = torch.full((len(names), C), -1.0)
            sim[:, said_class] = 1.0
            return sim

        with monkeypatch.context() as m:
            m.setattr(chained, "_similarity", fake_similarity)
            return chained_predict(model, seq, graph.video_id, samples=0, complete="joint", name_rescore=w)

    head_a, head_b = run(1.0, 0), run(1.0, C - 1)
    assert head_a.objects, "the untrained LLM listed no object"
    assert head_a.to_json() == head_b.to_json()  # what the LLM said does not matter
    said = run(0.0, C - 1)
    assert {o.label for o in said.objects} == {model.config.classes[C - 1]}
    assert [o.id for o in said.objects] == [o.id for o in head_a.objects]
    for a, b in zip(said.objects, head_a.objects):
        assert a.masks.keys() == b.masks.keys() and all(np.array_equal(a.masks[t], b.masks[t]) for t in a.masks)
    with pytest.raises(SceneLLMError, match="name_rescore"):
        SceneLLMConfig(llm="tiny", name_rescore=1.5)
    with pytest.raises(ValueError, match="name_rescore"):
        chained_predict(model, seq, graph.video_id, samples=0, name_rescore=-0.1)


def test_lora_and_model_save_load_round_trip(clip, tmp_path):
    model = _model(clip, train_base=False)
    with torch.no_grad():  # non-trivial adapters
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    _, _, seq, graph = clip
    saved = model.save_pretrained(tmp_path / "m")
    assert (saved / "scene_llm" / "lora" / "adapter_config.json").is_file()
    back = Model4D.from_pretrained(saved)
    ids = back.llm.prompt_ids(6)
    x = torch.randn(5, 16)
    with torch.no_grad():
        h1, _ = model.llm.run(model.llm.embed(ids, model.llm.scene_tokens(x)))
        h2, _ = back.llm.run(back.llm.embed(ids, back.llm.scene_tokens(x)))
    torch.testing.assert_close(h1, h2)
    with model.llm.lm.disable_adapter(), torch.no_grad():  # the adapter matters
        h0, _ = model.llm.run(model.llm.embed(ids, model.llm.scene_tokens(x)))
    assert (h0 - h1).abs().max() > 1e-4
    p1 = chained_predict(model, seq, graph.video_id)
    p2 = chained_predict(back, seq, graph.video_id)
    assert p1.to_json() == p2.to_json()


def test_tokenizer_is_cached_and_shared():
    assert load_tokenizer("tiny") is load_tokenizer("tiny") and len(load_tokenizer("tiny")) == 49152


def test_training_with_the_llm_then_cli_inference(synthetic_root, tmp_path):
    from spade4d.cli import main
    from spade4d.evaluation import Evaluator4D
    from spade4d.evaluation.predictions import load_predictions_4d
    from spade4d.training.finetune_4d import Train4DConfig, finetune_4d

    cfg = Train4DConfig(
        steps=3,
        clip_frames=3,
        points_per_frame=256,
        log_every=1,
        checkpoint_every=2,
        model=TINY4D,
        llm={**TINY_LLM, "chain": "single"},
    )
    res = finetune_4d(synthetic_root / "psg4d_pc", tmp_path / "run", cfg, progress=False)
    assert "loss_lm" in res.history[-1] and np.isfinite(res.history[-1]["loss_lm"])
    out = tmp_path / "pred.json"
    assert (
        main(
            [
                "infer",
                "--model",
                str(res.model_dir),
                "--format",
                "synthetic",
                "--root",
                str(synthetic_root),
                "--split",
                "test",
                "--out",
                str(out),
                "--quiet",
                "--use-llm",
                "--samples",
                "0",
                "--complete",
                "joint",
            ]
        )
        == 0
    )
    # without --use-llm, infer answers through the relation head: the same file as --no-llm, not the chain's
    head = ["infer", "--model", str(res.model_dir), "--format", "synthetic", "--root", str(synthetic_root), "--quiet"]
    assert main([*head, "--out", str(tmp_path / "a.json")]) == 0
    assert main([*head, "--out", str(tmp_path / "b.json"), "--no-llm"]) == 0
    a, b, chain = (load_predictions_4d(tmp_path / f) for f in ("a.json", "b.json", "pred.json"))
    assert a.keys() == b.keys() == chain.keys()
    assert all(a[v].to_json() == b[v].to_json() for v in a) and any(a[v].to_json() != chain[v].to_json() for v in a)
    ds = PSG4DPointCloud(synthetic_root / "psg4d_pc", "test")
    preds = load_predictions_4d(out)
    ev = Evaluator4D()
    for i in range(len(ds)):
        seq, gt = ds[i]
        ev.process(gt, preds[gt.video_id])
    assert set(ev.evaluate()) >= {"R@20", "mR@50"}


def test_head_completion_keeps_the_llm_relations_and_adds_the_heads_among_its_objects():
    T, preds = 6, ["on", "near", "holding"]
    llm_rels = {(0, "near", 1): (0.6, [(0, 5)]), (1, "on", 2): (0.3, [(2, 3)])}
    prob = np.zeros((T, 3), dtype=np.float32)
    prob[1:4, 2] = 0.9  # the head: 1 holds 0 on frames 1-3
    prob[:, 0] = 0.2
    head = {(1, 0): prob, (0, 1): prob.copy(), (0, 3): prob.copy()}  # object 3 is not one of the LLM's objects
    kept, scores = {0, 1, 2}, [1.0, 0.81, 1.0, 1.0]
    args = (head, kept, scores, preds)
    after = complete_relations(llm_rels, *args, "after", 0.5, 0.05, 0.5, 2, per_pair=2)
    joint = complete_relations(llm_rels, *args, "joint", 0.5, 0.05, 0.5, 2, per_pair=2)
    # the LLM's relations are kept as they were; the head adds its two best predicates per pair among kept objects
    for out in (after, joint):
        assert {k: out[k] for k in llm_rels} == llm_rels
        assert set(out) - set(llm_rels) == {(1, "holding", 0), (1, "on", 0), (0, "holding", 1), (0, "on", 1)}
        assert out[(1, "holding", 0)][1] == [(1, 3)]  # frames where the head fires
    # "after": every added relation ranks below the LLM's lowest (0.3 x head x sqrt(object scores))
    assert after[(1, "holding", 0)][0] == pytest.approx(0.3 * 0.9 * 0.9)
    assert max(sc for k, (sc, _) in after.items() if k not in llm_rels) < min(sc for sc, _ in llm_rels.values())
    # "joint": floor^(1-w) x head^w x sqrt(object scores)
    assert joint[(1, "holding", 0)][0] == pytest.approx(0.05**0.5 * 0.9**0.5 * 0.9)
    assert joint[(1, "holding", 0)][0] > joint[(1, "on", 0)][0]


def test_a_run_with_a_fully_trained_tied_llm_resumes_exactly(synthetic_root, tmp_path, caplog):
    """The tiny LLM trains in full and ties its output head to its input embedding: the checkpoint holds that
    tensor once, and resuming must accept it (it refused before) and continue exactly. accelerate's warning about
    the dropped copy is not shown (it was printed at every checkpoint)."""
    import logging
    import shutil

    from spade4d.training.finetune_4d import Train4DConfig, finetune_4d

    cfg = Train4DConfig(
        steps=4,
        clip_frames=3,
        points_per_frame=256,
        checkpoint_every=2,
        model=TINY4D,
        llm={**TINY_LLM, "train_base": True},
    )
    root = synthetic_root / "psg4d_pc"
    with caplog.at_level(logging.WARNING):
        straight = finetune_4d(root, tmp_path / "a", cfg, progress=False)
    assert not [r for r in caplog.records if "shared tensor" in r.getMessage()]
    tied = [n for n, p in straight.model.named_parameters(remove_duplicate=False) if "lm_head" in n]
    assert tied and all(p.requires_grad for n, p in straight.model.named_parameters() if n.startswith("llm.lm."))
    finetune_4d(root, tmp_path / "b", cfg, progress=False)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_000004")
    resumed = finetune_4d(root, tmp_path / "b", cfg, resume=True, progress=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_the_tied_head_filter_drops_only_the_output_heads_warning():
    import logging

    from spade4d.training.loop import TiedHeadFilter

    def record(message):
        return logging.LogRecord("accelerate.utils.other", logging.WARNING, __file__, 1, message, None, None)

    tail = " while saving. This should be OK, but check by verifying that you don't receive any warning while reloading"
    keep = TiedHeadFilter().filter
    assert not keep(record("[RANK 0] Removed shared tensor {'llm.lm.base_model.model.lm_head.weight'}" + tail))
    assert keep(record("Removed shared tensor {'llm.lm.lm_head.weight', 'decoder.proj.weight'}" + tail))
    assert keep(record("Removed shared tensor {'decoder.proj.weight'}" + tail))
    assert keep(record("something else entirely"))


def test_an_llm_that_sends_no_gradient_leaves_the_4d_models_training_bit_for_bit(synthetic_root, tmp_path):
    """With grad_to_4d 0 and the LLM clipped apart, the 4D model trains exactly as it does alone: the SceneLLM
    draws no random numbers the 4D model's clips or initialisation use."""
    from spade4d.training.finetune_4d import Train4DConfig, finetune_4d

    def run(name, llm, apart):
        cfg = Train4DConfig(steps=4, clip_frames=3, points_per_frame=256, model=TINY4D, llm=llm, clip_llm_apart=apart)
        res = finetune_4d(synthetic_root / "psg4d_pc", tmp_path / name, cfg, progress=False)
        return {k: v for k, v in res.model.state_dict().items() if not k.startswith("llm.")}, res.history

    alone, h_alone = run("alone", None, False)
    beside, h_beside = run("beside", {**TINY_LLM, "grad_to_4d": 0.0}, True)
    assert alone.keys() == beside.keys()
    for k in alone:
        assert torch.equal(alone[k], beside[k]), k
    assert [h["loss_cls"] for h in h_alone] == [h["loss_cls"] for h in h_beside] and "loss_lm" in h_beside[-1]
    # clipped together, the LLM's gradient norm shrinks the 4D model's steps: the runs part
    together, _ = run("together", {**TINY_LLM, "grad_to_4d": 0.0}, False)
    assert any(not torch.equal(alone[k], together[k]) for k in alone)


def test_a_scene_llm_of_another_language_model_trains_after_a_frozen_4d_model(synthetic_root, tmp_path):
    """``--init-from`` a model trained with the tiny LLM and ``llm`` naming another causal LM (a local folder
    here, SmolLM2 in scripts/bench_accuracy.py): the old SceneLLM is replaced, and with ``train_only`` llm. the 4D
    model's weights come out bit for bit, while the new SceneLLM's adapters train."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from spade4d.training.finetune_4d import Train4DConfig, finetune_4d

    root = synthetic_root / "psg4d_pc"
    cfg = Train4DConfig(steps=2, clip_frames=3, points_per_frame=256, model=TINY4D, llm=TINY_LLM)
    first = finetune_4d(root, tmp_path / "first", cfg, progress=False).model_dir
    tok = load_tokenizer("tiny")
    lc = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id)  # fmt: skip
    LlamaForCausalLM(lc).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    other = {**TINY_LLM, "llm": str(tmp_path / "lm"), "train_base": False}
    after = Train4DConfig(steps=3, clip_frames=3, points_per_frame=256, model=TINY4D, llm=other, train_only=("llm.",))
    res = finetune_4d(root, tmp_path / "after", after, init_from=first, progress=False)
    assert res.model.llm.config.llm == str(tmp_path / "lm")
    assert Model4D.from_pretrained(res.model_dir).config.llm["llm"] == str(tmp_path / "lm")
    before = Model4D.from_pretrained(first)
    for name, p in before.named_parameters():
        if not name.startswith("llm."):
            assert torch.equal(p, dict(res.model.named_parameters())[name]), name
    lora = {n: p for n, p in res.model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().max() > 0 for p in lora.values())  # LoRA B starts at 0: the adapters trained
