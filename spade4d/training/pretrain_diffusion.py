"""The embedded default backbone: a tiny text-conditioned UNet trained as a denoiser (epsilon prediction,
diffusers ``DDPMScheduler``) on the 2D images of a PSG-layout dataset, captioned from their scene graphs
("person sitting on chair, cup on table, floor"), conditioned on MiniLM token states.

Token grounding. A large text-to-image model learns where words are from billions of captions; a tiny one trained
on a few hundred synthetic images does not (measured: every word's cross-attention map is the same map, chance
level in the mask). So, as TokenCompose does (Wang et al., CVPR 2024, "TokenCompose: Text-to-Image Diffusion with
Token-level Supervision"), the denoising loss is joined by a grounding loss on the cross-attention maps of the
caption's object words, using the instance masks the dataset already has:

* token loss: ``(1 - attention mass inside the word's mask / total mass)^2``, per word and layer;
* pixel loss: binary cross-entropy between each pixel's attention to the word (summed over its tokens) and
  the word's mask (coverage >= 0.5).

``grounding_weight = 0`` trains on the denoising loss alone.

:func:`attention_localisation` checks that the trained UNet's cross-attention maps find the named objects: for
each object word of a test caption, the share of the word's attention that falls inside the object's mask
against the mask's share of the image (1 = chance), and how often the map's peak lies inside the mask.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spade4d.io import write_json
from spade4d.models.calibration import AttentionCapture, lora_disabled, map_hw
from spade4d.models.diffusion_backbone import BackboneConfig, DiffusionBackbone
from spade4d.training.images2d import ImageSample, ImageSet
from spade4d.training.loop import (
    LoopSettings,
    TrainError,
    cosine_warmup,
    finish_stage,
    make_accelerator,
    train_loop,
)


@dataclass
class DiffusionTrainConfig:
    steps: int = 500
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 20
    caption_dropout: float = 0.1  # empty caption sometimes, as for classifier-free guidance
    grounding_weight: float = 1.0  # token loss on object words' cross-attention (0: denoising loss only)
    grounding_pixel_weight: float = 0.1  # pixel (BCE) loss, relative to the same maps
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    mixed_precision: str = "no"
    backbone: dict = field(default_factory=dict)  # BackboneConfig overrides


DIFFUSION_PRESETS = {
    "quick": DiffusionTrainConfig(),
    "small": DiffusionTrainConfig(steps=3000, batch_size=16, backbone={"block_out_channels": [48, 96, 128]}),
}


def diffusion_preset(name: str, config=None, overrides=(), **flags) -> DiffusionTrainConfig:
    """The ``name`` preset (configs/pretrain_diffusion/<name>.yaml), then the YAML ``config``, then ``key=value``
    ``overrides`` (``backbone.*`` checked against :class:`BackboneConfig`), then the non-None ``flags``."""
    from spade4d.config import preset_config

    nested = {"backbone": BackboneConfig}
    return preset_config(DiffusionTrainConfig, DIFFUSION_PRESETS, name, config, overrides, nested, **flags)


def pretrain_diffusion(
    psg_json: str | os.PathLike,
    coco_root: str | os.PathLike,
    out: str | os.PathLike,
    cfg: DiffusionTrainConfig,
    resume: bool = False,
    progress: bool = True,
    stop_after: int = 0,
) -> Path | None:
    """Train the tiny UNet on the train split; writes ``out/model`` (a backbone folder) and returns it.
    ``stop_after``: stop at this step of the schedule, checkpointed, with no model saved (returns None)."""
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler

    out = Path(out)
    acc = make_accelerator(out, cfg.mixed_precision, find_unused=False)
    set_seed(cfg.seed)
    bcfg = BackboneConfig.from_dict({**BackboneConfig().to_dict(), **cfg.backbone})
    train = ImageSet(psg_json, coco_root, "train", bcfg.image_size, bcfg.image_size)
    if len(train) == 0:
        raise TrainError(f"{psg_json}: the train split has no images with relations")
    bcfg.vocabulary = list(train.classes)
    backbone = DiffusionBackbone.tiny(bcfg, seed=cfg.seed)
    unet = backbone.unet
    noise_sched = DDPMScheduler.from_config(backbone.scheduler_config())
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_warmup(cfg.steps, cfg.warmup))
    unet, opt, sched = acc.prepare(unet, opt, sched)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_config.json", {"train": asdict(cfg), "backbone": bcfg.to_dict()})
    texts: dict[int, tuple] = {}
    targets: dict = {}  # grounding targets per (image, caption)

    def step_fn(step: int, k: int):
        rng = np.random.default_rng([cfg.seed, step, acc.process_index, k])
        idx = rng.integers(len(train), size=cfg.batch_size).tolist()
        images, samples = train.batch(idx)
        captions = ["" if rng.random() < cfg.caption_dropout else s.caption for s in samples]
        for i, c in zip(idx, captions):
            if (i, c) not in texts:
                h, m, w = backbone.encode_text([c])
                texts[(i, c)] = (h[0], m[0], w[0])
        cond = torch.stack([texts[(i, c)][0] for i, c in zip(idx, captions)]).to(acc.device)
        mask = torch.stack([texts[(i, c)][1] for i, c in zip(idx, captions)]).to(acc.device)
        x0 = backbone.to_model_space(images.to(acc.device))
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        noise = torch.randn(x0.shape, generator=gen).to(x0)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(x0),), generator=gen).to(acc.device)
        xt = noise_sched.add_noise(x0, noise, t)
        ground = cfg.grounding_weight > 0 or cfg.grounding_pixel_weight > 0
        with AttentionCapture(acc.unwrap_model(unet)) if ground else contextlib.nullcontext() as cap:
            pred = unet(xt, t, encoder_hidden_states=cond, encoder_attention_mask=mask).sample
        terms = {"loss_noise": F.mse_loss(pred.float(), noise.float())}
        if ground:
            words = [texts[(i, c)][2] for i, c in zip(idx, captions)]
            tok_loss, pix_loss = grounding_losses(cap.maps(), samples, words, bcfg.image_size, targets)
            terms.update(loss_token=cfg.grounding_weight * tok_loss, loss_pixel=cfg.grounding_pixel_weight * pix_loss)
        return terms

    settings = LoopSettings(
        cfg.steps, 1, 1.0, cfg.log_every, cfg.checkpoint_every, cfg.keep_checkpoints, stop_after=stop_after
    )
    step, history = train_loop(acc, unet, opt, sched, out, settings, step_fn, "pretrain-diffusion", resume, progress)
    backbone.unet = acc.unwrap_model(unet)
    finished = step >= cfg.steps
    finish_stage(acc, backbone, history, out, "diffusion pretraining (noise MSE)", save=finished)
    acc.wait_for_everyone()
    return out / "model" if finished else None


def _first_word(label: str) -> str:
    """The caption word an object is found by: the first word of its class name."""
    return label.replace("_", " ").split()[0].lower()


def word_masks(
    words: list[str], labels: list[str], masks: torch.Tensor, hw: tuple[int, int]
) -> list[tuple[list[int], torch.Tensor]]:
    """For each object word of a caption: the token indices of that word (every occurrence) and the union of the
    masks of the objects it names, area-resampled to ``hw`` (coverage fractions)."""
    groups: dict[str, list[int]] = {}
    for g, label in enumerate(labels):
        groups.setdefault(_first_word(label), []).append(g)
    out = []
    for word, objs in groups.items():
        toks = [i for i, w in enumerate(words) if w == word]
        union = masks[objs].float().amax(0)
        if toks and union.sum() > 0:
            out.append((toks, F.adaptive_avg_pool2d(union[None, None], hw)[0, 0]))
    return out


def grounding_losses(
    maps: dict[str, torch.Tensor],
    samples: list[ImageSample],
    words: list[list[str]],
    image_hw: tuple[int, int],
    cache: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token and pixel grounding losses (module docstring) averaged over every (layer, image, object word).
    Layers of one resolution are handled together; ``cache`` keeps each image's word targets across steps."""
    cache = {} if cache is None else cache
    by_size: dict[int, list[torch.Tensor]] = {}
    for m in maps.values():
        by_size.setdefault(m.shape[1], []).append(m)
    tok, pix = [], []
    for n, ms in by_size.items():
        hw = map_hw(n, image_hw)
        att = torch.stack(ms).float()  # (layers, B, N, L)
        for b, s in enumerate(samples):
            key = (s.image_id, tuple(words[b]), hw)
            if key not in cache:
                wm = word_masks(words[b], s.labels, s.masks, hw)
                sel = torch.zeros(att.shape[-1], len(wm))
                for j, (toks, _) in enumerate(wm):
                    sel[toks, j] = 1.0
                target = torch.stack([t.flatten() for _, t in wm], 1) if wm else torch.zeros(n, 0)
                cache[key] = (sel, target)
            sel, target = (x.to(att) for x in cache[key])
            if sel.shape[1] == 0:
                continue
            share = att[:, b] @ sel  # (layers, N, W): each pixel's attention to each object word
            inside = (share * target).sum(1) / share.sum(1).clamp_min(1e-8)
            tok.append(((1 - inside) ** 2).flatten())
            # ``share`` is a probability, not a logit: BCE on it in float32, outside autocast (which refuses it)
            with torch.autocast(att.device.type, enabled=False):
                bce = F.binary_cross_entropy(share.float().clamp(1e-6, 1 - 1e-6),
                                             (target >= 0.5).float().expand_as(share), reduction="none")  # fmt: skip
            pix.append(bce.mean(1).flatten())
    if not tok:
        zero = sum(m.sum() for m in maps.values()) * 0 if maps else torch.zeros(())
        return zero, zero
    return torch.cat(tok).mean(), torch.cat(pix).mean()


