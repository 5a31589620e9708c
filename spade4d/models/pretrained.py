"""One ``save_pretrained`` / ``from_pretrained`` for every spade4d model.

A saved model is a folder: a JSON config, the model's own tensors as safetensors, the parts other code saves
(a diffusion backbone, a SceneLLM, a UNet, a LoRA adapter) in sub-folders, and a model card ``README.md`` that
says what the folder holds and how to load it. Writing is atomic (a killed save leaves the previous folder);
reading checks every file where it enters (:mod:`spade4d.models.weights`) and reports a folder that does not fit
in one line naming the file.

A model class sets the class attributes and overrides the hooks it needs:

- ``_saved_config()`` the config dict to write; ``_save_parts(tmp)`` writes the sub-folders;
- ``_from_saved(path, config, state, **kwargs)`` builds the model from them (sub-folders included); the mixin then
  loads ``state`` into it and checks that nothing is missing or left over (``skip_prefixes`` aside);
- ``_card_facts()`` the rows of the model card's table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from spade4d.io import atomic_dir
from spade4d.models.weights import WeightsError, load_weights, read_config
from spade4d.version import __version__

CARD_NAME = "README.md"


class PretrainedMixin:
    """Mixed into an ``nn.Module`` with a ``config`` attribute."""

    model_type: ClassVar[str | None] = None  # written into the config and checked on load (None: neither)
    config_name: ClassVar[str] = "config.json"
    weights_name: ClassVar[str] = "model.safetensors"
    required_dirs: ClassVar[tuple[str, ...]] = ()  # sub-folders a saved model always has
    skip_prefixes: ClassVar[tuple[str, ...]] = ()  # state entries saved elsewhere (sub-folders) or rebuilt
    error: ClassVar[type[Exception]] = ValueError  # raised, with a one-line message naming the file
    card_title: ClassVar[str] = "spade4d model"
    folder_kind: ClassVar[str | None] = None  # what a wrong folder is "not a ... folder" of (default: card_title)
    card_load: ClassVar[str] = ""  # how to load the folder, as Python

    # --- hooks ------------------------------------------------------------------------------------------------
    def _saved_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def _save_parts(self, tmp: Path) -> None:
        """Write the sub-folders (nothing by default)."""

    @classmethod
    def _from_saved(cls, path: Path, config: dict[str, Any], state: dict[str, torch.Tensor], **kwargs):
        raise NotImplementedError

    def _card_facts(self) -> list[tuple[str, str]]:
        return []

    # --- saving -----------------------------------------------------------------------------------------------
    def own_state(self) -> dict[str, torch.Tensor]:
        """The tensors this folder's weights file holds: the state dict without ``skip_prefixes``, on the CPU."""
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if not k.startswith(self.skip_prefixes)
        }

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the model folder at ``path`` atomically (an existing folder is replaced when the new one is
        complete). Returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        with atomic_dir(path, overwrite=True) as tmp:
            d = self._saved_config()
            if self.model_type is not None:
                d = {"model_type": self.model_type, **d}
            (tmp / self.config_name).write_text(json.dumps(d, indent=1))
            save_file(self.own_state(), str(tmp / self.weights_name))
            self._save_parts(tmp)
            (tmp / CARD_NAME).write_text(self.model_card(path.name), encoding="utf-8")
        return path

    def model_card(self, name: str = "model") -> str:
        """The folder's ``README.md``: what it is, how to load it, its main settings."""
        n_params = sum(p.numel() for p in self.parameters())
        n_trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        facts = [
            ("spade4d version", __version__),
            ("parameters", f"{n_params:,} ({n_trainable:,} trainable)"),
            *self._card_facts(),
        ]
        lines = [
            "---",
            "library_name: spade4d",
            "tags: [scene-graph, panoptic-segmentation, 4d, point-cloud]",
            "---",
            "",
            f"# {self.card_title}: `{name}`",
            "",
            "Written by spade4d's `save_pretrained`. The folder holds "
            f"`{self.config_name}` (settings), `{self.weights_name}` (weights)"
            + (f" and the sub-folders {', '.join(f'`{d}/`' for d in self._card_dirs())}" if self._card_dirs() else "")
            + ". Move or copy it as a whole.",
            "",
        ]
        if self.card_load:
            lines += ["```python", self.card_load.format(name=name), "```", ""]
        lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts]
        return "\n".join(lines) + "\n"

    def _card_dirs(self) -> list[str]:
        return list(self.required_dirs)

    # --- loading ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs):
        """The model saved in the folder ``path`` (``kwargs`` go to the class's ``_from_saved``)."""
        path = Path(path)
        cfg_file, w_file = path / cls.config_name, path / cls.weights_name
        needs = [cls.config_name, cls.weights_name, *(f"{d}/" for d in cls.required_dirs)]
        if not cfg_file.is_file() or not w_file.is_file() or not all((path / d).is_dir() for d in cls.required_dirs):
            raise cls.error(f"{path}: not a {cls.folder_kind or cls.card_title} folder (needs {', '.join(needs)})")
        try:
            config = cls._read_saved_config(cfg_file)
            state = load_weights(w_file)
        except WeightsError as e:
            raise cls.error(str(e)) from None
        model = cls._from_saved(path, config, state, **kwargs)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(cls.skip_prefixes)]
        if missing or unexpected:
            raise cls.error(f"{w_file}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model

    @classmethod
    def _read_saved_config(cls, cfg_file: Path) -> dict[str, Any]:
        d = read_config(cfg_file, cls.model_type)
        d.pop("model_type", None)
        return d
