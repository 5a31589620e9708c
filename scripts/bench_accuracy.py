"""The accuracy benchmark: every variant over several training seeds, as means with 95 % intervals and paired
differences (docs/open-vocabulary.md, "The benchmark script").

    python scripts/bench_accuracy.py --data outputs/bench/synthetic --out outputs/bench [--preset quick] \
        [--seeds 0,1,2] [--jobs 2] [--llm tiny] [--report docs/bench/accuracy_quick] \
        [--models scratch,transfer,transfer-avg,transfer-last,scratch-dense,transfer-dense,transfer-smollm2,\
                  transfer-slow,transfer-tiny,transfer-single,transfer-tiny-2d,video-scratch,\
                  video-transfer] \
        [--rows 'head;head + 2D proposals']

Per seed it trains (or finds) a 2D core (``pretrain-2d``) and two 4D models, from scratch and initialised from
that core (its relation graph transformer and head, as the demo does; the latter with the SceneLLM).
``transfer-smollm2``, ``transfer-tiny`` and ``transfer-single`` train a new SceneLLM (SmolLM2 + LoRA; the tiny LLM
in two turns; in one) on the transferred model's frozen 4D weights, after it (``--steps-after`` for that stage,
by default ``--steps``); ``transfer-tiny-2d`` does as ``transfer-tiny`` from a tiny SceneLLM first trained on the
2D images as the seed's 2D core reads them (``--steps-llm-2d``; :mod:`spade4d.training.llm_2d`).
``transfer-avg`` and ``transfer-last`` train the transferred model again with weight averaging
(``Train4DConfig.weight_average``) or without the presets' deep supervision of every decoder layer
(``LossWeights.deep`` 0: the last layer only); ``scratch-dense`` and ``transfer-dense`` train both 4D models
again with their mask losses on 8192 sampled points per frame instead of the preset's
(``Train4DConfig.points_per_frame``); ``transfer-slow`` trains the transferred model again with the
tensors the 2D core gave at a tenth of the learning rate (``Train4DConfig.transfer_lr``). A model folder trained
with other settings than the sweep would use (an older preset, another ``--steps``; for a SceneLLM trained after,
the 4D model it builds on too) is refused rather than scored. ``--rows`` scores only some rows of each model (by
what follows the model's name in the table).
``--models video-scratch,video-transfer`` trains the video models instead (docs/video.md: from scratch on colours,
and from the core with its features lifted), on the dataset's PVSG copy, scored with ``evaluate-video``. Each model
is run on the test split with the relation head and, for the transferred one, the SceneLLM chain, each with and
without the 2D core's proposals for unseen objects (docs/open-vocabulary.md), and scored: R@20/50/100,
mR@20/50/100, and R@50 on the out-of-vocabulary relations (subject, object or predicate never in 4D training)
and on the others. The table gives mean ± the half-width of the 95 % Student-t interval over the seeds, and the
paired differences by seed (:mod:`spade4d.evaluation.stats`). ``<report>.json`` (every run, the intervals, the
command, the machine, the date, the git commit it ran from and those each run folder was trained with),
``<report>.md`` (the tables) and ``<report>.png`` (points with intervals).

Everything finished is kept under ``--out``: a 2D core or 4D model is found by its folder, a training run resumes
from its last checkpoint, and each scored row is ``<out>/seed<N>/scores/<row>.json``; an interrupted sweep
continues where it stopped. ``--jobs 2`` runs two trainings at once on one torch thread each; with a CUDA GPU,
training and inference use it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from spade4d.provenance import code_version, recorded_codes

ROWS = {  # name: (model, chain, 2D proposals: False or a key of PROPOSALS)
    "scratch / head": ("scratch", False, False),
    "scratch / head + 2D proposals": ("scratch", False, "add"),
    "transfer / head": ("transfer", False, False),
    "transfer / head + 2D proposals": ("transfer", False, "add"),
    "transfer / chain": ("transfer", True, False),
    "transfer / chain + 2D proposals": ("transfer", True, "add"),
    # the same, the 4D tubes keeping their own names (ProposalOptions.name_weight 0; the default until 2026-12-01)
    "scratch / head + 2D proposals, 4D names kept": ("scratch", False, "keep"),
    "transfer / head + 2D proposals, 4D names kept": ("transfer", False, "keep"),
    "transfer / chain + 2D proposals, 4D names kept": ("transfer", True, "keep"),
    # the 4D names kept, and proposals renaming 4D tubes to unseen classes (ProposalOptions.rename_iou)
    "scratch / head + 2D proposals and renaming": ("scratch", False, "rename"),
    "transfer / head + 2D proposals and renaming": ("transfer", False, "rename"),
    # the 4D names kept, unseen-named proposal tubes fragments only of tubes with their name
    "scratch / head + 2D proposals, strict fragments": ("scratch", False, "strict"),
    "transfer / head + 2D proposals, strict fragments": ("transfer", False, "strict"),
    # the transferred model's 4D weights, frozen, with a new SceneLLM trained after them (AFTER)
    "transfer / chain, SmolLM2": ("transfer-smollm2", True, False),
    "transfer / chain, tiny LLM after": ("transfer-tiny", True, False),
    "transfer / single-turn chain, tiny LLM after": ("transfer-single", True, False),
    "transfer / chain, tiny LLM after, pretrained on 2D": ("transfer-tiny-2d", True, False),
    # the transferred model trained again with its weights averaged over the last steps (VARIANTS)
    "transfer, weight average / head": ("transfer-avg", False, False),
    "transfer, weight average / head + 2D proposals": ("transfer-avg", False, "add"),
    "transfer, weight average / chain": ("transfer-avg", True, False),
    # the transferred model trained again without deep supervision (the presets' default since v0.17)
    "transfer, last layer only / head": ("transfer-last", False, False),
    "transfer, last layer only / head + 2D proposals": ("transfer-last", False, "add"),
    "transfer, last layer only / chain": ("transfer-last", True, False),
    # both 4D models trained again with their mask losses on more sampled points per frame (VARIANTS)
    "scratch, 8192 points / head": ("scratch-dense", False, False),
    "scratch, 8192 points / head + 2D proposals, 4D names kept": ("scratch-dense", False, "keep"),
    "transfer, 8192 points / head": ("transfer-dense", False, False),
    "transfer, 8192 points / head + 2D proposals, 4D names kept": ("transfer-dense", False, "keep"),
    # the transferred model trained again with its transferred tensors at a tenth of the learning rate (VARIANTS)
    "transfer, transferred parts at lr / 10 / head": ("transfer-slow", False, False),
    "transfer, transferred parts at lr / 10 / head + 2D proposals": ("transfer-slow", False, "add"),
    # RGB video (docs/video.md): the same scenes as the synthetic PVSG copy, scored by evaluate-video
    "video scratch / head": ("video-scratch", False, False),
    "video transfer / head": ("video-transfer", False, False),
    "video transfer / chain": ("video-transfer", True, False),
    "video transfer / head + 2D proposals": ("video-transfer", False, "add"),
}
PROPOSALS = {  # ProposalOptions changed from the defaults, per kind of row
    "add": {},  # the defaults: new tubes for what the 4D model lacks, the core's names mixed into the 4D tubes'
    "keep": {"name_weight": 0.0},  # new tubes only, the 4D tubes' names left as the 4D model gave them
    "rename": {"name_weight": 0.0, "rename_iou": 0.25},  # and 4D tubes renamed to unseen classes, at the value tried
    "strict": {"name_weight": 0.0, "strict_unseen_fragments": True},  # and unseen-named tubes kept inside others
}
DIFFERENCES = {  # name: (a, b), reported as a - b paired by seed
    "transfer - scratch (head)": ("transfer / head", "scratch / head"),
    "transfer - scratch (head + 2D proposals)": ("transfer / head + 2D proposals", "scratch / head + 2D proposals"),
    "chain - head (transfer)": ("transfer / chain", "transfer / head"),
    "2D proposals, head (transfer)": ("transfer / head + 2D proposals", "transfer / head"),
    "2D proposals, chain (transfer)": ("transfer / chain + 2D proposals", "transfer / chain"),
    "core's names in 4D tubes, head (scratch)": (
        "scratch / head + 2D proposals",
        "scratch / head + 2D proposals, 4D names kept",
    ),
    "core's names in 4D tubes, head (transfer)": (
        "transfer / head + 2D proposals",
        "transfer / head + 2D proposals, 4D names kept",
    ),
    "core's names in 4D tubes, chain (transfer)": (
        "transfer / chain + 2D proposals",
        "transfer / chain + 2D proposals, 4D names kept",
    ),
    "renaming, head (scratch)": (
        "scratch / head + 2D proposals and renaming",
        "scratch / head + 2D proposals, 4D names kept",
    ),
    "renaming, head (transfer)": (
        "transfer / head + 2D proposals and renaming",
        "transfer / head + 2D proposals, 4D names kept",
    ),
    "strict fragments, head (scratch)": (
        "scratch / head + 2D proposals, strict fragments",
        "scratch / head + 2D proposals, 4D names kept",
    ),
    "strict fragments, head (transfer)": (
        "transfer / head + 2D proposals, strict fragments",
        "transfer / head + 2D proposals, 4D names kept",
    ),
    "SmolLM2 - tiny LLM (chain)": ("transfer / chain, SmolLM2", "transfer / chain"),
    "SmolLM2 chain - head (transfer)": ("transfer / chain, SmolLM2", "transfer / head"),
    "SmolLM2 - tiny LLM (both after)": ("transfer / chain, SmolLM2", "transfer / chain, tiny LLM after"),
    "single-turn - two-turn (tiny, after)": (
        "transfer / single-turn chain, tiny LLM after",
        "transfer / chain, tiny LLM after",
    ),
    "single-turn chain - head (transfer)": ("transfer / single-turn chain, tiny LLM after", "transfer / head"),
    "2D-pretrained LLM chain - head (transfer)": (
        "transfer / chain, tiny LLM after, pretrained on 2D",
        "transfer / head",
    ),
    "2D-pretrained - new tiny LLM (both after)": (
        "transfer / chain, tiny LLM after, pretrained on 2D",
        "transfer / chain, tiny LLM after",
    ),
    "2D-pretrained after - joint tiny LLM (chain)": (
        "transfer / chain, tiny LLM after, pretrained on 2D",
        "transfer / chain",
    ),
    "weight average - last weights (head)": ("transfer, weight average / head", "transfer / head"),
    "weight average - last weights (chain)": ("transfer, weight average / chain", "transfer / chain"),
    "deep supervision - last layer only (head)": ("transfer / head", "transfer, last layer only / head"),
    "deep supervision - last layer only (chain)": ("transfer / chain", "transfer, last layer only / chain"),
    "8192 - 1536 points (scratch, head)": ("scratch, 8192 points / head", "scratch / head"),
    "8192 - 1536 points (scratch, head + 2D)": (
        "scratch, 8192 points / head + 2D proposals, 4D names kept",
        "scratch / head + 2D proposals, 4D names kept",
    ),
    "8192 - 1536 points (transfer, head)": ("transfer, 8192 points / head", "transfer / head"),
    "8192 - 1536 points (transfer, head + 2D)": (
        "transfer, 8192 points / head + 2D proposals, 4D names kept",
        "transfer / head + 2D proposals, 4D names kept",
    ),
    "transfer - scratch (8192 points, head)": ("transfer, 8192 points / head", "scratch, 8192 points / head"),
    "transferred parts at lr / 10 (head)": ("transfer, transferred parts at lr / 10 / head", "transfer / head"),
    "transferred parts at lr / 10 (head + 2D)": (
        "transfer, transferred parts at lr / 10 / head + 2D proposals",
        "transfer / head + 2D proposals",
    ),
    "transfer at lr / 10 - scratch (head)": ("transfer, transferred parts at lr / 10 / head", "scratch / head"),
    "transfer at lr / 10 - scratch (head + 2D)": (
        "transfer, transferred parts at lr / 10 / head + 2D proposals",
        "scratch / head + 2D proposals",
    ),
    "video: transfer - scratch (head)": ("video transfer / head", "video scratch / head"),
    "video: chain - head (transfer)": ("video transfer / chain", "video transfer / head"),
    "video: 2D proposals, head (transfer)": ("video transfer / head + 2D proposals", "video transfer / head"),
}
MODELS = ("scratch", "transfer", "transfer-avg", "transfer-last", "scratch-dense", "transfer-dense",
          "transfer-slow", "transfer-smollm2", "transfer-tiny", "transfer-single", "transfer-tiny-2d", "video-scratch",
          "video-transfer")  # fmt: skip
VARIANTS = {  # another kind trained with some Train4DConfig fields changed, all else equal (seed, data, core)
    "transfer-avg": ("transfer", {"weight_average": 0.995}),
    "transfer-last": ("transfer", {"weights": {"deep": 0.0}}),  # dict fields are merged into the kind's
    "scratch-dense": ("scratch", {"points_per_frame": 8192}),  # the mask losses on about half of each frame
    "transfer-dense": ("transfer", {"points_per_frame": 8192}),
    "transfer-slow": ("transfer", {"transfer_lr": 0.1}),  # the 2D core's tensors at a tenth of the learning rate
}
AFTER = {  # a new SceneLLM (language model, chain) on another kind's frozen 4D weights, trained in a later round
    "transfer-smollm2": ("transfer", "smollm2", "two"),
    "transfer-tiny": ("transfer", "tiny", "two"),
    "transfer-single": ("transfer", "tiny", "single"),
    "transfer-tiny-2d": ("transfer", "tiny", "two"),  # its SceneLLM first pretrained on the 2D images (LLM_2D)
}
LLM_2D = {"transfer-tiny-2d"}  # kinds whose SceneLLM starts from <out>/seed<N>/llm_2d/model (training.llm_2d)
METRICS = ["R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100", "OOV R@50", "in-vocab R@50"]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def settings(args, seed: int, llm: str = "none", chain: str = "two", steps: int | None = None):
    from spade4d.demo import DemoSettings

    steps = steps or args.steps
    return DemoSettings(preset=args.preset, seed=seed, steps=steps, steps_2d=args.steps_2d, llm=llm, chain=chain)


def train_core(job) -> str:
    """The 2D core of one seed (``<out>/seed<N>/pretrain_2d/model``), trained as the demo trains it."""
    from spade4d.demo import config_2d
    from spade4d.training.pretrain_2d import pretrain_2d

    data, out, seed, args = job
    set_threads(args.threads)
    run = out / f"seed{seed}" / "pretrain_2d"
    if not (run / "model" / "config.json").is_file():
        pretrain_2d(data / "psg" / "psg.json", data / "psg", run, config_2d(settings(args, seed)), resume=True)
    return str(run / "model")


def train_model(job) -> str:
    """One 4D model, as the demo trains it: ``scratch`` or ``transfer`` (from the seed's 2D core, with the
    SceneLLM)."""
    from spade4d.training.finetune_4d import finetune_4d

    data, out, seed, kind, args = job
    set_threads(args.threads)
    run = out / f"seed{seed}" / kind
    if kind in AFTER and not (run / "model" / "config.json").is_file():
        base = out / f"seed{seed}" / AFTER[kind][0] / "model"
        if kind in LLM_2D:
            train_llm_2d(data, out, seed, args)
        return train_llm_after(data, base, run, model_config(seed, kind, args)[0], args)
    if not (run / "model" / "config.json").is_file():
        cfg, transfer = model_config(seed, kind, args)
        video = kind.startswith("video")
        core = out / f"seed{seed}" / "pretrain_2d" / "model" if transfer else None
        where = {"fmt": "pvsg-video"} if video else {"rgb_root": data / "psg4d_gta"}
        finetune_4d(data / ("pvsg" if video else "psg4d_pc"), run, cfg, resume=True, init_from_2d=core,
                    progress=args.jobs == 1, **where)  # fmt: skip
    return str(run / "model")


def model_config(seed: int, kind: str, args):
    """The training settings of one 4D model of the sweep (a :class:`Train4DConfig`) and whether it starts from the
    seed's 2D core."""
    from spade4d.demo import config_4d, config_video

    if kind in AFTER:  # a new SceneLLM alone, on the frozen weights of the kind it names
        _, llm, chain = AFTER[kind]
        cfg = config_4d(settings(args, seed, llm, chain, args.steps_after), False, num_threads=args.threads,
                        train_only=("llm.",))  # fmt: skip
        if kind in LLM_2D:
            cfg = replace(cfg, llm_init=str(Path(args.out).resolve() / f"seed{seed}" / "llm_2d" / "model"))
        return cfg, False
    base, changes = VARIANTS.get(kind, (kind, {}))
    transfer = base.endswith("transfer")
    make = config_video if base.startswith("video") else config_4d
    cfg = make(settings(args, seed, args.llm if transfer else "none"), transfer, num_threads=args.threads)
    cfg = replace(cfg, **{k: {**getattr(cfg, k), **v} if isinstance(v, dict) else v for k, v in changes.items()})
    return cfg, transfer


