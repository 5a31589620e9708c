"""Inversion-guided calibration of the diffusion UNet's cross-attention with LoRA.

The teacher is the frozen UNet. A training image is DDIM-inverted (diffusers ``DDIMInverseScheduler``) and then
denoised again under a relation prompt ("<subject> <predicate> <object>"); the cross-attention maps of every
``attn2`` layer are captured along the way (a custom attention processor) and averaged over the denoising steps.
Following the image's own inversion trajectory is what makes these maps sharp: the UNet attends where the named
things are in *this* image. The student is the same UNet with peft LoRA on the cross-attention projections
(``to_q/to_k/to_v/to_out``); in a single pass on the clean image at the feature timestep its maps are pulled
towards the teacher's (L1 on the per-token spatial distributions). Only LoRA (and the prompt MLP) train.
The teacher is the student with its adapters disabled, so no second copy of the UNet is held.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from torch import nn

LORA_TARGETS = r".*attn2\.(to_q|to_k|to_v|to_out\.0)"
LORA_WEIGHTS = "adapter_model.safetensors"


class CalibrationError(ValueError):
    pass


# --- attention capture --------------------------------------------------------------------------------------------
class CaptureCrossAttnProcessor:
    """Plain attention (the arithmetic of diffusers' ``AttnProcessor``) that also records the head-averaged
    attention probabilities ``(B, N_pixels, L_tokens)`` into ``store[name]``."""

    def __init__(self, store: dict[str, list[torch.Tensor]], name: str):
        self.store, self.name = store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, seq = context.shape[:2]
        attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B * heads, N, L)
        self.store.setdefault(self.name, []).append(probs.view(batch, attn.heads, *probs.shape[1:]).mean(1))
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionCapture:
    """``with AttentionCapture(unet) as cap: unet(...)`` -> ``cap.maps()``: for every cross-attention layer, its
    maps ``(B, N, L)`` averaged over the passes made inside the block. Processors are restored on exit."""

    def __init__(self, unet: nn.Module):
        self.unet = unet
        self.store: dict[str, list[torch.Tensor]] = {}
        self._saved = None

    @property
    def names(self) -> list[str]:
        return [n.removesuffix(".processor") for n in self.unet.attn_processors if ".attn2." in n]

    def __enter__(self) -> AttentionCapture:
        self._saved = dict(self.unet.attn_processors)
        procs = {
            n: CaptureCrossAttnProcessor(self.store, n.removesuffix(".processor")) if ".attn2." in n else p
            for n, p in self._saved.items()
        }
        self.unet.set_attn_processor(procs)
        return self

    def __exit__(self, *exc) -> None:
        self.unet.set_attn_processor(self._saved)

    def reset(self) -> None:
        self.store.clear()

    def maps(self) -> dict[str, torch.Tensor]:
        return {n: torch.stack(v).mean(0) for n, v in self.store.items()}


def map_hw(n_pixels: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of an attention map with ``n_pixels`` rows for a UNet input of ``image_hw``."""
    H, W = image_hw
    f = round((H * W / n_pixels) ** 0.5)
    if (H // f) * (W // f) != n_pixels:
        raise CalibrationError(f"cannot place {n_pixels} attention rows on a {H}x{W} input")
    return H // f, W // f


# --- DDIM inversion and sampling ----------------------------------------------------------------------------------
def _eps(unet, x, t, cond, cond_mask):
    return unet(x, t, encoder_hidden_states=cond, encoder_attention_mask=cond_mask).sample


def _num_used(steps: int, strength: float) -> int:
    if steps < 1 or not 0.0 < strength <= 1.0:
        raise CalibrationError(f"need steps >= 1 and 0 < strength <= 1, got {steps}, {strength}")
    return max(1, round(steps * strength))


@torch.no_grad()
def ddim_invert(
    unet, x0, cond, steps: int, scheduler_config: dict, cond_mask=None, strength: float = 1.0
) -> torch.Tensor:
    """Deterministic DDIM inversion of clean samples ``x0`` (``DDIMInverseScheduler``): the first
    ``strength`` of a ``steps``-step schedule, so ``strength=1`` reaches the last timestep."""
    from diffusers import DDIMInverseScheduler

    sched = DDIMInverseScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    x = x0
    for t in sched.timesteps[: _num_used(steps, strength)]:
        x = sched.step(_eps(unet, x, t, cond, cond_mask), t, x).prev_sample
    return x


@torch.no_grad()
def ddim_sample(
    unet, xT, cond, steps: int, scheduler_config: dict, cond_mask=None, strength: float = 1.0
) -> torch.Tensor:
    """Deterministic DDIM sampling (eta = 0): the last ``strength`` of a ``steps``-step schedule, the inverse of
    :func:`ddim_invert` with the same arguments."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    x = xT
    for t in sched.timesteps[len(sched.timesteps) - _num_used(steps, strength) :]:
        x = sched.step(_eps(unet, x, t, cond, cond_mask), t, x, eta=0.0).prev_sample
    return x


# --- LoRA ---------------------------------------------------------------------------------------------------------
def add_lora(unet: nn.Module, rank: int = 4, alpha: float | None = None) -> int:
    """peft LoRA on every cross-attention projection; freezes the base. Returns the trainable parameter count."""
    from peft import LoraConfig

    if has_lora(unet):
        raise CalibrationError("this UNet already has a LoRA adapter")
    cfg = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=LORA_TARGETS, lora_dropout=0.0)
    unet.add_adapter(cfg)
    for n, p in unet.named_parameters():
        p.requires_grad_("lora_" in n)
    return sum(p.numel() for p in unet.parameters() if p.requires_grad)


def has_lora(unet: nn.Module) -> bool:
    return any("lora_" in n for n, _ in unet.named_parameters())


def lora_parameters(unet: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in unet.named_parameters() if "lora_" in n]


@contextlib.contextmanager
def lora_disabled(unet: nn.Module):
    """The frozen teacher: the same UNet with its adapters switched off (no-op without LoRA)."""
    if not has_lora(unet):
        yield unet
        return
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()


def save_lora(unet: nn.Module, folder: str | os.PathLike) -> Path:
    """The adapter in peft's format: ``adapter_config.json`` + ``adapter_model.safetensors``."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = unet.peft_config["default"]
    cfg.save_pretrained(str(folder))
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(state, str(folder / LORA_WEIGHTS))
    return folder


def load_lora(unet: nn.Module, folder: str | os.PathLike) -> None:
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file() or not (folder / LORA_WEIGHTS).is_file():
        raise CalibrationError(f"{folder}: not a LoRA adapter folder (needs adapter_config.json and {LORA_WEIGHTS})")
    try:
        cfg = LoraConfig.from_pretrained(str(folder))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CalibrationError(f"{folder / 'adapter_config.json'}: {e}") from e
    unet.add_adapter(cfg)
    result = set_peft_model_state_dict(unet, load_file(str(folder / LORA_WEIGHTS)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise CalibrationError(f"{folder / LORA_WEIGHTS}: tensors that match no LoRA layer: {unexpected[:3]}")
    for n, p in unet.named_parameters():
        p.requires_grad_("lora_" in n)


# --- teacher and student maps -------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_maps(backbone, images: torch.Tensor, prompts: list[str], steps: int = 20, strength: float = 0.5):
    """Invert ``images`` with the frozen UNet (the first ``strength`` of a ``steps``-step DDIM schedule: partial
    inversion keeps the image's layout and the round trip accurate), denoise under ``prompts`` and average each
    cross-attention layer's maps over the denoising steps. Returns ``(maps {layer: (B, N, L)}, token_mask (B, L), words,
    reconstruction_error)`` where the error is the mean absolute difference of the re-sampled input."""
    unet = backbone.unet
    x0 = backbone.to_model_space(images)
    cond, mask, words = backbone.encode_text(prompts)
    sched = backbone.scheduler_config()
    with lora_disabled(unet):
        xT = ddim_invert(unet, x0, cond, steps, sched, mask, strength)
        with AttentionCapture(unet) as cap:
            x_rec = ddim_sample(unet, xT, cond, steps, sched, mask, strength)
    err = float((x_rec - x0).abs().mean())
    token_mask = mask & torch.tensor([[bool(w) for w in row] for row in words], device=mask.device)
    return cap.maps(), token_mask, words, err


def student_maps(backbone, images: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor) -> dict:
    """Cross-attention maps of the (LoRA) student in one pass on the clean input at the feature timestep."""
    x0 = backbone.to_model_space(images)
    with AttentionCapture(backbone.unet) as cap:
        backbone.unet_features(x0, backbone.config.feature_timestep, cond, cond_mask)
    return cap.maps()


def calibration_loss(student: dict, teacher: dict, token_mask: torch.Tensor) -> torch.Tensor:
    """L1 between the per-token spatial distributions (each token's map normalised over pixels), averaged over
    layers and the tokens in ``token_mask`` (B, L); scaled by the pixel count so a map's total error is O(1)."""
    if set(student) != set(teacher):
        raise CalibrationError(f"layers differ: {sorted(set(student) ^ set(teacher))}")
    losses = []
    w = token_mask.float()
    for name, s in student.items():
        t = teacher[name].to(s)
        s = s / s.sum(1, keepdim=True).clamp_min(1e-8)
        t = t / t.sum(1, keepdim=True).clamp_min(1e-8)
        per_token = (s - t).abs().sum(1)  # (B, L)
        losses.append((per_token * w).sum() / w.sum().clamp_min(1))
    return torch.stack(losses).mean()
