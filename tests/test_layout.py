"""The package's structure as the code relies on it: one window loop, the persistence mixin and its model card, the
chain's steps on their own, the 2D→4D vocabulary match, losses as named terms, and size limits that keep the code
readable."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from spade4d.inference.chained import ChainSettings, merge_relations, object_tubes
from spade4d.inference.options import InferenceOptions
from spade4d.models.model4d import Model4D, Model4DConfig
from spade4d.training.loop import sum_losses
from spade4d.training.transfer import _canonical_class, match_names
from spade4d.vocab import canonical_predicate

PACKAGE = Path(__file__).resolve().parents[1] / "spade4d"
TINY = dict(voxel_size=0.2, channels=(8, 16), dim=16, num_queries=4, decoder_layers=1, heads=2, ffn_dim=32, window=2)


def tiny_model():
    torch.manual_seed(0)
    return Model4D(Model4DConfig(classes=["person", "chair"], predicates=["on", "beside"], **TINY)).eval()


def frames_of(times):
    from spade4d.batch import Frames

    g = torch.Generator().manual_seed(sum(times) + len(times))
    n = 30
    xyz = torch.rand(n * len(times), 3, generator=g)
    return Frames(
        xyz=xyz,
        rgb=torch.rand(n * len(times), 3, generator=g),
        frame=torch.arange(len(times)).repeat_interleave(n),
        times=torch.tensor(times),
        keep=[np.arange(n)] * len(times),
    )


def test_the_window_loop_carries_memory_like_a_hand_written_loop():
    model = tiny_model()
    center = torch.zeros(3)
    windows = model.windows(5)
    assert windows == [[0, 1], [2, 3], [4]] and model.windows(5, 4) == [[0, 1, 2, 3], [4]]
    with torch.no_grad():
        steps = list(model.run(frames_of, windows, center))
        memory = model.init_memory()
        for (times, fr, out), w in zip(steps, windows):
            ref = model.forward_window(frames_of(w), center, memory)
            assert times == w and len(fr.times) == len(w)
            torch.testing.assert_close(out.class_logits, ref.class_logits)
            memory = ref.memory
        # the memory matters: the last window without it differs
        alone = model.forward_window(frames_of([4]), center, model.init_memory())
    assert not torch.allclose(alone.states, steps[-1][2].states)


def test_every_saved_folder_has_a_model_card(tmp_path):
    model = tiny_model()
    path = model.save_pretrained(tmp_path / "m")
    card = (path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: spade4d")
    assert 'spade4d.Pipeline4D.from_pretrained("m")' in card and "| classes | 2: person, chair |" in card
    back = Model4D.from_pretrained(path)  # the card is not read back
    assert back.config.classes == ["person", "chair"]


def test_the_2d_vocabulary_reaches_4d_names_through_canonical_forms():
    psg_classes = ["person", "wall-other-merged", "couch", "tv", "dining table", "bicycle"]
    psg4d_classes = ["adult", "wall", "sofa", "television", "table", "bike", "cart", "person"]
    rows = match_names(psg_classes, psg4d_classes, _canonical_class)
    named = {psg4d_classes[j]: psg_classes[i] for j, i in rows.items()}
    assert named == {
        "adult": "person",
        "wall": "wall-other-merged",
        "sofa": "couch",
        "television": "tv",
        "table": "dining table",
        "bike": "bicycle",
        "person": "person",  # the same name first
    }
    vg_predicates = ["on", "next to", "holding", "riding on", "parked on"]
    psg4d_predicates = ["on", "beside", "hold", "riding", "pushing"]
    rows = match_names(vg_predicates, psg4d_predicates, canonical_predicate)
    assert {psg4d_predicates[j]: vg_predicates[i] for j, i in rows.items()} == {
        "on": "on",
        "beside": "next to",
        "hold": "holding",
        "riding": "riding on",
    }


def test_chain_steps_merge_relations_and_build_tubes_on_their_own():
    cfg = ChainSettings.resolve(
        type(
            "L",
            (),
            dict(
                rescore=0.5, name_rescore=None, samples=0, spans="head", complete="none", scores="decoded", chain="two"
            ),
        )(),  # fmt: skip
        InferenceOptions(rescore=1.0),
        None,
        True,
        64,
    )
    assert cfg.w_head == 1.0 and cfg.w_name == 1.0 and cfg.spans == "head"
    model_cfg = Model4DConfig(classes=["a"], predicates=["on", "beside"], relation_threshold=0.5, min_span=1)
    cands = {(0, "sits on", 1): (0.5, [(0, 0)]), (1, "near", 2): (0.9, [(0, 1)])}
    head = {(0, 1): np.array([[0.2, 0.1], [0.8, 0.1], [0.9, 0.2]], dtype=np.float32)}
    merged = merge_relations(cands, {0, 1}, {"sits on": "on", "near": "beside"}, [1.0, 0.25, 1.0], head, cfg, model_cfg)
    # object 2 is not kept; the kept relation takes the head's frames (1-2) and its score: 0.9 x sqrt(1 x 0.25)
    assert list(merged) == [(0, "on", 1)]
    assert merged[(0, "on", 1)][0] == pytest.approx(0.45) and merged[(0, "on", 1)][1] == [(1, 2)]
    assign = [np.array([0, 0, -1, 1]), np.array([-1, -1, -1, -1]), np.array([1, 1, 0, 0])]
    tubes = object_tubes(assign, ["cup", "table", "ghost"], [0.9, 0.8, 0.7])
    assert [(o.id, o.label, sorted(o.masks)) for o in tubes] == [(1, "cup", [0, 2]), (2, "table", [0, 2])]
    assert tubes[0].masks[0].tolist() == [True, True, False, False]


def test_losses_are_named_terms_the_loop_sums():
    a, b = torch.tensor(1.5, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    total, logged = sum_losses({"loss_a": a * 2, "loss_b": b, "matched": 3.0})
    total.backward()
    assert float(total.detach()) == 5.0 and logged == {"loss": 5.0, "loss_a": 3.0, "loss_b": 2.0, "matched": 3.0}
    assert float(a.grad) == 2.0
    with pytest.raises(ValueError, match="no loss_"):
        sum_losses({"matched": 1.0})


def functions(limit):
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)"


def test_no_library_function_is_longer_than_80_lines_and_the_cli_stays_thin():
    assert list(functions(80)) == []
    assert len((PACKAGE / "cli.py").read_text().splitlines()) < 600


def test_setup_reads_the_packages_version_without_running_it():
    import subprocess
    import sys

    import spade4d

    root = PACKAGE.parent
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == spade4d.__version__
    assert "exec(" not in (root / "setup.py").read_text()  # a version.py with imports must not break the install
