"""The shared 2D core: diffusion backbone, attention capture, DDIM inversion, LoRA, RGT, the 2D model, 2D
pretraining end to end and the 2D -> 4D transfer (tiny random-initialised configs)."""

import json
import shutil

import numpy as np
import pytest
import torch

from spade4d.data.cameras import point_uv
from spade4d.data.lift import backproject
from spade4d.models.calibration import (
    AttentionCapture,
    CalibrationError,
    add_lora,
    calibration_loss,
    ddim_invert,
    ddim_sample,
    has_lora,
    load_lora,
    lora_disabled,
    map_hw,
    save_lora,
    student_maps,
    teacher_maps,
)
from spade4d.models.diffusion_backbone import BackboneConfig, BackboneError, DiffusionBackbone, caption_of
from spade4d.models.lift import LiftedFeatures
from spade4d.models.model4d import Model4D, Model4DConfig
from spade4d.models.relation_transformer import RelationGraphTransformer, edge_features
from spade4d.models.spade2d import Spade2D, Spade2DConfig
from spade4d.training.transfer import TRANSFERRED_PREFIXES, model4d_overrides, transfer_2d_to_4d

TINY_BB = dict(
    image_size=(16, 24),
    block_out_channels=(8, 16, 16),
    attention_head_dim=4,
    norm_num_groups=4,
    max_text_len=12,
    prompt_hidden=16,
    prompt_pool=4,
)
CLASSES = ["person", "chair", "cup", "table", "floor"]
PREDICATES = ["on", "sitting on", "holding", "beside"]
TINY_2D = dict(dim=16, num_queries=5, decoder_layers=1, heads=2, ffn_dim=32, rgt_layers=1)


def tiny_backbone(seed=0, **kw):
    return DiffusionBackbone.tiny(BackboneConfig(vocabulary=CLASSES, **{**TINY_BB, **kw}), seed=seed)


def tiny_2d(seed=0):
    torch.manual_seed(seed)
    return Spade2D(Spade2DConfig(classes=CLASSES, predicates=PREDICATES, **TINY_2D), tiny_backbone(seed))


def images(n=2, seed=0):
    return torch.rand(n, 3, 32, 48, generator=torch.Generator().manual_seed(seed))


def test_backbone_features_are_multiscale_and_the_gate_starts_closed():
    bb = tiny_backbone()
    x = images()
    feats = bb(x)
    assert [f.shape[1] for f in feats] == bb.feature_channels == [16, 16, 8]
    assert feats[-1].shape[-2:] == bb.feature_grid == (16, 24)
    assert feats[0].shape[-2:] == (8, 12)
    # the implicit prompt adds nothing while its gate is zero
    cond = bb.condition(x)
    assert torch.equal(cond, bb.prompt_tokens.expand(2, -1, -1))
    with torch.no_grad():
        bb.prompt_gate.fill_(1.0)
    assert not torch.allclose(bb.condition(x), cond)


def test_backbone_rejects_bad_configs():
    with pytest.raises(BackboneError, match="divisible"):
        BackboneConfig(**{**TINY_BB, "image_size": (15, 24)})
    with pytest.raises(BackboneError, match="sd15_path"):
        BackboneConfig(kind="sd15")


def test_caption_lists_relations_then_other_objects():
    assert caption_of(["person", "chair", "floor"], [(0, "sitting on", 1)]) == "person sitting on chair, floor"