def other_settings(run: Path, cfg) -> str | None:
    """Why the run already in ``run`` is not what ``cfg`` would train (the fields that differ, the thread count
    aside), or None when it matches or nothing was started there."""
    from dataclasses import asdict

    from spade4d.io import read_json

    saved = run / "train_config.json"
    if not saved.is_file():
        return None
    old, new = read_json(saved).get("train", {}), json.loads(json.dumps(asdict(cfg)))
    differ = [k for k in new if k != "num_threads" and old.get(k) != new[k]]
    if not differ:
        return None
    shown = "; ".join(f"{k}: {old.get(k)!r} there, {new[k]!r} now" for k in differ[:3])
    return f"{saved}: trained with other settings ({shown}); move it away or use another --out"


def train_llm_after(data: Path, model_dir: Path, run: Path, cfg, args) -> str:
    """A new SceneLLM (``cfg``: the kind's :func:`model_config`, whose language model and chain AFTER names)
    trained on a finished 4D model whose own weights stay frozen (``train_only`` llm.), for ``--steps-after``: every
    such row shares the 4D model, and each starts its LLM afresh (the 4D model's own SceneLLM is dropped first)."""
    from spade4d.training.finetune_4d import finetune_4d

    base = four_d_only(model_dir, run / "base_4d")
    finetune_4d(data / "psg4d_pc", run, cfg, resume=True, init_from=base, rgb_root=data / "psg4d_gta",
                progress=args.jobs == 1)  # fmt: skip
    return str(run / "model")


