"""The ``spade4d`` command: a parser per sub-command and thin commands that call the library.

Every sub-command is a function taking parsed arguments; errors a user can fix (bad arguments, missing or
malformed files) are printed as one line and exit with status 2, never as a traceback. What a command does lives
in the library (:mod:`spade4d.demo`, :mod:`spade4d.evaluation.run`, :class:`spade4d.Pipeline4D`, the training
modules), so Python users get the same behaviour without the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from spade4d import cli_types as T
from spade4d.data.datasets import FORMATS_4D
from spade4d.data.own_frames import AXES, UNITS
from spade4d.version import __version__

log = logging.getLogger("spade4d")

# Errors that carry a message meant for the user; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, OSError, KeyError)
# ---------------------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from spade4d.demo import DemoSettings, run_demo

    same = {f.name: getattr(args, f.name) for f in fields(DemoSettings) if f.name != "use_2d"}
    run_demo(args.out, DemoSettings(use_2d=not args.no_2d, **same))
    return 0


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from spade4d.data.synthetic.generate import generate, synthetic_preset

    t0 = time.time()
    custom = args.config is not None or args.overrides
    generate(
        args.out,
        preset=synthetic_preset(args.preset, args.config, args.overrides) if custom else args.preset,
        seed=args.seed,
        workers=args.workers,
        noise=args.noise,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    log.info(f"wrote {args.out} ({args.preset}, seed {args.seed}) in {time.time() - t0:.1f}s")
    return 0


def cmd_evaluate_4d(args: argparse.Namespace) -> int:
    from spade4d.data.datasets import dataset_notes, open_4d_dataset
    from spade4d.evaluation.run import evaluate_4d_split

    options, unseen = T.metric_options(args)
    ds = open_4d_dataset(args.format, args.root, args.split, args.ann)
    label = {"format": args.format, "split": args.split}
    if unseen is None and args.format == "synthetic":
        from spade4d.data.synthetic.generate import unseen_names

        unseen = unseen_names(args.root)
    report = evaluate_4d_split(ds, args.pred, args.out, options, label, progress=not args.quiet, unseen=unseen)
    log.info(report.text(dataset_notes(ds)))
    from spade4d.viz.render import evaluation_timeline

    out = Path(args.out)
    timeline = evaluation_timeline(
        ds, report.predictions, out.with_name(f"{out.stem}_timeline.png"), args.timeline_video
    )
    if timeline is not None:
        log.info(f"wrote {timeline} (relation timeline of one sequence)")
    return 0


def cmd_evaluate_2d(args: argparse.Namespace) -> int:
    from spade4d.data.psg import PSGDataset
    from spade4d.evaluation import Options2D
    from spade4d.evaluation.run import evaluate_2d_split

    options = Options2D(
        ks=args.ks,
        graph_constraint=not args.no_graph_constraint,
        skip_empty=args.skip_empty,
        single_mask_per_object=not args.per_triplet_masks,
        iou_type=args.iou_type,
    )
    ds = PSGDataset(args.psg_json, args.coco_root, split=args.split)
    log.info(evaluate_2d_split(ds, args.pred, args.out, options, progress=not args.quiet).text())
    return 0


def cmd_finetune_4d(args: argparse.Namespace) -> int:
    res = run_finetune_4d(args)
    if res.model_dir is not None:
        log.info(f"model saved to {res.model_dir}; loss curve {Path(args.out) / 'loss.png'}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from spade4d.training.reproduce import rerun

    rep = rerun(args.run, args.steps, args.out, args.tolerance, progress=not args.quiet)
    print(rep.table())
    bad = rep.mismatches
    if bad:
        worst = max(bad, key=lambda r: r.difference)
        print(f"spade4d reproduce: {rep.history_file(bad[0])}: {len(bad)} of {len(rep.rows)} logged "
              f"values differ by step {rep.steps} (first at step {bad[0].step}: {bad[0].key} {bad[0].logged:.8g} "
              f"logged, {bad[0].repeated:.8g} now; largest: {worst.key} at step {worst.step})"
              + (f"; the run was trained with other code or libraries: {', '.join(rep.changed)}" if rep.changed
                 else ""), file=sys.stderr)  # fmt: skip
        return 1
    how = "bit for bit" if rep.identical else f"within a relative {args.tolerance:g}"
    log.info(f"{len(rep.rows)} logged values of the first {rep.steps} steps repeat {how}")
    return 0


def run_finetune_4d(args: argparse.Namespace):
    """``finetune-4d`` on parsed arguments; returns the :class:`~spade4d.training.finetune_4d.TrainResult` (the
    launcher script ``scripts/finetune_4d.py`` reads this rank's model from it)."""
    from dataclasses import replace

    from spade4d.data.datasets import point_cloud_root, rgb_root
    from spade4d.training.finetune_4d import finetune_4d, preset, scene_llm_settings

    flags = ("steps", "lr", "warmup", "seed", "clips_per_step", "checkpoint_every", "mixed_precision", "transfer_parts",
             "llm_init")  # fmt: skip
    cfg = preset(
        args.preset,
        args.config,
        args.overrides,
        lift=True if args.lift_2d else None,
        llm=scene_llm_settings(args.llm, args.chain, args.llm_lora_r, args.relation_order),
        **{k: getattr(args, k) for k in flags},
    )
    if args.up_axis is not None and not args.augment:
        raise SystemExit("spade4d finetune-4d: --up-axis is an augmentation setting: pass --augment too")
    if args.augment:
        cfg = replace(cfg, augment={} if args.up_axis is None else {"up_axis": args.up_axis})
    return finetune_4d(
        point_cloud_root(args.format, args.root),
        args.out,
        cfg,
        fmt="spade4d-pc" if args.format == "synthetic" else args.format,
        annotation=args.ann,
        split=args.split,
        resume=args.resume,
        init_from=args.init_from,
        progress=not args.quiet,
        init_from_2d=args.init_from_2d,
        rgb_root=rgb_root(args.format, args.root, args.rgb_root),
        stop_after=args.stop_after,
    )


def cmd_recalibrate_bn(args: argparse.Namespace) -> int:
    from spade4d.data.datasets import model_rgb_source, open_4d_dataset
    from spade4d.models.model4d import Model4D
    from spade4d.training.batchnorm import batchnorm_layers, recalibrate_batchnorm

    model = Model4D.from_pretrained(args.model)
    ds = open_4d_dataset(args.format, args.root, args.split, args.ann)
    n = recalibrate_batchnorm(
        model,
        ds,
        window=args.window,
        max_windows=args.windows or None,
        rgb_source=model_rgb_source(model, args.format, args.root, args.rgb_root),
        progress=not args.quiet,
    )
    out = model.save_pretrained(args.out or args.model)
    layers = len(batchnorm_layers(model))
    log.info(f"{layers} BatchNorm layers recalibrated over {n} windows of {args.split!r}; saved to {out}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from spade4d.training.validation import export_checkpoint

    out = export_checkpoint(args.run, args.checkpoint, args.out)
    log.info(f"model folder {out} (from {args.checkpoint or 'the newest checkpoint'} of {args.run})")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from spade4d.data.datasets import model_rgb_source, open_4d_dataset
    from spade4d.inference.pipeline import InferenceOptions, Pipeline4D
    from spade4d.models.model4d import Model4D

    device = T.device(args.device)  # refused before anything is loaded
    named = ("window", "samples", "rescore", "name_rescore", "spans", "complete", "scores")
    same = {k: getattr(args, k) for k in named}
    options = InferenceOptions(use_llm=args.use_llm, closed_vocabulary=not args.open_vocabulary, **same)
    model = Model4D.from_pretrained(args.model)
    if args.classes or args.predicates:
        model.set_vocabulary(args.classes, args.predicates)
    model.to(device)
    if model.config.video:  # a video model: a PVSG-layout --root or a video file as --input (docs/video.md)
        from spade4d.cli_video import infer_video

        return infer_video(args, Pipeline4D(model, options, rgb_source=False))
    if args.input:
        if args.core_2d:
            raise ValueError(
                "--core-2d needs RGB frames with cameras in the PSG4D-GTA layout: pass --root, not --input"
            )
        return _infer_own_frames(args, Pipeline4D(model, options))
    if not args.root:
        raise ValueError("pass --root (a dataset split) or --input (a folder of your own frames)")
    ds = open_4d_dataset(args.format, args.root, args.split, args.ann)
    pipe = Pipeline4D(
        model, options, model_rgb_source(model, args.format, args.root, args.rgb_root), _proposals(args, model, device)
    )
    path, n = pipe.predict_split(ds, args.out, args.video, progress=not args.quiet)
    log.info(f"wrote {path} ({n} sequences)")
    return 0


def _proposals(args: argparse.Namespace, model, device):
    """``--core-2d``'s proposal source over the split's RGB frames + cameras (None without it)."""
    if not args.core_2d:
        return None
    from spade4d.data.cameras import CameraFrames
    from spade4d.data.datasets import rgb_root
    from spade4d.inference.pipeline import proposal_source

    where = rgb_root(args.format, args.root, args.rgb_root)
    return proposal_source(model, args.core_2d, where and CameraFrames(where), device)


def _infer_own_frames(args: argparse.Namespace, pipe) -> int:
    from spade4d.data.own_frames import read_frames
    from spade4d.evaluation.predictions import write_predictions_4d

    seq = read_frames(args.input, up_axis=args.up_axis, units=args.units)
    graph = pipe(seq, seq.video_id)
    path = write_predictions_4d(args.out, [graph])
    log.info(f"wrote {path} (sequence {seq.video_id!r}: {seq.num_frames} frames, {len(graph.objects)} objects, "
          f"{len(graph.relations)} relations)")  # fmt: skip
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from spade4d.data.convert import check_out_dir, convert_rgbd, open_rgbd_source

    if args.source == "vg":
        from spade4d.data.vg_convert import vg_to_psg_json

        n = vg_to_psg_json(args.h5, args.dicts, args.image_data, args.out, progress=not args.quiet)
        log.info(f"wrote {args.out} ({n} images, box masks)")
        return 0
    out = check_out_dir(args.out)
    ds = open_rgbd_source(
        args.source,
        args.root,
        args.split,
        annotation=args.ann,
        mask_root=args.mask_root,
        depth_root=args.depth_root,
        intrinsics=args.intrinsics,
        depth_scale=args.depth_scale,
        camera_root=args.camera_root,
    )
    summary = convert_rgbd(
        ds, out, voxel_size=args.voxel_size, workers=args.workers, split_name=args.split, progress=not args.quiet
    )
    log.info(summary.describe())
    return 0


def cmd_pretrain_diffusion(args: argparse.Namespace) -> int:
    from spade4d.training.pretrain_diffusion import diffusion_preset, pretrain_diffusion, report_attention

    cfg = diffusion_preset(
        args.preset, args.config, args.overrides, steps=args.steps, seed=args.seed, batch_size=args.batch_size
    )
    psg_json, coco = _psg_paths(args)
    final = pretrain_diffusion(psg_json, coco, args.out, cfg, resume=args.resume, progress=not args.quiet)
    loc = report_attention(final, psg_json, coco, Path(args.out))
    log.info(f"backbone saved to {final}; cross-attention localisation on test captions: {loc}")
    return 0


def _psg_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.format == "synthetic":
        if not args.root:
            raise ValueError("--format synthetic needs --root (the generated dataset folder)")
        return Path(args.root) / "psg" / "psg.json", Path(args.root) / "psg"
    if not args.psg_json or not args.coco_root:
        raise ValueError("--format psg needs --psg-json and --coco-root")
    return Path(args.psg_json), Path(args.coco_root)


def cmd_pretrain_2d(args: argparse.Namespace) -> int:
    from spade4d.training.pretrain_2d import preset_2d, pretrain_2d

    cfg = preset_2d(
        args.preset,
        args.config,
        args.overrides,
        steps=args.steps,
        seed=args.seed,
        calibration_steps=args.calibration_steps,
        mixed_precision=args.mixed_precision,
    )
    if args.diffusion_steps is not None:
        cfg.diffusion = {**cfg.diffusion, "steps": args.diffusion_steps}
    psg_json, coco = _psg_paths(args)
    final = pretrain_2d(
        psg_json,
        coco,
        args.out,
        cfg,
        backbone_dir=args.backbone,
        sd15=args.sd15,
        resume=args.resume,
        progress=not args.quiet,
    )
    log.info(f"2D core saved to {final}; metrics {Path(args.out) / 'metrics_2d.json'}")
    if args.llm:  # stage 5: a SceneLLM on the 2D graphs as the core reads them (finetune-4d --llm-init)
        from spade4d.training.finetune_4d import scene_llm_settings
        from spade4d.training.llm_2d import LLM2DConfig, pretrain_llm_2d

        lcfg = LLM2DConfig(llm=scene_llm_settings(args.llm), seed=cfg.seed)
        lcfg.steps = args.llm_steps or lcfg.steps
        llm = pretrain_llm_2d(psg_json, coco, final, Path(args.out) / "llm", lcfg, args.resume, not args.quiet)
        log.info(f"SceneLLM saved to {llm}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parsers
# ---------------------------------------------------------------------------------------------------------------


def _psg_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--format", default="psg", choices=["psg", "synthetic"])
    s.add_argument("--root", default=None, help="synthetic: the generated dataset folder")
    s.add_argument("--psg-json", default=None)
    s.add_argument("--coco-root", default=None, help="folder the psg.json file names are relative to")


def _add_demo(sub) -> None:
    s = T.command(sub, cmd_demo, "demo", help="end-to-end demo on the synthetic world")
    s.add_argument("--out", default="outputs/demo")
    s.add_argument("--preset", default="quick", choices=["quick", "small", "full"])
    s.add_argument("--seed", type=T.non_negative_int, default=0)
    s.add_argument("--workers", type=T.positive_int, default=None)
    s.add_argument("--steps", type=T.positive_int, default=None, help="4D training steps (default: the preset's)")
    s.add_argument("--steps-2d", type=T.positive_int, default=None, help="steps of each 2D stage (default: preset's)")
    s.add_argument("--retrain", action="store_true", help="train again even if a model exists")
    s.add_argument("--no-2d", action="store_true", help="skip 2D pretraining: the 4D model from scratch")
    s.add_argument("--lift-2d", action="store_true", help="also lift the 2D core's pixel features onto the points")
    s.add_argument("--llm", default="tiny", help="the SceneLLM: tiny | smollm2 | a causal-LM folder | none")
    s.add_argument("--chain", default="two", choices=["two", "single"])
    s.add_argument("--video", action="store_true", help="the video path: RGB video model, video R@K (docs/video.md)")


def _add_make_synthetic(sub) -> None:
    s = T.command(sub, cmd_make_synthetic, "make-synthetic", help="generate the synthetic 4D + 2D scene-graph datasets")
    T.config_args(s, "synthetic")
    s.add_argument("--preset", default="quick", help="quick | bench | small | full (docs/synthetic.md)")
    s.add_argument("--seed", type=T.non_negative_int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--workers", type=T.positive_int, default=None, help="processes (default: CPU count, at most 4)")
    s.add_argument("--noise", type=T.non_negative_float, default=0.0, help="depth noise: 0 exact, 1 Kinect-v1-like")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def _add_convert(sub) -> None:
    s = T.command(
        sub, cmd_convert, "convert", help="convert a published dataset (RGB-D -> point-cloud layout; VG -> PSG json)"
    )
    s.add_argument("source", choices=["psg4d-gta", "psg4d-hoi", "pvsg", "vg"])
    s.add_argument("--root", help="dataset root (psg4d-gta / psg4d-hoi)")
    s.add_argument("--ann", default=None, help="annotation json (default for psg4d-gta: <root>/sailvos3d.json)")
    s.add_argument("--mask-root", default=None, help="psg4d-hoi mask root")
    s.add_argument("--depth-root", default=None, help="pvsg: <depth-root>/<video_id>/%%04d.npy depth maps")
    s.add_argument("--intrinsics", type=T.intrinsics, default=None, help="fx,fy,cx,cy (pvsg; psg4d-hoi override)")
    s.add_argument(
        "--camera-root", default=None, help="psg4d-hoi: <camera>/intrin.npy folder (default <root>/camera_params)"
    )
    s.add_argument("--split", default=None, help="convert only this split (default: every video)")
    s.add_argument("--depth-scale", type=T.positive_float, default=None, help="depth file units -> metres")
    s.add_argument("--voxel-size", type=T.positive_float, default=None, help="voxel downsampling in metres")
    s.add_argument("--workers", type=T.positive_int, default=1)
    s.add_argument("--h5", help="vg: VG-SGG-with-attri.h5")
    s.add_argument("--dicts", help="vg: VG-SGG-dicts-with-attri.json")
    s.add_argument("--image-data", help="vg: image_data.json")
    s.add_argument("--out", required=True)


def _add_finetune_4d(sub) -> None:
    s = T.command(sub, cmd_finetune_4d, "finetune-4d", help="train the 4D scene-graph model (HF accelerate; resumable)")
    T.dataset_args(s, "train")
    T.training_args(s)
    s.add_argument("--init-from", default=None, help="a saved 4D model folder to start from")
    s.add_argument("--init-from-2d", default=None, help="a 2D core (pretrain-2d's <out>/model) to transfer from")
    s.add_argument(
        "--lift-2d", action="store_true", help="with --init-from-2d: lift its pixel features onto the points"
    )
    s.add_argument("--rgb-root", default=None, help="RGB frames + cameras (GTA layout); synthetic: found itself")
    s.add_argument("--augment", action="store_true", help="rotation about the up axis, mirror, scale, colour jitter")
    s.add_argument("--up-axis", type=int, default=None, choices=[0, 1, 2], help="with --augment: the vertical axis (2)")
    s.add_argument("--llm", default=None, help="train a SceneLLM too: tiny | smollm2 | a causal-LM folder | a YAML")
    s.add_argument("--chain", default=None, choices=["two", "single"], help="SceneLLM answers in two turns or one")
    s.add_argument("--llm-lora-r", type=T.positive_int, default=None, help="SceneLLM LoRA rank (default 8)")
    s.add_argument("--relation-order", default=None, choices=["canonical", "shuffled"], help="SceneLLM answers' order")
    s.add_argument("--llm-init", default=None, help="a SceneLLM to start from (pretrain-2d --llm's <out>/llm/model)")


def _add_pretrain_diffusion(sub) -> None:
    s = T.command(
        sub,
        cmd_pretrain_diffusion,
        "pretrain-diffusion",
        help="train the tiny text-conditioned diffusion UNet (the default backbone)",
    )
    T.config_args(s, "pretrain_diffusion")
    _psg_args(s)
    s.add_argument("--out", required=True, help="run directory: checkpoints, loss.png, attention.png, model/")
    s.add_argument("--preset", default="quick", help="quick | small")
    s.add_argument("--steps", type=T.positive_int, default=None)
    s.add_argument("--batch-size", type=T.positive_int, default=None)
    s.add_argument("--seed", type=T.non_negative_int, default=None)
    s.add_argument("--resume", action="store_true")


def _add_pretrain_2d(sub) -> None:
    s = T.command(
        sub, cmd_pretrain_2d, "pretrain-2d", help="2D core: diffusion backbone, LoRA calibration, PSG training, 2D R@K"
    )
    T.config_args(s, "pretrain_2d")
    _psg_args(s)
    s.add_argument("--out", required=True, help="run directory: diffusion/, calibration/, psg/, model/ ...")
    s.add_argument("--preset", default="quick", help="quick | small | paper (GPUs, with --sd15)")
    s.add_argument("--backbone", default=None, help="a diffusion backbone folder (pretrain-diffusion's <out>/model)")
    s.add_argument("--sd15", default=None, help="a local Stable Diffusion 1.5 folder (unet/ vae/ text_encoder/ ...)")
    s.add_argument("--steps", type=T.positive_int, default=None, help="PSG-stage steps")
    s.add_argument("--calibration-steps", type=T.non_negative_int, default=None)
    s.add_argument("--diffusion-steps", type=T.positive_int, default=None)
    s.add_argument("--seed", type=T.non_negative_int, default=None)
    s.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"])
    s.add_argument("--resume", action="store_true", help="continue the interrupted stage from its checkpoint")
    s.add_argument("--llm", default=None, help="then a SceneLLM on the 2D graphs (tiny | smollm2 | folder): <out>/llm")
    s.add_argument("--llm-steps", type=T.positive_int, default=None, help="steps of that SceneLLM stage (1500)")


def _add_infer(sub) -> None:
    s = T.command(sub, cmd_infer, "infer", help="run a 4D model on a split and write a prediction file")
    s.add_argument("--model", required=True, help="a saved model folder (finetune-4d's <out>/model)")
    T.dataset_args(s, "test", required=False)
    s.add_argument(
        "--input", default=None, help="instead of --root: a folder of .ply/.pcd/.npy/.npz frames or RGB-D frames"
    )
    s.add_argument(
        "--up-axis", default=None, choices=AXES, help="--input's up axis (default z; -y for RGB-D without poses)"
    )
    s.add_argument("--units", default="m", choices=list(UNITS), help="--input's length unit (point-cloud frames)")
    s.add_argument("--video", action="append", default=None, help="only this sequence (repeatable)")
    s.add_argument("--window", type=T.positive_int, default=None, help="frames per window (default: the model's)")
    s.add_argument("--classes", type=T.names, default=None, help="comma-separated class names (open vocabulary)")
    s.add_argument("--predicates", type=T.names, default=None, help="comma-separated predicate names")
    s.add_argument(
        "--rgb-root", default=None, help="RGB frames + cameras, for --core-2d and models that lift 2D features"
    )
    s.add_argument(
        "--core-2d",
        default=None,
        help="pretrain-2d's model folder: its instance masks add the objects the 4D model misses, with their "
        "relations (needs the RGB frames: a video model's own, else the PSG4D-GTA frames; docs/open-vocabulary.md)",
    )
    how = s.add_mutually_exclusive_group()
    how.add_argument(
        "--use-llm",
        action="store_true",
        help="a model with a SceneLLM: answer through its chain (objects, then relations) instead of the relation "
        "head, the default since the chain never beat the head on the benchmark (docs/experiments.md)",
    )
    how.add_argument("--no-llm", action="store_true", help="the relation head (the default; kept for old scripts)")
    s.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one) | cpu | cuda | cuda:N")
    s.add_argument("--samples", type=T.non_negative_int, default=None, help="SceneLLM: sampled turn-2 answers")
    s.add_argument("--rescore", type=float, default=None, help="SceneLLM: relation-head weight in relation scores")
    s.add_argument("--name-rescore", type=float, default=None, help="SceneLLM: class-head weight in object names")
    s.add_argument(
        "--spans", choices=["llm", "head"], default=None, help="SceneLLM: relation frames as written or the head's"
    )
    s.add_argument(
        "--complete", choices=["none", "after", "joint", "graph"], default=None, help="SceneLLM: head relations join"
    )
    s.add_argument("--scores", choices=["decoded", "dense"], default=None, help="SceneLLM: relation scores")
    s.add_argument("--open-vocabulary", action="store_true", help="SceneLLM: its free-text names, not mapped")
    s.add_argument("--out", required=True, help="prediction file (docs/formats.md)")


def _add_recalibrate_bn(sub) -> None:
    s = T.command(
        sub,
        cmd_recalibrate_bn,
        "recalibrate-bn",
        help="a trained 4D model's BatchNorm statistics averaged over a split (finetune-4d does this itself)",
    )
    s.add_argument("--model", required=True, help="a saved model folder (finetune-4d's <out>/model)")
    T.dataset_args(s, "train")
    s.add_argument("--windows", type=T.non_negative_int, default=400, help="at most this many windows (0: all)")
    s.add_argument("--window", type=T.positive_int, default=None, help="frames per window (default: the model's)")
    s.add_argument("--rgb-root", default=None, help="RGB frames + cameras for models that lift 2D features")
    s.add_argument("--out", default=None, help="where to save (default: over --model, atomically)")


def _add_export_model(sub) -> None:
    s = T.command(sub, cmd_export_model, "export-model", help="turn a finetune-4d checkpoint into a model folder")
    s.add_argument("--run", required=True, help="the finetune-4d --out folder")
    s.add_argument("--checkpoint", default=None, help="<run>/checkpoints/step_XXXXXX (default: the newest)")
    s.add_argument("--out", default=None, help="the model folder (default: <run>/model_step_XXXXXX)")


def _add_reproduce(sub) -> None:
    what = "repeat a finetune-4d or pretrain-2d run's first steps and compare its logged losses (docs/experiments.md)"
    s = T.command(sub, cmd_reproduce, "reproduce", help=what)
    s.add_argument("--run", required=True, help="a finetune-4d or pretrain-2d --out folder (its trainer_state.json: "
                   "each stage's for pretrain-2d)")  # fmt: skip
    s.add_argument("--steps", type=T.positive_int, default=20, help="repeat this many steps (default 20)")
    s.add_argument("--tolerance", type=T.non_negative_float, default=0.0, help="allowed relative difference (0: exact)")
    s.add_argument("--out", default=None, help="where the repeat trains (default: a temporary folder, removed)")


def _add_evaluate_4d(sub) -> None:
    s = T.command(sub, cmd_evaluate_4d, "evaluate-4d", help="4D R@K / mR@K of a prediction file (docs/metrics.md)")
    s.add_argument(
        "--timeline-video", default=None, help="the sequence of <out>_timeline.png (default: the first predicted)"
    )
    T.dataset_args(s, "test", FORMATS_4D)
    s.add_argument("--pred", required=True, help="a spade4d-predictions-4d file")
    s.add_argument("--out", required=True, help="metrics JSON (a per-predicate PNG is written beside it)")
    T.metric_args(s)


def _add_evaluate_2d(sub) -> None:
    s = T.command(sub, cmd_evaluate_2d, "evaluate-2d", help="2D PSG R@K / mR@K of a prediction file (docs/metrics.md)")
    s.add_argument("--psg-json", required=True)
    s.add_argument("--coco-root", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--pred", required=True, help="a spade4d-predictions-2d file")
    s.add_argument("--out", required=True)
    s.add_argument("--no-graph-constraint", action="store_true")
    s.add_argument("--skip-empty", action="store_true", help="skip images without predictions (OpenPSG's way)")
    s.add_argument("--per-triplet-masks", action="store_true", help="a relation's own subject/object masks")
    s.add_argument("--iou-type", default="mask", choices=["mask", "box"])
    s.add_argument("--ks", type=T.ks, default=(20, 50, 100))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spade4d", description="4D panoptic scene graph generation")
    p.add_argument("--version", action="version", version=f"spade4d {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from spade4d.cli_video import add_evaluate_video, add_finetune_video
    from spade4d.cli_viz import add_render, add_view

    adders = [add for name, add in list(globals().items()) if name.startswith("_add_")]  # in the order written
    for add in adders + [add_finetune_video, add_evaluate_video, add_render, add_view]:
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    T.setup_logging(args.quiet, args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("spade4d: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("SPADE4D_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"spade4d {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
