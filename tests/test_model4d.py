"""The 4D model: encoder shapes, matching, overfitting a clip, save/load, windowed inference and bad input."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from spade4d.data.psg4d import PSG4DPointCloud
from spade4d.evaluation import Evaluator4D
from spade4d.inference.infer_4d import predict_sequence
from spade4d.models.encoder import SparseEncoder
from spade4d.models.losses import LossWeights, hungarian_match
from spade4d.models.model4d import Model4D, Model4DConfig, ModelError
from spade4d.models.query_decoder import cross_attention
from spade4d.structures import PointSequence
from spade4d.training.clips import Augment, ClipError, clip_loss, clip_targets, load_frames, sequence_center
from spade4d.training.loop import sum_losses

TINY = dict(voxel_size=0.15, channels=(8, 16), dim=16, num_queries=6, decoder_layers=1, heads=2, ffn_dim=32, window=3)


@pytest.fixture(scope="module")
def vocab(synthetic_root):
    d = json.loads((synthetic_root / "dataset.json").read_text())
    return d["thing_classes"] + d["stuff_classes"], d["predicates"]


@pytest.fixture(scope="module")
def train_set(synthetic_root):
    return PSG4DPointCloud(synthetic_root / "psg4d_pc", "train")


def tiny_model(vocab, seed=0, **kw):
    torch.manual_seed(seed)
    return Model4D(Model4DConfig(classes=vocab[0], predicates=vocab[1], **{**TINY, **kw}))


def test_encoder_gives_one_feature_per_point():
    enc = SparseEncoder(in_channels=6, channels=(8, 16, 24), out_dim=12)
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(500, 3, generator=g) * 2
    rgb = torch.rand(500, 3, generator=g)
    frame = torch.randint(0, 3, (500,), generator=g)
    vox, points = enc.encode_points(xyz, rgb, frame, 0.1, torch.zeros(3))
    some = torch.tensor([7, 3, 499, 3])
    picked = points.select(some)  # computed for these points only, before all() exists
    pts = points.all()
    assert len(points) == 500 and pts.shape == (500, 12) and vox.feats.shape == (len(vox.coords), 12)
    assert set(vox.coords[:, 0].tolist()) == {0, 1, 2}
    assert torch.isfinite(pts).all()
    torch.testing.assert_close(picked, pts[some])
    assert torch.equal(points.select(some), pts[some])  # after all(): read from it
    # points sharing a voxel differ only through the point MLP of colour and in-voxel offset
    same = torch.nonzero(points.voxel_index[:, None] == points.voxel_index[None, :])
    i, j = same[same[:, 0] < same[:, 1]][0].tolist()
    torch.testing.assert_close(
        pts[i] - pts[j], enc.point_mlp(points.local[i]) - enc.point_mlp(points.local[j]), atol=1e-6, rtol=1e-5
    )
    # a loss on a few points sends no gradient through the point MLP of the others
    enc.zero_grad()
    local = points.local.clone().requires_grad_()
    sub = type(points)(points.voxel_feats, points.voxel_index, local, enc.point_mlp)
    sub.select(some).sum().backward()
    touched = torch.nonzero(local.grad.abs().sum(1)).squeeze(1)
    assert set(touched.tolist()) <= set(some.tolist())


def test_hungarian_match_finds_the_cheap_assignment():
    prob = torch.full((4, 3), 1 / 3)
    mask_cost = torch.tensor([[5.0, 0.1], [0.2, 5.0], [5.0, 5.0], [5.0, 5.0]])
    q, g = hungarian_match(prob, torch.tensor([0, 1]), mask_cost, LossWeights())
    assert dict(zip(g.tolist(), q.tolist())) == {0: 1, 1: 0}
    # the matching costs are not the loss weights: switching the class and mask losses off changes nothing
    prob = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]])
    mask_cost = torch.tensor([[0.5, 0.6], [0.6, 0.5], [0.55, 0.55], [0.55, 0.55]])
    q0, g0 = hungarian_match(prob, torch.tensor([0, 1]), mask_cost, LossWeights())
    q1, g1 = hungarian_match(prob, torch.tensor([0, 1]), mask_cost, LossWeights(cls=0.0, bce=0.0, dice=0.0))
    assert dict(zip(g0.tolist(), q0.tolist())) == dict(zip(g1.tolist(), q1.tolist())) == {0: 0, 1: 1}
    q2, g2 = hungarian_match(prob, torch.tensor([0, 1]), mask_cost, LossWeights(match_cls=0.0))
    assert len(q2) == 2  # by mask cost alone, still a full assignment


def test_losses_decrease_when_overfitting_one_clip(vocab, train_set):
    model = tiny_model(vocab)
    seq, graph = train_set[0]
    frames = load_frames(seq, list(range(seq.num_frames)))
    targets = clip_targets(graph, frames, model.config.classes, model.config.predicates)
    center = sequence_center(seq)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = last = None
    for _ in range(40):
        terms = clip_loss(
            model, frames, targets, center, points_per_frame=512, generator=torch.Generator().manual_seed(0)
        )
        assert set(terms) == {"loss_sem", "loss_cls", "loss_bce", "loss_dice", "loss_rel", "matched"}
        loss, parts = sum_losses(terms)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or parts
        last = parts
    assert last["loss"] < 0.6 * first["loss"]
    assert last["loss_dice"] < first["loss_dice"] and last["loss_cls"] < first["loss_cls"]
    assert last["loss_rel"] < first["loss_rel"]


def test_save_load_round_trip_gives_identical_outputs(vocab, train_set, tmp_path):
    model = tiny_model(vocab).eval()
    seq, graph = train_set[1]
    path = model.save_pretrained(tmp_path / "m")
    again = Model4D.from_pretrained(path).eval()
    assert again.config.to_dict() == model.config.to_dict()
    frames = load_frames(seq, [0, 1, 2])
    c = sequence_center(seq)
    with torch.no_grad():
        a = model.forward_window(frames, c, model.init_memory())
        b = again.forward_window(frames, c, again.init_memory())
    assert torch.equal(a.class_logits, b.class_logits) and torch.equal(a.mask_logits(1), b.mask_logits(1))
    with pytest.raises(ModelError, match="not a spade4d model folder"):
        Model4D.from_pretrained(tmp_path)


def test_inference_output_is_a_valid_graph_over_windows(vocab, synthetic_root, train_set):
    model = tiny_model(vocab)
    seq, graph = train_set[0]
    pred = predict_sequence(model, seq, graph.video_id, window=2, object_threshold=0.0)
    assert pred.num_frames == seq.num_frames and pred.num_points == [int(c) for c in seq.counts]
    for o in pred.objects:  # tubes: one object per query over all windows, masks disjoint per frame
        assert o.label in vocab[0] and 0 <= o.score <= 1
        # the name distribution it was named by (the 2D core's proposals mix theirs in)
        assert o.class_probs.shape == (len(vocab[0]),) and vocab[0][int(o.class_probs.argmax())] == o.label
        assert 0 < o.class_probs.sum() <= 1 + 1e-5  # the query's share of no-object left out
    for t in range(seq.num_frames):
        total = sum(o.mask(t, int(seq.counts[t])).astype(int) for o in pred.objects)
        assert np.all(np.asarray(total) <= 1)
    ids = {o.id for o in pred.objects}
    for r in pred.relations:
        assert r.subject in ids and r.object in ids and r.subject != r.object
        assert all(0 <= s <= e < seq.num_frames for s, e in r.spans)
    Evaluator4D().process(graph, pred)  # the evaluator accepts it
    # the window size changes nothing about the format; a window longer than the sequence works too
    long = predict_sequence(model, seq, graph.video_id, window=100, object_threshold=0.0)
    assert long.num_frames == seq.num_frames


def test_bad_input_empty_single_point_and_nan_frames(vocab):
    model = tiny_model(vocab)
    rng = np.random.default_rng(0)
    xyz = [
        rng.random((50, 3)).astype(np.float32),
        np.zeros((0, 3), np.float32),
        np.ones((1, 3), np.float32),
        rng.random((40, 3)).astype(np.float32),
    ]
    xyz[3][:5] = np.nan
    rgb = [np.full((len(x), 3), 0.5, np.float32) for x in xyz]
    seq = PointSequence.from_frames(xyz, rgb)
    with pytest.warns(UserWarning, match="dropped 5 points"):
        pred = predict_sequence(model, seq, "odd", window=2, object_threshold=0.0)
    assert pred.num_points == [50, 0, 1, 40]
    for o in pred.objects:
        m = o.mask(3, 40)
        assert not m[:5].any()  # NaN points belong to no object
    # a sequence much longer than the training clips runs window by window
    long = PointSequence.from_frames([xyz[0]] * 11, [rgb[0]] * 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert predict_sequence(model, long, "long", window=4).num_frames == 11


def test_unknown_class_name_is_a_clear_error(vocab, train_set):
    seq, graph = train_set[0]
    frames = load_frames(seq, [0, 1])
    with pytest.raises(ClipError, match="not in the model's vocabulary"):
        clip_targets(graph, frames, ["unicorn"], vocab[1])
    with pytest.raises(ModelError, match="unique"):
        Model4DConfig(classes=["a", "a"], predicates=["on"])


def test_augmentation_is_a_similarity_about_the_centre_with_bounded_colour(train_set):
    seq, graph = train_set[0]
    frames = load_frames(seq, [0, 1, 2])
    center = sequence_center(seq)
    aug = Augment()
    for seed in range(6):
        out = aug(frames, center, np.random.default_rng(seed))
        a, b = frames.xyz - center, out.xyz - center
        # one map for every frame: pairwise distances scale by one factor within the range, heights only scale
        d0, d1 = torch.cdist(a[:200], a[:200]), torch.cdist(b[:200], b[:200])
        ratio = d1[d0 > 0.1] / d0[d0 > 0.1]
        assert 0.9 - 1e-4 <= ratio.min() and ratio.max() <= 1.1 + 1e-4 and ratio.max() - ratio.min() < 1e-3
        torch.testing.assert_close(b[:, 2] / ratio.mean(), a[:, 2], atol=1e-3, rtol=1e-3)
        assert out.rgb.min() >= 0 and out.rgb.max() <= 1 and (out.rgb - frames.rgb).abs().max() < 0.11
        assert out.frame is frames.frame and out.keep is frames.keep  # labels, frames, kept points untouched
    # the same draw gives the same clip (exact resume); different draws differ
    one, two = aug(frames, center, np.random.default_rng(3)), aug(frames, center, np.random.default_rng(3))
    assert torch.equal(one.xyz, two.xyz) and not torch.equal(one.xyz, aug(frames, center, np.random.default_rng(4)).xyz)
    # y-up data rotates about y; nothing on and everything off is the identity
    m = Augment(up_axis=1, flip=False, scale=(1, 1)).matrix(np.random.default_rng(0))
    assert np.allclose(m[1], [0, 1, 0]) and np.allclose(m @ m.T, np.eye(3))
    assert np.allclose(Augment(rotate=0, flip=False, scale=(1, 1)).matrix(np.random.default_rng(0)), np.eye(3))
    mirrored = [np.linalg.det(aug.matrix(np.random.default_rng(s))) < 0 for s in range(40)]
    assert 5 < sum(mirrored) < 35
    with pytest.raises(ValueError, match="up_axis"):
        Augment(up_axis=3)


# --- BatchNorm recalibration ----------------------------------------------------------------------------------
def test_batchnorm_recalibration_averages_the_batch_statistics_of_every_inference_window(vocab, train_set):
    from spade4d.training.batchnorm import batchnorm_layers, recalibrate_batchnorm

    model = tiny_model(vocab)
    stem = model.encoder.stem_bn
    seen = []  # the stem BN's input in every window, read as inference reads it
    hook = stem.register_forward_hook(lambda m, args, out: seen.append(args[0].feats.detach().clone()))
    model.train()
    with torch.no_grad():
        for i in range(len(train_set)):
            seq, g = train_set[i]
            for a in range(0, seq.num_frames, TINY["window"]):
                fr = load_frames(seq, list(range(a, min(a + TINY["window"], seq.num_frames))), g.video_id)
                model.forward_window(fr, sequence_center(seq), model.init_memory())
    hook.remove()
    for m in batchnorm_layers(model):  # whatever was there before must not matter
        m.running_mean.fill_(7.0)
        m.running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    n = recalibrate_batchnorm(model, train_set, max_windows=None, progress=False)
    assert n == len(seen) == sum(-(-train_set.num_frames(i) // TINY["window"]) for i in range(len(train_set)))
    torch.testing.assert_close(stem.running_mean, torch.stack([x.mean(0) for x in seen]).mean(0))
    torch.testing.assert_close(stem.running_var, torch.stack([x.var(0) for x in seen]).mean(0))
    assert all(m.momentum == 0.1 and int(m.num_batches_tracked) == n for m in batchnorm_layers(model))
    assert not model.training
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())  # statistics only
    # thinned to a budget: evenly spread windows, the same ones every time
    a, b = tiny_model(vocab), tiny_model(vocab)
    assert recalibrate_batchnorm(a, train_set, max_windows=3, progress=False) == 3
    recalibrate_batchnorm(b, train_set, max_windows=3, progress=False)
    torch.testing.assert_close(a.encoder.stem_bn.running_var, b.encoder.stem_bn.running_var, rtol=0, atol=0)
    assert not torch.allclose(a.encoder.stem_bn.running_var, stem.running_var)


def test_batchnorm_recalibration_that_fails_midway_leaves_the_statistics_as_they_were(vocab, train_set):
    from spade4d.training.batchnorm import batchnorm_layers, recalibrate_batchnorm

    class Broken:  # the second sequence cannot be read
        def __len__(self):
            return len(train_set)

        def num_frames(self, i):
            return train_set.num_frames(i)

        def __getitem__(self, i):
            if i == 1:
                raise OSError("sequence 1: unreadable")
            return train_set[i]

    model = tiny_model(vocab)
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in batchnorm_layers(model)]
    with pytest.raises(OSError, match="unreadable"):
        recalibrate_batchnorm(model, Broken(), max_windows=None, progress=False)
    for m, (mean, var) in zip(batchnorm_layers(model), before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var) and m.momentum == 0.1


def test_infer_device_option_picks_the_gpu_only_when_there_is_one():
    from spade4d.cli_types import device as _device

    assert _device("cpu") == torch.device("cpu")
    assert _device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device gpu0"):
        _device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            _device("cuda:0")


@pytest.mark.parametrize("per_head_mask", [False, True])
def test_cross_attention_equals_multihead_attention(per_head_mask):
    """The decoders' cross-attention (keys never projected) against nn.MultiheadAttention on the same
    parameters: outputs and every gradient, with padding, a masked-attention mask and separate keys/values."""
    torch.manual_seed(0)
    B, Q, M, D, H = 3, 5, 40, 16, 4
    mha = nn.MultiheadAttention(D, H, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_bias.normal_()  # non-zero biases: the key bias must cancel, the value bias must carry
    x, k, v = (torch.randn(B, n, D, dtype=torch.float64, requires_grad=True) for n in (Q, M, M))
    pad = torch.rand(B, M) < 0.2
    pad[:, 0] = False
    mask = torch.rand(B * H if per_head_mask else B, Q, M) < 0.5
    mask[:, :, 0] = False  # one key always visible, as the null key is in the decoders
    ref, _ = mha(x, k, v, key_padding_mask=pad, attn_mask=mask if per_head_mask else mask.repeat_interleave(H, 0))
    grads_ref = torch.autograd.grad(ref.square().sum(), [x, k, v, *mha.parameters()])
    out = cross_attention(mha, x, k, v, pad, mask)
    grads = torch.autograd.grad(out.square().sum(), [x, k, v, *mha.parameters()])
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r)


def test_cross_attention_falls_back_to_the_module_where_the_shortcut_does_not_apply():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, batch_first=True, bias=False).double()
    x, k = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 10, 8, dtype=torch.float64)
    mask = torch.rand(2, 3, 10) < 0.5
    mask[:, :, 0] = False
    ref, _ = mha(x, k, k, attn_mask=mask.repeat_interleave(2, 0))
    torch.testing.assert_close(cross_attention(mha, x, k, k, None, mask), ref)


def test_deep_supervision_trains_the_earlier_decoder_layers_and_leaves_inference_alone(vocab, train_set):
    from spade4d.models.losses import LossWeights
    from spade4d.training.clips import run_windows

    model = tiny_model(vocab, decoder_layers=3)
    seq, graph = train_set[0]
    # one window (3 frames): across windows the last layer's states reach the next window through the memory
    frames = load_frames(seq, [0, 1, 2])
    targets = clip_targets(graph, frames, model.config.classes, model.config.predicates)
    center = sequence_center(seq)

    def terms(deep):
        return clip_loss(model, frames, targets, center, LossWeights(deep=deep), 256, torch.Generator().manual_seed(0))

    plain, deep = terms(0.0), terms(2.0)
    assert "loss_deep" not in plain and set(deep) - set(plain) == {"loss_deep"}
    for k in plain:  # the last layer's terms are the same with or without deep supervision
        torch.testing.assert_close(torch.as_tensor(deep[k]), torch.as_tensor(plain[k]), msg=k)
    torch.testing.assert_close(terms(1.0)["loss_deep"] * 2, deep["loss_deep"])  # linear in its weight
    model.zero_grad()
    deep["loss_deep"].backward()
    grads = [sum(float(p.grad.abs().sum()) for p in layer.parameters() if p.grad is not None)
             for layer in model.decoder.layers]  # fmt: skip
    assert grads[0] > 0 and grads[1] > 0  # the two earlier layers are supervised
    assert grads[2] == 0  # the last layer's output is not in the deep term
    # a one-layer decoder has nothing to supervise; inference computes no intermediate predictions
    one = tiny_model(vocab)
    assert float(clip_loss(one, frames, targets, center, LossWeights(deep=1.0), 256)["loss_deep"]) == 0.0
    model.eval()
    with torch.no_grad():
        (_, _, out), *_ = run_windows(model, frames, center)
    assert out.layers is None and model.layer_predictions(out) == []