def _word_token(words: list[str], label: str) -> int | None:
    first = _first_word(label)
    for i, w in enumerate(words):
        if w == first:
            return i
    return None


@torch.no_grad()
def attention_localisation(
    backbone: DiffusionBackbone, samples: list[ImageSample], timestep: int | None = None, adapters: bool = False
):
    """Mean over the objects named in the samples' captions (see the module docstring), on the clean image at
    ``timestep`` (default: the feature timestep), maps averaged over layers; ``adapters``: with the LoRA on
    (the calibrated student), else the base UNet."""

    backbone.eval()
    t = backbone.config.feature_timestep if timestep is None else timestep
    inside, area, peak = [], [], []
    for s in samples:
        cond, mask, words = backbone.encode_text([s.caption])
        x0 = backbone.to_model_space(s.image[None])
        base = contextlib.nullcontext() if adapters else lora_disabled(backbone.unet)
        with base, AttentionCapture(backbone.unet) as cap:
            backbone.unet_features(x0, t, cond, mask)
        maps = cap.maps()
        for g, label in enumerate(s.labels):
            tok = _word_token(words[0], label)
            if tok is None:
                continue
            acc_map = None
            for m in maps.values():
                h, w = map_hw(m.shape[1], backbone.config.image_size)
                a = m[0, :, tok].view(1, 1, h, w)
                a = F.interpolate(a, size=s.masks.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
                acc_map = a if acc_map is None else acc_map + a
            acc_map = acc_map / acc_map.sum().clamp_min(1e-8)
            gm = (s.masks[g] >= 0.5).float().to(acc_map.device)
            if gm.sum() == 0:
                continue
            inside.append(float((acc_map * gm).sum()))
            area.append(float(gm.mean()))
            peak.append(float(gm.flatten()[acc_map.flatten().argmax()]))
    if not inside:
        return {"objects": 0}
    ins, ar = np.array(inside), np.array(area)
    return {
        "objects": len(inside),
        "attention_in_mask": float(ins.mean()),
        "mask_area": float(ar.mean()),
        "lift_over_chance": float((ins / ar).mean()),
        "peak_in_mask": float(np.mean(peak)),
    }


def plot_attention(backbone: DiffusionBackbone, samples: list[ImageSample], path: Path, max_words: int = 3) -> None:
    """Images with the cross-attention map of each of their first object words (what README shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spade4d.io import atomic_path

    rows = []
    with torch.no_grad():
        for s in samples:
            cond, mask, words = backbone.encode_text([s.caption])
            with lora_disabled(backbone.unet), AttentionCapture(backbone.unet) as cap:
                backbone.unet_features(
                    backbone.to_model_space(s.image[None]), backbone.config.feature_timestep, cond, mask
                )
            maps = cap.maps()
            cols = []
            for label in dict.fromkeys(s.labels):
                tok = _word_token(words[0], label)
                if tok is None:
                    continue
                total = None
                for m in maps.values():
                    h, w = map_hw(m.shape[1], backbone.config.image_size)
                    a = F.interpolate(m[0, :, tok].view(1, 1, h, w), size=s.image.shape[-2:], mode="bilinear")[0, 0]
                    total = a if total is None else total + a
                cols.append((label, total.float().cpu().numpy()))
                if len(cols) == max_words:
                    break
            rows.append((s, cols))
    n = 1 + max(len(c) for _, c in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(2.6 * n, 2.1 * len(rows)), squeeze=False)
    for r, (s, cols) in enumerate(rows):
        axes[r, 0].imshow(s.image.permute(1, 2, 0).numpy())
        axes[r, 0].set_title(s.caption[:40], fontsize=7)
        for c in range(n):
            axes[r, c].axis("off")
        for c, (label, a) in enumerate(cols, 1):
            axes[r, c].imshow(s.image.permute(1, 2, 0).numpy())
            axes[r, c].imshow(a, cmap="jet", alpha=0.55)
            axes[r, c].set_title(f"'{label}'", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def report_attention(model_dir: Path, psg_json, coco_root, out: Path, images: int = 40) -> dict:
    """How well the trained backbone's cross-attention finds the objects its test captions name
    (:func:`attention_localisation` over the first ``images`` test images), written to
    ``out/attention_localisation.json`` with ``out/attention.png`` (the maps of four images)."""
    from spade4d.io import write_json
    from spade4d.models.diffusion_backbone import DiffusionBackbone

    bb = DiffusionBackbone.from_pretrained(model_dir)
    test = ImageSet(psg_json, coco_root, "test", bb.config.image_size, bb.config.image_size)
    samples = [test[i] for i in range(min(len(test), images))]
    loc = attention_localisation(bb, samples)
    write_json(out / "attention_localisation.json", loc, indent=1)
    plot_attention(bb, samples[:4], out / "attention.png")
    return loc