def test_attention_capture_covers_every_cross_attention_layer_and_changes_nothing():
    bb = tiny_backbone()
    x0 = bb.to_model_space(images())
    cond, mask, words = bb.encode_text(["person sitting on chair", "cup on table"])
    with torch.no_grad():
        ref = bb.unet(x0, 10, encoder_hidden_states=cond, encoder_attention_mask=mask).sample
        with AttentionCapture(bb.unet) as cap:
            out = bb.unet(x0, 10, encoder_hidden_states=cond, encoder_attention_mask=mask).sample
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    maps = cap.maps()
    expected = {n.removesuffix(".processor") for n in bb.unet.attn_processors if ".attn2." in n}
    assert set(maps) == expected and len(expected) == 4  # down, mid, and the two layers of the up block
    for m in maps.values():
        h, w = map_hw(m.shape[1], TINY_BB["image_size"])
        assert m.shape == (2, h * w, TINY_BB["max_text_len"]) and (h, w) == (4, 6)
        torch.testing.assert_close(m.sum(-1), torch.ones(2, h * w))  # a distribution over tokens
        assert (m[~mask[:, None, :].expand_as(m)] == 0).all()  # padding tokens get no attention
    # processors are restored
    assert not any(type(p).__name__ == "CaptureCrossAttnProcessor" for p in bb.unet.attn_processors.values())
    assert words[0][1:5] == ["person", "sitting", "on", "chair"]


def test_ddim_inversion_then_sampling_reconstructs_the_input():
    bb = tiny_backbone()
    x0 = bb.to_model_space(images())
    cond, mask, _ = bb.encode_text(["person sitting on chair", "cup on table"])
    sched = bb.scheduler_config()
    errors = {}
    for steps in (10, 50):
        xt = ddim_invert(bb.unet, x0, cond, steps, sched, mask, strength=0.5)
        rec = ddim_sample(bb.unet, xt, cond, steps, sched, mask, strength=0.5)
        errors[steps] = float((rec - x0).abs().mean())
        moved = float((xt - x0).abs().mean())
    assert moved > 0.1  # the inversion really went somewhere
    assert errors[50] < 0.03 * float(x0.abs().mean()) + 0.01
    assert errors[50] < errors[10]  # and the round trip converges with more steps
    with pytest.raises(CalibrationError):
        ddim_invert(bb.unet, x0, cond, 10, sched, mask, strength=0.0)


