"""Mutation fuzzing of what users hand to ``spade4d evaluate-4d``: the prediction file, the annotation and the
point-cloud frames. Shared by ``tests/test_fuzz.py`` (a few hundred cases per run) and ``scripts/fuzz_inputs.py``
(thousands, with a summary table).

Every case runs the real command in this process and is classified:

* ``ok``: exit 0 and the metrics JSON equals the plain reference loop on the same parsed inputs;
* ``clean``: exit 2 with one line on stderr that names the file it is about, without terminal escape codes;
* ``wrong``: exit 0 with metrics that differ from the reference loop;
* ``silent``: exit 0 although the mutation put a value of the wrong type where the format requires one type;
* ``vague``: exit 2 with a message that names no file, or spans several lines;
* ``traceback``: any exception escaping the command, or another exit status.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import re
from pathlib import Path

import numpy as np
import torch

OUTCOMES = ("ok", "clean", "wrong", "silent", "vague", "traceback")
ANSI = re.compile(r"\x1b\[")

# expected JSON types of the fields a mutation may hit ("int" admits integral floats, as the readers do)
PRED_TYPES = [
    (r"^format$", "str"),
    (r"^version$", "int"),
    (r"^sequences$", "dict"),
    (r"^sequences\.[^.]+$", "dict"),
    (r"^sequences\.[^.]+\.num_frames$", "int"),
    (r"^sequences\.[^.]+\.(objects|relations)$", "list"),
    (r"^sequences\.[^.]+\.objects\.\d+$", "dict"),
    (r"^sequences\.[^.]+\.objects\.\d+\.id$", "int"),
    (r"^sequences\.[^.]+\.objects\.\d+\.label$", "str"),
    (r"^sequences\.[^.]+\.objects\.\d+\.score$", "number"),
    (r"^sequences\.[^.]+\.objects\.\d+\.masks$", "dict"),
    (r"^sequences\.[^.]+\.objects\.\d+\.masks\.\d+$", "dict"),
    (r"^sequences\.[^.]+\.objects\.\d+\.masks\.\d+\.size$", "list"),
    (r"^sequences\.[^.]+\.objects\.\d+\.masks\.\d+\.size\.\d+$", "int"),
    (r"^sequences\.[^.]+\.relations\.\d+$", "dict"),
    (r"^sequences\.[^.]+\.relations\.\d+\.(subject|object)$", "int"),
    (r"^sequences\.[^.]+\.relations\.\d+\.predicate$", "str"),
    (r"^sequences\.[^.]+\.relations\.\d+\.score$", "number"),
    (r"^sequences\.[^.]+\.relations\.\d+\.spans$", "list"),
    (r"^sequences\.[^.]+\.relations\.\d+\.spans\.\d+$", "list"),
    (r"^sequences\.[^.]+\.relations\.\d+\.spans\.\d+\.\d+$", "int"),
]
ANN_TYPES = [
    (r"^objects$", "dict"),
    (r"^objects\.(thing|stuff)$", "list"),
    (r"^objects\.(thing|stuff)\.\d+$", "str"),
    (r"^split$", "dict"),
    (r"^split\.test$", "list"),
    (r"^split\.test\.\d+$", "str"),
    (r"^predicates$", "list"),
    (r"^predicates\.\d+$", "str"),
    (r"^data$", "list"),
    (r"^data\.\d+$", "dict"),
    (r"^data\.\d+\.video_id$", "str"),
    (r"^data\.\d+\.meta$", "dict"),
    (r"^data\.\d+\.meta\.num_frames$", "int"),
    (r"^data\.\d+\.(object|relations)$", "list"),
    (r"^data\.\d+\.object\.\d+$", "dict"),
    (r"^data\.\d+\.object\.\d+\.object_id$", "int"),
    (r"^data\.\d+\.object\.\d+\.category$", "str"),
    (r"^data\.\d+\.relations\.\d+$", "list"),
    (r"^data\.\d+\.relations\.\d+\.[02]$", "int"),
    (r"^data\.\d+\.relations\.\d+\.1$", "str"),
    (r"^data\.\d+\.relations\.\d+\.3$", "list"),
    (r"^data\.\d+\.relations\.\d+\.3\.\d+$", "int"),
]
POOL = [None, True, False, -1, 0, 7, 2**31, 2**63, 2**64, 1.5, -0.5, float("nan"), float("inf"), "", "x", "0", [], {},
        [[]], [0, 1], {"a": 1}, "🙂"]  # fmt: skip


def _json_type(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "int" if np.isfinite(v) and float(v).is_integer() else "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "dict"
    return "null"


def _fits(value, expected: str) -> bool:
    t = _json_type(value)
    if expected == "number":
        return t in ("int", "float") and np.isfinite(float(value))
    if expected == "int":
        return t == "int" and abs(int(value)) < 2**63
    return t == expected


def make_fixture(root: Path, seed: int = 0) -> dict:
    """A tiny spade4d-pc dataset (2 test sequences, 3 frames of 12 points) and a prediction file that has both
    hits and misses; returns the paths."""
    from spade4d.evaluation.predictions import write_predictions_4d
    from spade4d.structures import ObjectTube, Relation4D, SceneGraph4D

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data, preds = [], []
    for v in range(2):
        vid = f"seq{v}"
        folder = root / "point_clouds" / vid
        folder.mkdir(parents=True)
        inst = np.repeat([1, 2, 1003, -100], 3)
        for t in range(3):
            xyz = rng.normal(size=(12, 3)).astype(np.float32)
            sem = np.where(inst == -100, -100, 0)
            torch.save(tuple(torch.from_numpy(a) for a in (xyz, np.zeros((12, 3), np.float32), sem, inst)),
                       folder / f"{t:06d}.pth")  # fmt: skip
        objs = [{"object_id": 1, "category": "person"}, {"object_id": 2, "category": "cup"},
                {"object_id": 1003, "category": "wall"}]  # fmt: skip
        rels = [[1, "holding", 2, [0, 2]], [1, "near", 1003, [1, 2]], [2, "near", 1003, [0, 0]]]
        data.append({"video_id": vid, "meta": {"num_frames": 3}, "object": objs, "relations": rels})
        masks = {oid: {t: inst == oid for t in range(3)} for oid in (1, 2, 1003)}
        masks[2][1] = rng.random(12) < 0.5  # a miss on one frame
        tubes = [ObjectTube(10 + k, lab, masks[oid], 0.9) for k, (oid, lab) in
                 enumerate([(1, "person"), (2, "cup"), (1003, "wall")])]  # fmt: skip
        prels = [Relation4D(10, 11, "holding", [(0, 2)], 0.8), Relation4D(10, 12, "near", [(0, 2)], 0.6),
                 Relation4D(11, 12, "near", [(0, 1)], 0.4), Relation4D(10, 11, "near", [(0, 0)], 0.3)]  # fmt: skip
        preds.append(SceneGraph4D(vid, 3, tubes, prels, [12, 12, 12]))
    ann = {"objects": {"thing": ["person", "cup"], "stuff": ["wall"]}, "predicates": ["holding", "near"],
           "split": {"test": ["seq0", "seq1"]}, "data": data}  # fmt: skip
    (root / "psg4d.json").write_text(json.dumps(ann))
    write_predictions_4d(root / "pred.json", preds)
    return {"root": root, "ann": root / "psg4d.json", "pred": root / "pred.json"}


def _paths(obj, prefix=""):
    """Every (path, value) in a JSON value, depth first; paths are dotted."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, f"{prefix}.{i}" if prefix else str(i))