def train_llm_2d(data: Path, out: Path, seed: int, args) -> Path:
    """The seed's SceneLLM pretrained on the 2D images, read by the seed's 2D core (``<out>/seed<N>/llm_2d``, once):
    the tiny LLM, ``--steps-llm-2d`` steps (training.llm_2d)."""
    from spade4d.training.llm_2d import LLM2DConfig, pretrain_llm_2d

    run = out / f"seed{seed}" / "llm_2d"
    if not (run / "model" / "config.json").is_file():
        core = out / f"seed{seed}" / "pretrain_2d" / "model"
        cfg = replace(LLM2DConfig(), seed=seed, steps=args.steps_llm_2d)
        pretrain_llm_2d(data / "psg" / "psg.json", data / "psg", core, run, cfg, resume=True, progress=args.jobs == 1)
    return run / "model"


def four_d_only(model_dir: Path, where: Path) -> Path:
    """``model_dir``'s model without its SceneLLM, saved in ``where`` (once)."""
    from spade4d.models.model4d import Model4D

    if not (where / "config.json").is_file():
        model = Model4D.from_pretrained(model_dir)
        model.llm, model.config.llm = None, None
        model.save_pretrained(where)
    return where


def score_rows(job) -> dict[str, dict]:
    """Every row of one (seed, model): predictions on the test split, scored; cached per row."""
    import torch

    from spade4d.data.cameras import CameraFrames
    from spade4d.data.datasets import open_4d_dataset
    from spade4d.data.synthetic.generate import unseen_names
    from spade4d.evaluation.run import evaluate_4d_split
    from spade4d.inference.pipeline import InferenceOptions, Pipeline4D, proposal_source
    from spade4d.io import write_json
    from spade4d.models.model4d import Model4D

    data, out, seed, kind, args = job
    set_threads(args.threads)
    folder = out / f"seed{seed}" / "scores"
    rows = {r: v for r, v in ROWS.items() if v[0] == kind and (args.llm != "none" or not v[1]) and chosen(r, args)}
    todo = [r for r in rows if not (folder / f"{slug(r)}.json").is_file()]
    if todo and kind.startswith("video"):
        core = out / f"seed{seed}" / "pretrain_2d" / "model"
        score_video_rows(data, out / f"seed{seed}" / kind / "model", core, folder, {r: rows[r] for r in todo})
    elif todo:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        model = Model4D.from_pretrained(out / f"seed{seed}" / kind / "model").to(dev)
        cams = CameraFrames(data / "psg4d_gta")
        props = proposal_source(model, out / f"seed{seed}" / "pretrain_2d" / "model", cams, dev)
        if props.seen is None:  # a model saved before it recorded its training classes: the same split's
            props.seen = frozenset(open_4d_dataset("synthetic", data, "train").names_used()[0])
        defaults = props.options
        test = open_4d_dataset("synthetic", data, "test")
        for r in todo:
            _, chain, with_2d = rows[r]
            props.options = replace(defaults, **PROPOSALS.get(with_2d, {}))
            pipe = Pipeline4D(model, InferenceOptions(use_llm=chain), cams, props if with_2d else None)
            pred = folder / f"{slug(r)}.predictions.json"
            t0 = time.time()
            pipe.predict_split(test, pred, progress=False)
            m = evaluate_4d_split(test, pred, folder / f"{slug(r)}.metrics.json", progress=False,
                                  unseen=unseen_names(data)).metrics  # fmt: skip
            res = {k: m[k] for k in METRICS[:6]}
            res.update({"OOV R@50": m["oov"]["R@50"], "in-vocab R@50": m["in_vocabulary"]["R@50"]})
            res.update(oov_relations=m["oov"]["num_gt_relations"], infer_seconds=time.time() - t0)
            write_json(folder / f"{slug(r)}.json", res, indent=1)
    return {r: json.loads((folder / f"{slug(r)}.json").read_text()) for r in rows}