def test_lora_trains_only_the_adapter_and_round_trips_with_peft(tmp_path):
    bb = tiny_backbone()
    base = {k: v.clone() for k, v in bb.unet.state_dict().items()}
    n = add_lora(bb.unet, rank=2)
    assert has_lora(bb.unet)
    lora_names = [k for k, _ in bb.unet.named_parameters() if "lora_" in k]
    assert all(".attn2." in k for k in lora_names)
    assert {k.split(".attn2.")[1].split(".lora_")[0] for k in lora_names} == {"to_q", "to_k", "to_v", "to_out.0"}
    assert n == sum(p.numel() for p in bb.unet.parameters() if p.requires_grad)
    x = images()
    maps, tmask, _, _ = teacher_maps(bb, x, ["person sitting on chair", "cup on table"], steps=6)
    cond, cmask, _ = bb.encode_text(["person sitting on chair", "cup on table"])
    opt = torch.optim.SGD([p for p in bb.unet.parameters() if p.requires_grad], lr=1.0)
    for _ in range(3):
        loss = calibration_loss(student_maps(bb, x, cond, cmask), maps, tmask) + sum(f.pow(2).mean() for f in bb(x))
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = {k.replace(".base_layer", ""): v for k, v in bb.unet.state_dict().items() if "lora_" not in k}
    assert set(after) == set(base)
    assert all(torch.equal(after[k], base[k]) for k in base)  # the base never moved
    assert any(bb.unet.get_parameter(k).abs().sum() > 0 for k in lora_names if "lora_B" in k)  # the adapter did
    with torch.no_grad():
        x0 = bb.to_model_space(x)
        out = bb.unet(x0, 10, encoder_hidden_states=cond).sample
        with lora_disabled(bb.unet):
            out_base = bb.unet(x0, 10, encoder_hidden_states=cond).sample
    assert not torch.allclose(out, out_base)
    save_lora(bb.unet, tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    fresh = tiny_backbone()
    load_lora(fresh.unet, tmp_path / "lora")
    with torch.no_grad():
        torch.testing.assert_close(fresh.unet(x0, 10, encoder_hidden_states=cond).sample, out)
    with pytest.raises(CalibrationError, match="not a LoRA adapter folder"):
        load_lora(tiny_backbone().unet, tmp_path)


def test_backbone_save_load_keeps_unet_lora_and_prompt(tmp_path):
    bb = tiny_backbone()
    add_lora(bb.unet, rank=2)
    with torch.no_grad():
        bb.prompt_gate.fill_(0.5)
        for n, p in bb.unet.named_parameters():
            if "lora_B" in n:
                p.normal_()
    bb.save_pretrained(tmp_path / "bb")
    back = DiffusionBackbone.from_pretrained(tmp_path / "bb")
    x = images()
    with torch.no_grad():
        for a, b in zip(bb(x), back(x)):
            torch.testing.assert_close(a, b)
    assert back.config.vocabulary == CLASSES
    with pytest.raises(BackboneError, match="not a spade4d diffusion backbone"):
        DiffusionBackbone.from_pretrained(tmp_path)


def test_rgt_is_equivariant_to_node_order():
    torch.manual_seed(0)
    rgt = RelationGraphTransformer(dim=16, heads=2, ffn_dim=32, layers=2).double()
    B, N, P = 2, 6, 40
    x, m, c = torch.randn(B, N, 16).double(), torch.rand(B, N, P).double(), torch.randn(B, P, 3).double()
    pairs = torch.tensor([(i, j) for i in range(N) for j in range(N) if i != j])
    out = rgt(x, m, c, pairs)
    perm = torch.randperm(N)
    inv = torch.argsort(perm)
    out2 = rgt(x[:, perm], m[:, perm], c, inv[pairs])
    torch.testing.assert_close(out, out2)
    # edge features: i above j reads as positive "up" from j's side; IoU is symmetric; self IoU is 1
    masks = torch.zeros(1, 2, 4).double()
    masks[0, 0, :2] = 1
    masks[0, 1, 2:] = 1
    coords = torch.tensor([[[0, 0, 2.0], [0, 0, 2.0], [0, 0, 0.0], [0, 0, 0.0]]]).double()
    f = edge_features(masks, coords)
    assert f[0, 1, 0, 1] > 0 and f[0, 0, 1, 1] < 0
    torch.testing.assert_close(f[0, :, :, 4], f[0, :, :, 4].T)
    assert f[0, 0, 0, 4] == pytest.approx(1.0)


def test_spade2d_predicts_valid_graphs_and_round_trips(tmp_path):
    model = tiny_2d()
    model.config.object_threshold = 0.0
    x = images()
    graphs = model.predict(x, [(20, 30), (32, 48)], ["a", "b"])
    assert [g.image_id for g in graphs] == ["a", "b"]
    assert graphs[0].objects and graphs[0].objects[0].mask.shape == (20, 30)
    scores = [r.score for r in graphs[1].relations]
    assert scores == sorted(scores, reverse=True)
    add_lora(model.backbone.unet, rank=2)
    model.save_pretrained(tmp_path / "m2d")
    back = Spade2D.from_pretrained(tmp_path / "m2d")
    model.eval()
    back.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).class_logits, back(x).class_logits)
    assert has_lora(back.backbone.unet)