def _get(obj, path: str):
    for k in path.split("."):
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    return obj


def _set(obj, path: str, value, delete: bool = False):
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    last = keys[-1]
    if isinstance(obj, list):
        if delete:
            del obj[int(last)]
        else:
            obj[int(last)] = value
    elif delete:
        del obj[last]
    else:
        obj[last] = value


def mutate_json(text: str, rng: random.Random, types, strict_keys: bool = False) -> tuple[bytes, bool, str]:
    """(new file bytes, whether the format requires a refusal, a description). ``strict_keys``: the format
    defines every field (prediction files), so an added field must be refused too."""
    kind = rng.choice(["value", "value", "value", "delete", "bytes", "extra"])
    if kind == "bytes":
        raw = text.encode()
        how = rng.choice(["truncate", "garbage", "nest"])
        if how == "truncate":
            return raw[: rng.randrange(len(raw))], True, "truncated"
        if how == "garbage":
            i = rng.randrange(len(raw))
            return raw[:i] + bytes([rng.choice([0xFF, 0xC3, 0x00, 0x80])]) + raw[i + 1 :], False, "a bad byte"
        return ("[" * 200000 + "]" * 200000).encode(), True, "deep nesting"
    obj = json.loads(text)
    paths = [p for p, _ in _paths(obj) if p]
    path = rng.choice(paths)
    expected = next((t for pattern, t in types if re.match(pattern, path)), None)
    if kind == "extra":
        objects = [p for p, v in _paths(obj) if isinstance(v, dict) and p and not p.endswith("masks")]
        where = rng.choice(objects + [""])
        target = obj if not where else _get(obj, where)
        target["socre"] = 1.0
        return json.dumps(obj).encode(), strict_keys and not re.search(r"masks\.\d+$", where), f"{where}.socre added"
    if kind == "delete":
        _set(obj, path, None, delete=True)
        # deleting a required field must be refused; deleting from a list shortens it (still well-typed)
        # optional: list items, scores, masks (an empty tube), an annotation's relations, the predicate and
        # stuff lists
        optional = re.search(r"\.\d+$", path) or path.endswith(("score", "masks", "stuff"))
        optional = optional or bool(re.match(r"^data\.\d+\.relations$", path))
        optional = optional or bool(re.match(r"^sequences\.[^.]+$", path))  # a sequence without predictions scores 0
        optional = optional or path == "predicates"
        return json.dumps(obj).encode(), expected is not None and not optional, f"deleted {path}"
    value = copy.deepcopy(rng.choice(POOL))
    _set(obj, path, value)
    must_refuse = expected is not None and not _fits(value, expected)
    if path.endswith("score") and value is None:
        must_refuse = True
    return json.dumps(obj).encode(), must_refuse, f"{path} = {value!r}"


