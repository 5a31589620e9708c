"""CUDA paths, skipped without a GPU: each computation on the GPU against the same one on the CPU (sparse
convolution, the 4D model's training loss and gradients with the SceneLLM, 4D inference with the relation head
and with the chain, the 2D model's predictions), and a bf16 autocast training step.

On a GPU machine without Open3D, point ``SPADE4D_TEST_SYNTHETIC`` at a copy of the tests' dataset (see
``tests/conftest.py``)."""

import copy
import os

import pytest
import torch
from test_scene_llm import _model  # the tiny 4D model with its SceneLLM

from spade4d.inference.chained import chained_predict
from spade4d.inference.infer_4d import predict_sequence
from spade4d.models.sparse import SparseConv3d, SparseConvTranspose3d, SparseTensor, sparse_quantize
from spade4d.training.clips import clip_loss, clip_targets, load_frames, sequence_center
from spade4d.training.loop import sum_losses

# SPADE4D_TEST_DEVICE=cpu runs these comparisons CPU against CPU (a check of the tests themselves)
DEV = os.environ.get("SPADE4D_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_matmul():
    """No TF32: the GPU results are compared with the CPU's at float32 tolerance."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _on(x):
    return x.device.type == DEV


def _cloud(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * 2
    frame = torch.randint(0, 2, (n,), generator=g)
    coords, _ = sparse_quantize(xyz, frame, 0.1)
    return coords, torch.randn(len(coords), 8, generator=g)


def _net():
    torch.manual_seed(0)
    return torch.nn.ModuleList(
        [SparseConv3d(8, 16, 3, backend="torch"), SparseConv3d(16, 24, 2, stride=2, backend="torch"),
         SparseConvTranspose3d(24, 16, 2, stride=2, backend="torch")]
    )  # fmt: skip


def _run(net, coords, feats):
    x = SparseTensor(coords, feats)
    h = net[0](x)
    return net[2](net[1](h)).feats + h.feats


def test_sparse_convolutions_on_the_gpu_match_the_cpu_forward_and_backward():
    coords, feats = _cloud()
    net = _net()
    f_cpu = feats.clone().requires_grad_()
    y_cpu = _run(net, coords, f_cpu)
    y_cpu.square().mean().backward()
    gnet = copy.deepcopy(net).to(DEV)
    for p in gnet.parameters():
        p.grad = None
    f_gpu = feats.to(DEV).requires_grad_()
    y_gpu = _run(gnet, coords.to(DEV), f_gpu)
    y_gpu.square().mean().backward()
    assert _on(y_gpu)
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f_gpu.grad.cpu(), f_cpu.grad, rtol=1e-4, atol=1e-6)
    for a, b in zip(gnet.parameters(), net.parameters()):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=1e-4, atol=1e-6)


def test_sparse_convolutions_train_under_bf16_autocast():
    coords, feats = _cloud(seed=1)
    net = _net().to(DEV)
    _run(net, coords.to(DEV), feats.to(DEV)).float().square().mean().backward()
    ref = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with torch.autocast(DEV, dtype=torch.bfloat16):
        y = _run(net, coords.to(DEV), feats.to(DEV))
    assert y.dtype == torch.bfloat16
    y.float().square().mean().backward()
    for p, r in zip(net.parameters(), ref):
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
        # bf16 keeps about 3 significant digits: the gradient points the same way
        cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), r.flatten(), dim=0)
        assert cos > 0.98


def _loss(model, clip):
    _, _, seq, graph = clip
    frames = load_frames(seq, list(range(seq.num_frames)), graph.video_id)
    targets = clip_targets(graph, frames, model.config.classes, model.config.predicates)
    return sum_losses(
        clip_loss(model, frames, targets, sequence_center(seq), generator=torch.Generator().manual_seed(0))
    )


def test_clip_loss_and_gradients_on_the_gpu_match_the_cpu(clip):
    model = _model(clip)
    model.train()
    loss_c, parts_c = _loss(model, clip)
    loss_c.backward()
    gmodel = copy.deepcopy(model).to(DEV)
    gmodel.zero_grad()
    loss_g, parts_g = _loss(gmodel, clip)  # the CPU clip goes to the model's device by itself
    assert _on(loss_g) and parts_c["matched"] == parts_g["matched"] > 0
    assert parts_c["loss_lm"] > 0 and parts_c["loss_llm_mask"] > 0
    for k in parts_c:
        assert parts_g[k] == pytest.approx(parts_c[k], rel=1e-3, abs=1e-5), k
    loss_g.backward()
    named_c = dict(model.named_parameters())
    n = 0
    for name, p in gmodel.named_parameters():
        if p.grad is None:
            assert named_c[name].grad is None, name
            continue
        assert _on(p.grad) and torch.isfinite(p.grad).all(), name
        torch.testing.assert_close(p.grad.cpu(), named_c[name].grad, rtol=1e-2, atol=1e-5, msg=name)
        n += 1
    assert n > 20  # the encoder, decoder, heads and the LLM's trained parts all got gradients


def test_a_bf16_autocast_training_step_on_the_gpu(clip):
    gmodel = _model(clip).to(DEV).train()
    opt = torch.optim.AdamW(gmodel.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in gmodel.named_parameters() if p.requires_grad}
    with torch.autocast(DEV, dtype=torch.bfloat16):
        loss, parts = _loss(gmodel, clip)
    assert torch.isfinite(loss) and all(v == v for v in parts.values())
    loss.backward()
    grads = [p.grad for p in gmodel.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    opt.step()
    moved = sum(not torch.equal(p.detach(), before[n]) for n, p in gmodel.named_parameters() if n in before)
    assert moved > 20


def test_inference_on_the_gpu_gives_the_cpus_graph(clip):
    model = _model(clip).eval()
    _, _, seq, graph = clip
    cpu = predict_sequence(model, seq, graph.video_id)
    gmodel = copy.deepcopy(model).to(DEV)
    gpu = predict_sequence(gmodel, seq, graph.video_id)
    assert [(o.id, o.label) for o in gpu.objects] == [(o.id, o.label) for o in cpu.objects]
    for a, b in zip(gpu.objects, cpu.objects):
        assert a.masks.keys() == b.masks.keys() and all((a.masks[t] == b.masks[t]).all() for t in a.masks)
        assert a.score == pytest.approx(b.score, rel=1e-4)
    assert [(r.subject, r.object, r.predicate) for r in gpu.relations] == [
        (r.subject, r.object, r.predicate) for r in cpu.relations
    ]
    # the chain: objects, then relations, with the LLM on the GPU
    c_cpu = chained_predict(model, seq, graph.video_id, samples=1)
    c_gpu = chained_predict(gmodel, seq, graph.video_id, samples=1)
    assert [o.label for o in c_gpu.objects] == [o.label for o in c_cpu.objects]
    assert [(r.subject, r.object, r.predicate) for r in c_gpu.relations] == [
        (r.subject, r.object, r.predicate) for r in c_cpu.relations
    ]
    for a, b in zip(c_gpu.relations, c_cpu.relations):
        assert a.score == pytest.approx(b.score, rel=1e-3)


def test_2d_model_predicts_on_the_gpu_like_on_the_cpu():
    from test_core2d import images, tiny_2d

    model = tiny_2d().eval()
    x = images(2)
    sizes, ids = [(32, 48), (32, 48)], ["a", "b"]
    cpu = model.predict(x, sizes, ids)
    gpu = copy.deepcopy(model).to(DEV).predict(x, sizes, ids)  # CPU images go to the model's device
    for a, b in zip(gpu, cpu):
        assert [o.label for o in a.objects] == [o.label for o in b.objects]
        assert [(r.subject, r.object, r.predicate) for r in a.relations] == [
            (r.subject, r.object, r.predicate) for r in b.relations
        ]