def test_grounding_losses_reward_attention_inside_the_named_masks():
    from spade4d.training.images2d import ImageSample
    from spade4d.training.pretrain_diffusion import grounding_losses, word_masks

    h, w = 4, 6
    masks = torch.zeros(3, 8, 12)
    masks[0, :4, :6] = 1  # person, top-left quarter
    masks[1, 4:, 6:] = 1  # another person, bottom-right quarter
    masks[2, :4, 6:] = 1  # chair, top-right quarter
    s = ImageSample("x", torch.zeros(3, 8, 12), (8, 12), ["person", "person", "chair"], masks, [(0, 2, "beside")])
    words = ["", "person", "beside", "chair", "", "person", ""]
    wm = word_masks(words, s.labels, s.masks, (h, w))
    assert [t for t, _ in wm] == [[1, 5], [3]]  # every occurrence of a word, each word once
    person = wm[0][1]
    assert person.shape == (h, w) and person.sum() == h * w / 2  # the union of both people
    assert person[0, 0] == 1 and person[3, 5] == 1 and person[0, 5] == 0

    def maps_for(in_mask: bool):
        m = torch.full((1, h * w, len(words)), 1e-4)
        if in_mask:
            m[0, :, 1] = m[0, :, 5] = person.flatten()
            m[0, :, 3] = wm[1][1].flatten()
        else:
            m[0, :, [1, 3, 5]] = 1.0  # every word everywhere: chance
        return {"layer": m / m.sum(-1, keepdim=True)}

    good_tok, good_pix = grounding_losses(maps_for(True), [s], [words], (8, 12))
    flat_tok, flat_pix = grounding_losses(maps_for(False), [s], [words], (8, 12))
    assert good_tok < 1e-3 and good_pix < flat_pix
    # a uniform map puts the mask's area share inside: (1 - 1/2)^2 for the people, (1 - 1/4)^2 for the chair
    assert float(flat_tok) == pytest.approx((0.25 + 0.5625) / 2, rel=1e-3)
    empty = ImageSample("y", torch.zeros(3, 8, 12), (8, 12), ["cup"], torch.zeros(1, 8, 12), [])
    zt, zp = grounding_losses(maps_for(True), [empty], [["", "cup", ""]], (8, 12))
    assert float(zt) == 0 and float(zp) == 0  # nothing to ground: no loss, no NaN


def test_transfer_copies_exactly_the_named_tensors():
    m2 = tiny_2d(seed=1)
    torch.manual_seed(2)
    cfg = Model4DConfig(
        classes=CLASSES + ["bicycle"], predicates=PREDICATES, voxel_size=0.2, channels=(8, 16), **model4d_overrides(m2)
    )
    m4 = Model4D(cfg)
    before = {k: v.clone() for k, v in m4.state_dict().items()}
    report = transfer_2d_to_4d(m2, m4)
    src, after = m2.state_dict(), m4.state_dict()
    expected = {k for k in before if k.startswith(TRANSFERRED_PREFIXES) and k in src}
    assert set(report["moved"]) == expected
    assert any(".temporal." in k for k in report["new"])  # the 4D-only temporal aggregator is new
    assert not any(k.startswith("encoder.") for k in report["moved"])
    for k in after:
        if k in expected:
            assert torch.equal(after[k], src[k]), k
        elif k not in ("class_embed", "predicate_embed"):
            assert torch.equal(after[k], before[k]), k
    # vocabulary rows move by name; the name the 2D core never saw keeps its own embedding
    torch.testing.assert_close(after["class_embed"][:5], src["class_embed"])
    torch.testing.assert_close(after["class_embed"][5], before["class_embed"][5])
    assert report["vocabulary"]["class_embed"]["names_only_in_4d"] == ["bicycle"]


def test_transferred_tensors_train_at_their_own_learning_rate():
    from spade4d.training.finetune_4d import Train4DConfig, TrainError, param_groups

    m2 = tiny_2d(seed=1)
    torch.manual_seed(2)
    cfg4 = Model4DConfig(
        classes=CLASSES, predicates=PREDICATES, voxel_size=0.2, channels=(8, 16), **model4d_overrides(m2)
    )
    m4 = Model4D(cfg4)
    report = transfer_2d_to_4d(m2, m4)
    params = dict(m4.named_parameters())
    assert len(param_groups(m4, Train4DConfig(lr=0.01), report)) == 1  # factor 1: one group, as before
    assert len(param_groups(m4, Train4DConfig(lr=0.01, transfer_lr=0.1), None)) == 1  # nothing transferred
    new, moved = param_groups(m4, Train4DConfig(lr=0.01, transfer_lr=0.1), report)
    assert moved["lr"] == pytest.approx(0.001) and "lr" not in new
    assert {id(p) for p in moved["params"]} == {id(params[n]) for n in report["moved"] if n in params}
    assert len(new["params"]) + len(moved["params"]) == len(params)
    # Adam's first step moves every parameter with a gradient by its group's rate: a tenth for the moved ones
    opt = torch.optim.AdamW([new, moved], lr=0.01, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in params.items()}
    for p in params.values():
        p.grad = torch.ones_like(p)
    opt.step()
    name_moved = next(n for n in report["moved"] if n in params)
    name_new = next(n for n in params if n not in set(report["moved"]))
    torch.testing.assert_close(
        before[name_moved] - params[name_moved].detach(), torch.full_like(before[name_moved], 1e-3)
    )
    torch.testing.assert_close(before[name_new] - params[name_new].detach(), torch.full_like(before[name_new], 1e-2))
    with pytest.raises(TrainError, match="transfer_lr"):
        param_groups(m4, Train4DConfig(transfer_lr=-1.0), report)