def mutate_frame(path: Path, rng: random.Random) -> tuple[bytes | None, bool, str]:
    """Replace one frame file by a damaged one; all of these must be refused."""
    xyz, rgb, sem, inst = (t.numpy() for t in torch.load(path, weights_only=True))
    how = rng.choice(["truncate", "nan_xyz", "frac_ids", "bool_ids", "nan_ids", "shape", "dict", "scalar_xyz"])
    buf = io.BytesIO()
    if how == "truncate":
        raw = path.read_bytes()
        return raw[: rng.randrange(len(raw))], True, "frame truncated"
    if how == "nan_xyz":
        xyz = xyz.copy()
        xyz[0, 0] = np.nan
        obj = (xyz, rgb, sem, inst)
    elif how == "frac_ids":
        obj = (xyz, rgb, sem, inst + 0.5)
    elif how == "bool_ids":
        obj = (xyz, rgb, sem, inst > 0)
    elif how == "nan_ids":
        obj = (xyz, rgb, sem, np.where(inst > 1, np.nan, inst.astype(float)))
    elif how == "shape":
        obj = (xyz, rgb[:-1], sem, inst)
    elif how == "dict":
        obj = {"xyz": xyz}
    else:
        obj = (np.float32(1.0), rgb, sem, inst)
    torch.save(obj, buf)
    return buf.getvalue(), True, f"frame {how}"


def run_case(fixture: dict, seed: int, work: Path) -> tuple[str, str]:
    """Mutate one input of ``fixture`` (copied into ``work``) and classify ``evaluate-4d`` on it."""
    import shutil

    from spade4d.cli import main

    rng = random.Random(seed)
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(fixture["root"], work)
    target = rng.choice(["pred", "pred", "ann", "frame"])
    if target == "pred":
        path = work / "pred.json"
        raw, must_refuse, what = mutate_json(path.read_text(), rng, PRED_TYPES, strict_keys=True)
    elif target == "ann":
        path = work / "psg4d.json"
        raw, must_refuse, what = mutate_json(path.read_text(), rng, ANN_TYPES)
    else:
        path = work / "point_clouds" / f"seq{rng.randrange(2)}" / f"{rng.randrange(3):06d}.pth"
        raw, must_refuse, what = mutate_frame(path, rng)
    path.write_bytes(raw)
    out = work / "metrics.json"
    argv = ["evaluate-4d", "--root", str(work), "--pred", str(work / "pred.json"), "--out", str(out), "--quiet"]
    err, sink = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(sink):
            code = main(argv)
    except BaseException as e:  # noqa: BLE001 - the point is to see everything that escapes
        return "traceback", f"{what}: {type(e).__name__}: {str(e)[:120]}"
    msg = err.getvalue().strip()
    if code == 2:
        lines = [ln for ln in msg.splitlines() if ln.strip()]
        if len(lines) == 1 and str(work) in lines[0] and not ANSI.search(lines[0]):
            return "clean", f"{what}: {lines[0][-120:]}"
        return "vague", f"{what}: {msg[:200]!r}"
    if code != 0:
        return "traceback", f"{what}: exit {code}: {msg[:120]}"
    if must_refuse:
        return "silent", f"{what}: accepted"
    return ("ok" if _agrees_with_reference(work, out) else "wrong"), what


def _agrees_with_reference(root: Path, metrics_path: Path) -> bool:
    from spade4d.data.psg4d import Spade4DPointCloud
    from spade4d.evaluation import Options4D, PredictionFile4D
    from spade4d.evaluation.metrics_4d import summarise_4d
    from spade4d.evaluation.reference import match_sequence_reference

    got = json.loads(metrics_path.read_text())
    ds = Spade4DPointCloud(root, "test")
    pf = PredictionFile4D(root / "pred.json")
    outcomes = []
    for points, gt in ds:
        pred = pf.get(gt.video_id, points.counts.tolist()) if gt.video_id in pf else None
        outcomes += match_sequence_reference(gt, pred, Options4D())
    ref = summarise_4d(outcomes, Options4D(), ds.predicates, len(ds))
    return all(abs(got[k] - ref[k]) < 1e-9 for k in ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100"))
