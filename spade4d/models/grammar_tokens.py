"""The token side of the answer grammar (spade4d.inference.grammar): the token ids its automata use and the way
names are written. The SceneLLM encodes its training answers with these, so they live with the models."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

OBJ = "<obj>"
_WORD = re.compile(r"^ ?[a-z]+$")


class GrammarError(ValueError):
    pass


def normalise_name(name: str) -> str:
    """A class or predicate name as the answers write it: lowercase words of letters, one space apart."""
    words = re.sub(r"[^a-z]+", " ", name.lower()).split()
    if not words:
        raise GrammarError(f"name {name!r} has no letters")
    return " ".join(words)


@dataclass
class GrammarTokens:
    """Token ids the automata use. ``size`` is the number of logits (the LM's vocabulary, ``<obj>``, the tube
    pointers and the never-chosen scene-summary slot); ``pointers[q]`` points at tube ``q`` (none: no pointers)."""

    size: int
    obj: int
    comma: int
    period: int
    semicolon: int
    hash: int
    lbracket: int
    rbracket: int
    dash: int
    digits: tuple[int, ...]
    word_start: torch.Tensor  # (size,) bool: " word" tokens (a name's first token)
    word_cont: torch.Tensor  # (size,) bool: " word" or "word" tokens (the rest of a name)
    pointers: tuple[int, ...] = ()

    def encode_name(self, tokenizer, name: str) -> list[int]:
        ids = tokenizer.encode(" " + normalise_name(name), add_special_tokens=False)
        if not ids or not self.word_start[ids[0]] or not all(self.word_cont[i] for i in ids[1:]):
            raise GrammarError(f"name {name!r} does not tokenize into word tokens: {ids}")
        return ids

    def encode_number(self, n: int) -> list[int]:
        return [self.digits[int(c)] for c in str(int(n))]


def _single(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise GrammarError(f"the tokenizer splits {text!r} into {len(ids)} tokens; the grammar needs one")
    return ids[0]


@functools.lru_cache(maxsize=4)
def _word_masks(tokenizer, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.zeros(size, dtype=torch.bool)
    cont = torch.zeros(size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for i in range(len(tokenizer)):
        if i in special:
            continue
        s = tokenizer.decode([i])
        if _WORD.match(s):
            cont[i] = True
            start[i] = s.startswith(" ")
    return start, cont


def grammar_tokens(tokenizer, obj_id: int, size: int, pointers: tuple[int, ...] = ()) -> GrammarTokens:
    start, cont = _word_masks(tokenizer, size)
    lb = tokenizer.encode(" [", add_special_tokens=False)
    return GrammarTokens(
        size=size,
        obj=obj_id,
        comma=_single(tokenizer, ","),
        period=_single(tokenizer, "."),
        semicolon=_single(tokenizer, ";"),
        hash=_single(tokenizer, "#"),
        lbracket=lb[0] if len(lb) == 1 else _single(tokenizer, "["),
        rbracket=_single(tokenizer, "]"),
        dash=_single(tokenizer, "-"),
        digits=tuple(_single(tokenizer, str(d)) for d in range(10)),
        word_start=start,
        word_cont=cont,
        pointers=tuple(pointers),
    )
