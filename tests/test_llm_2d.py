"""The SceneLLM pretrained on 2D scene graphs (training.llm_2d) and a 4D model's SceneLLM started from it."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_core2d import TINY_2D, TINY_BB  # the tiny 2D core's sizes

from spade4d.models.diffusion_backbone import BackboneConfig, DiffusionBackbone
from spade4d.models.scene_llm import SceneLLM
from spade4d.models.spade2d import Spade2D, Spade2DConfig
from spade4d.training.finetune_4d import TrainError, build_model, preset, scene_llm_settings
from spade4d.training.images2d import ImageSet
from spade4d.training.llm_2d import LLM2DConfig, image_graph, pretrain_llm_2d, read_images

TINY_LLM = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1}  # fmt: skip


def test_an_image_graph_follows_the_queries_its_objects_are_matched_to():
    states = torch.zeros(6, 4)
    labels = ["person", "chair", "cup", "table"]
    # GT 0 -> query 4, GT 1 -> query 0, GT 3 -> query 2; GT 2 (cup) is matched to no query
    qi, gi = np.array([4, 0, 2]), np.array([0, 1, 3])
    rels = [(0, 1, "sitting on"), (2, 3, "on"), (3, 1, "beside"), (0, 0, "holding")]
    g = image_graph(states, qi, gi, labels, rels)
    assert g.tubes == [0, 2, 4]
    assert g.names == ["chair", "table", "person"]
    # the relations over the matched objects only, by their place in that order, each over frame 0; no self-loops
    assert g.relations == [(2, "sitting on", 0, [(0, 0)]), (1, "beside", 0, [(0, 0)])]


@pytest.fixture(scope="module")
def core_dir(synthetic_root, tmp_path_factory):
    psg = synthetic_root / "psg"
    train = ImageSet(psg / "psg.json", psg, "train", TINY_BB["image_size"], (4, 6))
    torch.manual_seed(0)
    backbone = DiffusionBackbone.tiny(BackboneConfig(vocabulary=train.classes, **TINY_BB), seed=0)
    core = Spade2D(Spade2DConfig(classes=train.classes, predicates=train.predicates, **TINY_2D), backbone)
    return core.save_pretrained(tmp_path_factory.mktemp("core") / "model")


def test_every_image_is_read_as_the_chain_writes_it(synthetic_root, core_dir):
    psg = synthetic_root / "psg"
    core = Spade2D.from_pretrained(core_dir)
    train = ImageSet(psg / "psg.json", psg, "train", core.backbone.config.image_size, core.backbone.feature_grid)
    graphs = read_images(core, train, batch=4, progress=False)
    assert len(graphs) == len(train)
    for g, i in zip(graphs, range(len(train))):
        s = train[i]
        assert g.states.shape == (TINY_2D["num_queries"], TINY_2D["dim"])
        assert g.tubes == sorted(set(g.tubes)) and all(0 <= q < TINY_2D["num_queries"] for q in g.tubes)
        assert len(g.names) == min(len(s.labels), TINY_2D["num_queries"]) and set(g.names) <= set(s.labels)
        assert all(0 <= a < len(g.names) and 0 <= b < len(g.names) and sp == [(0, 0)] for a, _, b, sp in g.relations)
    assert any(g.relations for g in graphs)


def test_pretrained_llm_starts_a_4d_sceneLLM_with_another_query_count(synthetic_root, core_dir, tmp_path):
    psg = synthetic_root / "psg"
    llm = {"llm": "tiny", "chain": "two", "train_base": True, "tiny": TINY_LLM}
    cfg = LLM2DConfig(llm=llm, steps=4, batch_size=2, log_every=1, checkpoint_every=2, eval_batch=4)
    folder = pretrain_llm_2d(psg / "psg.json", psg, core_dir, tmp_path / "llm2d", cfg, progress=False)
    saved = SceneLLM.from_pretrained(folder, scene_dim=TINY_2D["dim"])
    assert saved.config.num_tubes == TINY_2D["num_queries"]
    assert (tmp_path / "llm2d" / "loss.png").stat().st_size > 0
    # the 4D model has more queries than the core: every tensor comes over, the pointers follow its own count
    classes, predicates = ["person", "chair"], ["on"]
    tcfg = replace(preset("quick", llm={**scene_llm_settings("tiny"), "tiny": TINY_LLM}), llm_init=str(folder))
    tcfg = replace(tcfg, model={**tcfg.model, "dim": TINY_2D["dim"], "num_queries": 7, "heads": 2})
    model, _ = build_model(tcfg, classes, predicates)
    assert model.llm.config.num_tubes == 7
    a, b = model.llm.state_dict(), saved.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a SceneLLM of another shape or for states of another width is refused in one line naming the folder
    other = replace(tcfg, llm={**tcfg.llm, "tiny": {**TINY_LLM, "intermediate_size": 48}})
    with pytest.raises(TrainError, match=f"^{folder}: a SceneLLM of another shape \\(tiny") as e:
        build_model(other, classes, predicates)
    assert "\n" not in str(e.value)
    wider = replace(tcfg, model={**tcfg.model, "dim": 24})
    with pytest.raises(TrainError, match="states of another width than 24"):
        build_model(wider, classes, predicates)
    with pytest.raises(TrainError, match="the run trains none"):
        build_model(replace(tcfg, llm=None), classes, predicates)


def test_finetune_4d_llm_init_that_is_no_sceneLLM_is_one_line(synthetic_root, tmp_path, capsys):
    from spade4d.cli import main

    argv = ["finetune-4d", "--format", "synthetic", "--root", str(synthetic_root), "--out", str(tmp_path / "t")]
    assert main([*argv, "--llm", "tiny", "--llm-init", str(tmp_path), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err and "Traceback" not in err
