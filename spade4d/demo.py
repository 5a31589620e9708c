"""The end-to-end demo as function calls: synthetic data -> 2D pretraining (tiny diffusion UNet, LoRA calibration,
2D scene graphs) -> 4D fine-tuning initialised from the 2D core (its relation graph transformer and scene-graph
head) jointly with the SceneLLM -> inference (the chain, and the relation head alone) -> 4D R@K / mR@K -> renders.

Every stage that has finished is kept: running the demo again continues where it stopped (``retrain`` starts
over). ``spade4d demo`` is this module's :func:`run_demo`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    preset: str = "quick"  # quick | small | full (the synthetic world and the 4D training)
    seed: int = 0
    workers: int | None = None  # data generation processes
    steps: int | None = None  # 4D training steps (None: the preset's)
    steps_2d: int | None = None  # steps of each 2D stage: diffusion, calibration, scene graphs
    retrain: bool = False
    use_2d: bool = True  # False: the 4D model from scratch
    lift_2d: bool = False  # also lift the 2D core's pixel features onto the points
    llm: str = "tiny"  # tiny | smollm2 | a local causal-LM folder | none
    chain: str = "two"
    video: bool = False  # the video path instead: RGB video -> video model -> video R@K (docs/video.md)


def synthetic_is_current(out: Path, preset: str, seed: int) -> bool:
    """Whether ``out`` holds a complete synthetic dataset of this preset, seed and layout version."""
    from spade4d.data.synthetic.generate import LAYOUT_VERSION

    manifest = out / "dataset.json"
    if not manifest.is_file():
        return False
    m = json.loads(manifest.read_text())
    return m.get("preset") == preset and m.get("seed") == seed and m.get("layout_version") == LAYOUT_VERSION


def _fresh(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def demo_data(out: Path, s: DemoSettings, log=logger.info) -> Path:
    from spade4d.data.synthetic.generate import generate

    data = out / "synthetic"
    if synthetic_is_current(data, s.preset, s.seed):
        log(f"[demo] synthetic dataset already complete in {data}")
        return data
    log(f"[demo] generating the {s.preset} synthetic dataset into {data}")
    generate(data, preset=s.preset, seed=s.seed, workers=s.workers, overwrite=True)
    _fresh(out / "finetune_4d")  # a model of other data
    return data


def config_2d(s: DemoSettings):
    """The 2D core's training settings for ``s`` (``steps_2d``: every 2D stage's steps)."""
    from spade4d.training.pretrain_2d import preset_2d

    n = s.steps_2d
    cfg = preset_2d(s.preset if s.preset in ("quick", "small") else "small", steps=n, seed=s.seed, calibration_steps=n)
    if n is not None:
        cfg.diffusion = {**cfg.diffusion, "steps": n}
    return cfg


def config_4d(s: DemoSettings, from_2d: bool, **flags):
    """The 4D model's training settings for ``s``; ``from_2d``: initialised from the 2D core (its relation graph
    transformer and head); ``flags``: more :class:`Train4DConfig` fields."""
    from spade4d.training.finetune_4d import preset, scene_llm_settings

    return preset(
        s.preset,
        steps=s.steps,
        seed=s.seed,
        lift=True if from_2d and s.lift_2d else None,
        transfer_parts=("rgt", "head") if from_2d else None,
        llm=scene_llm_settings(s.llm, s.chain),
        **flags,
    )


def config_video(s: DemoSettings, from_2d: bool, **flags):
    """The video model's training settings (docs/video.md): the 4D settings with 4x4-pixel cells, augmentation in
    the image plane only and, from the 2D core, its pixel features lifted onto the cells."""
    from spade4d.training.finetune_4d import video_settings

    return video_settings(config_4d(s, from_2d, **flags), from_2d=from_2d)


def demo_core_2d(out: Path, data: Path, s: DemoSettings, log=logger.info) -> Path | None:
    from spade4d.training.pretrain_2d import pretrain_2d

    if not s.use_2d:
        return None
    run2d = out / "pretrain_2d"
    core2d = run2d / "model"
    if (core2d / "config.json").is_file() and not s.retrain:
        log(f"[demo] 2D core found in {core2d} (pass --retrain to train again)")
        return core2d
    if s.retrain:
        _fresh(run2d)
    log(f"[demo] 2D pretraining (diffusion UNet -> LoRA calibration -> 2D scene graphs) into {run2d}")
    pretrain_2d(data / "psg" / "psg.json", data / "psg", run2d, config_2d(s), resume=True)
    _fresh(out / "finetune_4d")  # a 4D model from another 2D core
    return core2d


def demo_model_4d(out: Path, data: Path, core2d: Path | None, s: DemoSettings, log=logger.info) -> Path:
    from spade4d.training.finetune_4d import finetune_4d

    run = out / "finetune_4d"
    model_dir = run / "model"
    if (model_dir / "config.json").is_file() and not s.retrain:
        log(f"[demo] trained model found in {model_dir} (pass --retrain to train again)")
        return model_dir
    log(f"[demo] fine-tuning the 4D model ({s.preset} preset) into {run}")
    resume = (run / "checkpoints").is_dir() and not s.retrain
    if s.retrain:
        _fresh(run)
    cfg = config_4d(s, core2d is not None)
    res = finetune_4d(data / "psg4d_pc", run, cfg, resume=resume, init_from_2d=core2d, rgb_root=data / "psg4d_gta")
    log(f"model saved to {res.model_dir}; loss curve {run / 'loss.png'}")
    return model_dir


def demo_score(out: Path, data: Path, model_dir: Path, log=logger.info, core2d: Path | None = None) -> dict[str, dict]:
    """Predictions on the test split by the relation head (``predictions_test.json``), with a SceneLLM the chain
    (``predictions_test_llm.json``) and with the 2D core the head joined by the core's tubes for unseen objects
    (``predictions_test_2d.json``), scored against the synthetic layout; the head's also against PSG4D's own
    point-cloud layout (no stuff points)."""
    import torch

    from spade4d.data.cameras import CameraFrames
    from spade4d.data.datasets import dataset_notes, model_rgb_source, open_4d_dataset
    from spade4d.data.synthetic.generate import unseen_names
    from spade4d.evaluation.run import evaluate_4d_split
    from spade4d.inference.pipeline import InferenceOptions, Pipeline4D, proposal_source
    from spade4d.models.model4d import Model4D

    test = open_4d_dataset("synthetic", data, "test")
    model = Model4D.from_pretrained(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    rgb = model_rgb_source(model, "synthetic", data)
    runs = [("", False, None)] + ([("_llm", True, None)] if model.llm is not None else [])
    if core2d is not None:
        cams = CameraFrames(data / "psg4d_gta")
        runs.append(("_2d", False, proposal_source(model, core2d, cams, model.device)))
    scores = {}
    for suffix, use_llm, proposals in runs:
        pred = out / f"predictions_test{suffix}.json"
        how = "the SceneLLM chain (objects, then relations)" if use_llm else "the 4D model's relation head"
        how += " with the 2D core's tubes for unseen objects" if proposals else ""
        log(f"[demo] running the model on the test split: {how}")
        pipe = Pipeline4D(model, InferenceOptions(use_llm=use_llm), rgb, proposals)
        path, n = pipe.predict_split(test, pred)
        log(f"wrote {path} ({n} sequences)")
        log(f"[demo] scoring {pred.name} (4D R@K / mR@K)")
        rep = evaluate_4d_split(
            test, pred, out / f"metrics_test{suffix}.json", label=_label("synthetic"), unseen=unseen_names(data)
        )
        log(rep.text(dataset_notes(test)))
        scores[pred.name] = rep.metrics
    log("[demo] scoring the same predictions against PSG4D's own point-cloud layout (psg4d-gta-pc: no stuff points)")
    gta = open_4d_dataset("psg4d-gta-pc", data / "psg4d_gta_pc", "test")
    rep = evaluate_4d_split(
        gta, out / "predictions_test.json", out / "metrics_test_psg4d_gta_pc.json", label=_label("psg4d-gta-pc")
    )
    log(rep.text(dataset_notes(gta)))
    return scores


def _label(fmt: str) -> dict:
    return {"format": fmt, "split": "test"}


def demo_render(out: Path, data: Path, log=logger.info) -> None:
    from spade4d.data.datasets import open_4d_dataset
    from spade4d.viz.render import render_sequence, sequence_to_render

    log("[demo] rendering a test sequence: prediction and ground truth")
    test = open_4d_dataset("spade4d-pc", data / "psg4d_pc", "test")
    for name, pred in (("render_pred", out / "predictions_test.json"), ("render_gt", None)):
        points, graph, title, gt = sequence_to_render(test, pred=pred)
        res = render_sequence(points, graph, out / name, title=title, progress=False, ground_truth=gt)
        log(f"wrote {len(res['frames'])} frames and {res['gif']}")


def demo_video(out: Path, data: Path, core2d: Path | None, s: DemoSettings, log=logger.info) -> dict[str, dict]:
    """The video path: a video model fine-tuned on ``<data>/pvsg`` (from the 2D core when there is one), run on
    the test videos (``predictions_video_test.json``; with the 2D core also joined by its tubes for unseen objects,
    ``predictions_video_test_2d.json``), scored (``metrics_video_test*.json``) and one test video rendered
    (``render_video/``)."""
    from spade4d.data.synthetic.generate import unseen_names
    from spade4d.data.video import PVSGVideos
    from spade4d.evaluation.video import evaluate_video_split
    from spade4d.inference.pipeline import Pipeline4D
    from spade4d.inference.video import predict_videos
    from spade4d.models.model4d import Model4D
    from spade4d.training.finetune_4d import finetune_4d

    run = out / "finetune_video"
    if not (run / "model" / "config.json").is_file() or s.retrain:
        log(f"[demo] fine-tuning the video model on {data / 'pvsg'} into {run}")
        if s.retrain:
            _fresh(run)
        cfg = config_video(s, core2d is not None)
        finetune_4d(data / "pvsg", run, cfg, resume=(run / "checkpoints").is_dir(), init_from_2d=core2d,
                    fmt="pvsg-video")  # fmt: skip
    model = Model4D.from_pretrained(run / "model")
    test = PVSGVideos(data / "pvsg", "test")
    scores, reports = {}, {}
    for suffix, core in [("", None)] + ([("_2d", core2d)] if core2d is not None else []):
        pred = out / f"predictions_video_test{suffix}.json"
        how = " joined by the 2D core's tubes for unseen objects" if core is not None else ""
        log(f"[demo] running the video model on the test videos: its relation head{how}")
        predict_videos(Pipeline4D(model, rgb_source=False), test, pred, core_2d=core)
        rep = evaluate_video_split(test.pvsg, pred, out / f"metrics_video_test{suffix}.json", unseen=unseen_names(data))
        log(rep.text())
        scores[pred.name], reports[suffix] = rep.metrics, rep
    from spade4d.viz.video import render_video

    rep = reports[""]
    vid = test.video_ids()[0]
    i = test.index_of(vid)
    graph = rep.predictions.get(vid, test.num_frames(i), test.size(i))
    res = render_video(lambda t: test.frame_source.get(vid, t)[0], graph, out / "render_video", progress=False)
    log(f"wrote {len(res['frames'])} frames and {res['gif']}")
    return scores


class StageClock:
    """Wall-clock seconds of each demo stage (a stage found done counts its check only), logged at the end and
    written with the host's description as ``<out>/<name>.json``, so a demo's time can be compared with another
    machine's stage by stage (docs/experiments.md, "Demo timings and scores": the same steps took 2.5 times as
    long on a slower host)."""

    def __init__(self, now=time.time):
        self.now = now  # the clock read (seconds)
        self.start = self.last = now()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = self.now()
        self.stages[stage] = round(now - self.last, 1)
        self.last = now

    def report(self, out: Path, name: str, log=logger.info) -> Path:
        import torch

        from spade4d.io import write_json
        from spade4d.provenance import environment

        total = round(self.last - self.start, 1)
        log("[demo] time by stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.stages.items()))
        host = {  # what a training run records (version, commit, Python, torch, platform), plus the CPU's speed class
            **environment(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        }
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.start))
        record = {"date": date, "seconds": total, "stages": self.stages, "host": host}
        return write_json(out / f"{name}.json", record, indent=2)


def run_demo(out: str | os.PathLike, settings: DemoSettings = DemoSettings(), log=logger.info) -> dict[str, dict]:
    """The whole demo into ``out``; returns the test metrics of each prediction file. The time of each stage is
    written to ``timings.json`` (``timings_video.json`` with ``settings.video``)."""
    out = Path(out)
    clock = StageClock()
    data = demo_data(out, settings, log)
    clock.lap("data")
    core2d = demo_core_2d(out, data, settings, log)
    clock.lap("2D core")
    if settings.video:
        scores = demo_video(out, data, core2d, settings, log)
        clock.lap("video model, inference, scoring and render")
    else:
        model_dir = demo_model_4d(out, data, core2d, settings, log)
        clock.lap("4D training")
        scores = demo_score(out, data, model_dir, log, core2d)
        clock.lap("inference and scoring")
        demo_render(out, data, log)
        clock.lap("renders")
    _summary(scores, log)
    clock.report(out, "timings_video" if settings.video else "timings", log)
    log(f"[demo] done in {clock.last - clock.start:.0f}s; outputs under {out}")
    return scores


def _summary(scores: dict[str, dict], log) -> None:
    log("[demo] test split, in short (OOV: the relations with a name training never showed):")
    for name, m in scores.items():
        oov = m.get("oov", {}).get("R@50", float("nan"))
        log(f"  {name:31s} R@50 {m['R@50']:6.2f}  mR@50 {m['mR@50']:6.2f}  OOV R@50 {oov:6.2f}")