def test_point_uv_finds_the_pixel_a_point_was_lifted_from():
    K = np.array([[50.0, 0, 23.5], [0, 50.0, 15.5], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 2.0, 0.5]
    depth = np.full((32, 48), 2.0, dtype=np.float32)
    pixels = np.array([0, 47, 31 * 48, 31 * 48 + 47, 16 * 48 + 20])
    xyz = backproject(depth, K, pose, pixels)
    uv = point_uv(xyz, K, pose, 32, 48)
    u, v = pixels % 48, pixels // 48
    np.testing.assert_allclose(uv[:, 0], (2 * u + 1) / 48 - 1, atol=1e-5)
    np.testing.assert_allclose(uv[:, 1], (2 * v + 1) / 32 - 1, atol=1e-5)
    behind = point_uv(np.array([[1.0, 2.0, -1.0]]), K, pose, 32, 48)
    assert np.isnan(behind).all()


def test_lifted_features_sample_the_pixel_map_and_skip_points_outside():
    m2 = tiny_2d()
    lift = LiftedFeatures.from_spade2d(m2)
    assert not any(p.requires_grad for p in lift.parameters())
    x = images(1)
    uv = torch.tensor([[0.0, 0.0], [2.0, 0.0], [float("nan"), 0.0], [-0.5, 0.5]])
    frame = torch.zeros(4, dtype=torch.long)
    f = lift(x, uv, frame, 4)
    assert f.shape == (4, 16)
    assert (f[1:3] == 0).all() and f[0].abs().sum() > 0 and f[3].abs().sum() > 0
    assert (lift(None, None, frame, 4) == 0).all()


def test_the_frame_feature_cache_gives_the_features_of_a_fresh_pass_and_stays_in_its_budget():
    lift = LiftedFeatures.from_spade2d(tiny_2d())
    x = images(3)
    uv = torch.rand(30, 2) * 2 - 1
    frame = torch.arange(3).repeat_interleave(10)
    fresh = lift(x, uv, frame, 30)
    one = lift.feature_maps(x[:1], "cpu")[0]
    lift.cache_frames(int(one.numel() * one.element_size() * 2.5))  # room for two frames' maps
    first = lift(x, uv, frame, 30)
    torch.testing.assert_close(first, fresh)
    assert (lift.cache.hits, lift.cache.misses, len(lift.cache.maps)) == (0, 3, 2)  # the oldest left
    again = lift(x[1:], uv[10:], frame[10:] - 1, 20)  # frames 1 and 2 are still there
    torch.testing.assert_close(again, fresh[10:])
    assert (lift.cache.hits, lift.cache.misses) == (2, 3) and lift.cache.bytes <= lift.cache.max_bytes
    changed = x.clone()
    changed[0, 0, 0, 0] += 0.5  # one pixel: another frame
    assert lift.cache.key(changed[0]) != lift.cache.key(x[0]) and lift.cache.key(x[0]) == lift.cache.key(x[0].clone())
    lift.cache_frames(0)
    assert lift.cache is None
    torch.testing.assert_close(lift(x, uv, frame, 30), fresh)


def assert_stages_repeat(run, capsys):
    """``spade4d reproduce`` on a finished pretrain-2d folder: each stage's first two steps, trained again from the
    run's model of the stage before, log the same values bit for bit; an edited history is found and named."""
    from spade4d.cli import main
    from spade4d.training.reproduce import rerun

    files = sorted(p for p in run.rglob("*") if p.is_file())
    rep = rerun(run, steps=2, progress=False)
    assert sorted(p for p in run.rglob("*") if p.is_file()) == files  # the run's folder is left as it was
    assert rep.steps == 2 and rep.identical and not rep.mismatches and not rep.changed
    assert [(r.stage, r.step) for r in rep.rows if r.key == "loss"] == [
        (stage, step) for stage in ("diffusion", "calibration", "psg") for step in (1, 2)
    ]
    logged = json.loads((run / "psg" / "trainer_state.json").read_text())["history"]
    assert [r.logged for r in rep.rows if r.stage == "psg" and r.key == "loss_rel"] == [
        h["loss_rel"] for h in logged[:2]
    ]
    assert len(rep.table().splitlines()) == 7 and rep.table().splitlines()[1].startswith("diffusion")

    state = json.loads((run / "psg" / "trainer_state.json").read_text())
    state["history"][1]["loss_cls"] += 0.25
    (run / "psg" / "trainer_state.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["reproduce", "--run", str(run), "--steps", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(run / "psg" / "trainer_state.json") in err and "loss_cls" in err
    state["history"][1]["loss_cls"] -= 0.25  # as the run logged it again, for what the test does next
    (run / "psg" / "trainer_state.json").write_text(json.dumps(state))
    record = (run / "pretrain_run.json").read_text()
    (run / "pretrain_run.json").unlink()
    assert main(["reproduce", "--run", str(run), "--quiet"]) == 2
    assert "pretrain_run.json: not found" in capsys.readouterr().err
    (run / "pretrain_run.json").write_text(record)


def test_pretrain_2d_end_to_end_then_transfer_with_lifting(synthetic_root, tmp_path, capsys):
    from spade4d.training.finetune_4d import finetune_4d, preset
    from spade4d.training.pretrain_2d import preset_2d, pretrain_2d

    cfg = preset_2d(
        "quick",
        steps=3,
        batch_size=2,
        calibration_steps=2,
        calibration_images=4,
        calibration_batch=2,
        inversion_steps=4,
        checkpoint_every=2,
        log_every=1,
        diffusion={"steps": 3, "batch_size": 2, "backbone": TINY_BB, "log_every": 1},
        model=TINY_2D,
    )
    psg = synthetic_root / "psg"
    final = pretrain_2d(psg / "psg.json", psg, tmp_path / "p2d", cfg, progress=False)
    assert_stages_repeat(tmp_path / "p2d", capsys)
    metrics = json.loads((tmp_path / "p2d" / "metrics_2d.json").read_text())
    assert {"R@20", "R@50", "R@100", "mR@50", "lora_trainable_parameters"} <= set(metrics)
    assert 0 <= metrics["R@50"] <= 100 and metrics["lora_trainable_parameters"] > 0
    assert metrics["inversion_reconstruction_error"] < 1.0
    for stage in ("diffusion", "calibration", "psg"):
        assert (tmp_path / "p2d" / stage / "model").is_dir(), stage
    assert (tmp_path / "p2d" / "attention.png").stat().st_size > 0
    m2 = Spade2D.from_pretrained(final)
    assert has_lora(m2.backbone.unet)
    # killed after the diffusion stage: the resumed run builds the same core as the uninterrupted one
    shutil.copytree(tmp_path / "p2d" / "diffusion", tmp_path / "again" / "diffusion")
    again = Spade2D.from_pretrained(pretrain_2d(psg / "psg.json", psg, tmp_path / "again", cfg, progress=False))
    a, b = m2.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    # 4D fine-tuning from the 2D core with lifted features (2 steps), then the saved model reloads
    run = tmp_path / "ft"
    tcfg = preset("quick", steps=2, lift=True, clip_frames=3, points_per_frame=256, checkpoint_every=2)
    res = finetune_4d(synthetic_root / "psg4d_pc", run, tcfg, init_from_2d=final, progress=False)
    report = json.loads((run / "transfer.json").read_text())
    assert report["lifted_2d_features"] and report["moved"]
    back = Model4D.from_pretrained(res.model_dir)
    assert back.lift is not None and back.config.dim == TINY_2D["dim"]