def chosen(row: str, args) -> bool:
    """Whether ``--rows`` asks for ``row`` (by what follows its model's name: ``head``, ``head + 2D proposals``)."""
    return args.rows is None or row.rsplit(" / ", 1)[1] in args.rows


def score_video_rows(data: Path, model_dir: Path, core: Path, folder: Path, rows: dict) -> None:
    """The rows of a video model: predictions on the synthetic PVSG copy's test videos (with the 2D core's
    proposals where the row says so), scored by evaluate-video."""
    import torch

    from spade4d.data.synthetic.generate import unseen_names
    from spade4d.data.video import PVSGVideos
    from spade4d.evaluation.video import evaluate_video_split
    from spade4d.inference.pipeline import InferenceOptions, Pipeline4D
    from spade4d.inference.video import predict_videos
    from spade4d.io import write_json
    from spade4d.models.model4d import Model4D

    model = Model4D.from_pretrained(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    test = PVSGVideos(data / "pvsg", "test")
    for r, (_, chain, with_2d) in rows.items():
        pred = folder / f"{slug(r)}.predictions.json"
        t0 = time.time()
        pipe = Pipeline4D(model, InferenceOptions(use_llm=chain), rgb_source=False)
        predict_videos(pipe, test, pred, progress=False, core_2d=core if with_2d else None)
        m = evaluate_video_split(test.pvsg, pred, folder / f"{slug(r)}.metrics.json", progress=False,
                                 unseen=unseen_names(data)).metrics  # fmt: skip
        res = {k: m[k] for k in METRICS[:6]}
        res.update({"OOV R@50": m["oov"]["R@50"], "in-vocab R@50": m["in_vocabulary"]["R@50"]})
        res.update(oov_relations=m["oov"]["num_gt_relations"], infer_seconds=time.time() - t0)
        write_json(folder / f"{slug(r)}.json", res, indent=1)


def run_all(fn, jobs: list, n: int) -> list:
    if n > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(n, len(jobs))) as pool:
            return pool.map(fn, jobs, chunksize=1)
    return [fn(j) for j in jobs]


def cell(iv: dict) -> str:
    if iv["n"] < 2:
        return f"{iv['mean']:.2f}"
    return f"{iv['mean']:.2f} ± {(iv['high'] - iv['low']) / 2:.2f}"


def tables(summary: dict, seeds: list[int]) -> str:
    head = "| | " + " | ".join(METRICS) + " |\n|" + " --- |" * (len(METRICS) + 1) + "\n"
    rows = "".join(f"| {r} | " + " | ".join(cell(v[m]) for m in METRICS) + " |\n" for r, v in summary["rows"].items())
    diffs = "".join(
        f"| {d} | " + " | ".join(cell(v[m]) + (" *" if _excludes_zero(v[m]) else "") for m in METRICS) + " |\n"
        for d, v in summary["differences"].items()
    )
    n = len(seeds)
    return (
        f"Mean ± half-width of the 95 % interval over {n} seeds ({', '.join(map(str, seeds))}).\n\n" + head + rows
        + "\nPaired differences by seed (* : the 95 % interval excludes 0).\n\n" + head + diffs
    )  # fmt: skip


def _excludes_zero(iv: dict) -> bool:
    return iv["n"] > 1 and (iv["low"] > 0 or iv["high"] < 0)


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["R@50", "mR@50", "OOV R@50"]
    rows = list(summary["rows"])
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 0.45 * len(rows) + 1.6), sharey=True)
    for ax, m in zip(axes, shown):
        for y, r in enumerate(rows):
            iv = summary["rows"][r][m]
            ax.errorbar(iv["mean"], y, xerr=[[iv["mean"] - iv["low"]], [iv["high"] - iv["mean"]]], fmt="o",
                        capsize=3, color="C0" if "proposals" not in r else "C1")  # fmt: skip
        ax.set_title(m)
        ax.set_xlim(0, 100)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), rows)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a synthetic dataset folder (spade4d make-synthetic)")
    p.add_argument("--out", required=True, help="where the runs go (kept: a second call continues)")
    p.add_argument("--preset", default="quick", help="the 4D training preset (and 2D: quick or small)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, default=None, help="4D steps (default: the preset's)")
    p.add_argument("--steps-after", type=int, default=None,
                   help="steps of a SceneLLM trained after a frozen 4D model (default: --steps)")  # fmt: skip
    p.add_argument("--steps-2d", type=int, default=None, help="steps of each 2D stage (default: the preset's)")
    p.add_argument("--steps-llm-2d", type=int, default=600,
                   help="steps of the SceneLLM's 2D pretraining (transfer-tiny-2d; default 600)")  # fmt: skip
    p.add_argument("--models", default="scratch,transfer", help="of " + ", ".join(MODELS) + " (default: the 4D two)")
    p.add_argument("--llm", default="tiny", help="the SceneLLM of the transferred model: tiny | smollm2 | none")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: 1 when --jobs > 1)")
    p.add_argument("--rows", default=None, type=lambda v: v.split(";"),
                   help="score only these rows of each model, separated by ';', by what follows the model's name in "
                        "the table ('head;head + 2D proposals;chain'; default: all)")  # fmt: skip
    p.add_argument("--report", default=None, help="report path without suffix (default: <out>/accuracy)")
    args = p.parse_args(argv)
    if args.jobs > 1 and args.threads is None:
        args.threads = 1
    data, out = Path(args.data), Path(args.out)
    if not (data / "dataset.json").is_file():
        p.error(f"{data}: no dataset.json (make one with spade4d make-synthetic)")
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    if bad := [m for m in models if m not in MODELS]:
        p.error(f"unknown model(s) {bad}: choose from {', '.join(MODELS)}")
    kinds = [(s, k) for s in seeds for k in models]
    for s, k in sorted(set(kinds) | {(s, AFTER[k][0]) for s, k in kinds if k in AFTER}):  # and what AFTER builds on
        if why := other_settings(out / f"seed{s}" / k, model_config(s, k, args)[0]):
            raise SystemExit(why)  # one line, before anything is trained
    t0 = time.time()
    run_all(train_core, [(data, out, s, args) for s in seeds], args.jobs)
    print(f"2D cores ready ({time.time() - t0:.0f} s)", flush=True)
    for later in (False, True):
        run_all(train_model, [(data, out, s, k, args) for s, k in kinds if (k in AFTER) == later], args.jobs)
    print(f"4D models ready ({time.time() - t0:.0f} s)", flush=True)
    scored = run_all(score_rows, [(data, out, s, k, args) for s, k in kinds], args.jobs)
    results: dict[str, dict[int, dict]] = {}
    for (s, _), rows in zip(kinds, scored):
        for r, v in rows.items():
            results.setdefault(r, {})[s] = v
    results = {r: results[r] for r in ROWS if r in results}
    report(results, seeds, args, data, time.time() - t0)


def trained_with(out: Path, seeds: list[int], models: list[str]) -> dict[str, list[str]]:
    """The commits each run folder of the sweep was trained with (``environment.json``, one entry per start): the
    2D core's stages and each model, by ``seed<N>/<folder>``. Runs of different code are not repeats of each other
    (docs/experiments.md, "Reproducibility")."""
    kinds = list(dict.fromkeys([AFTER[k][0] for k in models if k in AFTER] + models))
    folders = [f"pretrain_2d/{stage}" for stage in ("diffusion", "calibration", "psg")] + kinds
    return {f"seed{s}/{f}": recorded_codes(out / f"seed{s}" / f) for s in seeds for f in folders
            if (out / f"seed{s}" / f).is_dir()}  # fmt: skip


def data_line(meta: dict) -> str:
    """What the ``--data`` folder holds, so a report read elsewhere says which data it scored: the synthetic
    preset, its seed and noise, the command that makes it again, and the classes and predicates left out of 4D
    training (``dataset.json``)."""
    preset, seed, noise = meta.get("preset"), meta.get("seed"), meta.get("noise", 0.0)
    line = f"Data: `spade4d make-synthetic --preset {preset} --seed {seed}"
    line += f" --noise {noise}`" if noise else "`"
    oov = ", ".join(meta.get("oov_classes") or []) or "none"
    preds = ", ".join(meta.get("oov_predicates") or []) or "none"
    return f"{line}; out of 4D training: objects {oov}; predicates {preds}."


def report(results, seeds, args, data: Path, seconds: float) -> None:
    from spade4d.evaluation.stats import summarise_runs
    from spade4d.io import write_json

    meta = json.loads((data / "dataset.json").read_text())
    summary = summarise_runs(results, METRICS, DIFFERENCES)
    base = Path(args.report) if args.report else Path(args.out) / "accuracy"
    base.parent.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    command = "python scripts/bench_accuracy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    trained = trained_with(Path(args.out), seeds, args.models.split(","))
    info = {"command": command, "machine": machine(), "date": date, "code": code_version(), "seconds": round(seconds),
            "trained_with": trained,
            "dataset": {k: meta.get(k) for k in ("preset", "seed", "noise", "preset_values", "oov_classes",
                                                 "oov_predicates")},
            "train_preset": args.preset, "llm": args.llm, "seeds": seeds}  # fmt: skip
    write_json(base.with_suffix(".json"), {**info, **summary, "runs": results}, indent=1)
    text = tables(summary, seeds)
    took = f"{seconds / 60:.0f} min in all" if seconds >= 60 else "from runs finished earlier (their times in the JSON)"
    counts: dict[str, int] = {}
    for codes in trained.values():
        for c in codes:
            counts[c] = counts.get(c, 0) + 1
    built = ", ".join(f"{c} ({n})" for c, n in counts.items())
    head = f"`{command}`\n\n{info['machine']}, {date}, code {info['code']}, {took}.\n\n"
    head += f"Run folders trained with code: {built} (`trained_with` in the JSON).\n\n" if built else ""
    head += data_line(meta) + "\n\n"
    tmp = base.with_suffix(".md.tmp")
    tmp.write_text(head + text)
    os.replace(tmp, base.with_suffix(".md"))
    plot(summary, base.with_suffix(".png"), f"synthetic {meta.get('preset')} test split, {len(seeds)} seeds")
    print(text)
    print(f"wrote {base.with_suffix('.json')}, .md and .png")


if __name__ == "__main__":
    main()
