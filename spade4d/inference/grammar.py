"""The answer grammar of chained scene-graph inference, as token automata, and the parsers of its text.

Turn 1 (objects)::

    <t2> person <obj>, <t5> chair <obj>, <t9> cup <obj>.          or  "."  (no objects)

Turn 2 (relations; objects are named ``<name>#<index in turn 1>``, spans are inclusive frame ranges)::

    <t2> person#0 sitting on <t5> chair#1 [12-30]; <t9> cup#2 on <t11> table#3 [0-5,9-14].   or  "."  (none)

``<tq>`` is a *tube pointer*: a token outside the LLM's vocabulary that points at the 4D model's query tube ``q``
(its logit is a learned match between the LLM's state and that tube's scene token; fed back, its input embedding
is that scene token). Every object starts with the tube it is read from, in increasing tube order; every object
reference in turn 2 starts with its object's pointer. Pointers render as no text, so the text the parsers read is
``person <obj>, chair <obj>.`` and ``person#0 sitting on chair#1 [12-30].``; the tubes are taken from the tokens.

Names (of objects and predicates) are free text made of lowercase word tokens: the vocabulary is open. The
automata decide, token by token, which tokens may come next so that the answer always parses: object
references are the objects turn 1 produced (never the subject again as object), span numbers lie inside the
sequence, each span ends at or after its start and starts after the previous one ends, lists stop at their
maximum length. Because a predicate and the object reference that follows it are both word tokens, the turn-2
automaton is non-deterministic: it tracks every reading of the prefix (a set of configurations) and allows the
union of their next tokens.

The parsers (:func:`parse_objects`, :func:`parse_relations`) read the same text independently of the automata and
reject anything else with an error that says which item is wrong and why; they never guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from spade4d.models.grammar_tokens import (  # noqa: F401 - the token side of the grammar, re-exported here
    OBJ,
    GrammarError,
    GrammarTokens,
    grammar_tokens,
    normalise_name,
)

_NAME = re.compile(r"^[a-z]+(?: [a-z]+)*$")


class ParseError(ValueError):
    pass


class TokenGrammar:
    """Common interface: ``allowed()`` (bool mask over the logits), ``advance(token)``, ``done``."""

    tokens: GrammarTokens

    def allowed(self) -> torch.Tensor:
        raise NotImplementedError

    def advance(self, token: int) -> None:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        raise NotImplementedError

    def _mask(self, ids=(), start: bool = False, cont: bool = False) -> torch.Tensor:
        m = torch.zeros(self.tokens.size, dtype=torch.bool)
        if cont:
            m |= self.tokens.word_cont
        elif start:
            m |= self.tokens.word_start
        if ids:
            m[list(ids)] = True
        return m


class ObjectListGrammar(TokenGrammar):
    """Turn 1: ``item (, item)* .`` or ``.``; ``item = <tq> name <obj>`` with tube pointers in increasing order
    (``item = name <obj>`` when the tokens have no pointers); names of 1..``max_name_tokens`` word tokens."""

    def __init__(self, tokens: GrammarTokens, max_objects: int, max_name_tokens: int = 4):
        if max_objects < 1 or max_name_tokens < 1:
            raise GrammarError("max_objects and max_name_tokens must be positive")
        self.tokens, self.max_objects, self.max_name = tokens, max_objects, max_name_tokens
        self.mode, self.k, self.n = "start", 0, 0
        self.names: list[list[int]] = []  # the token ids of every finished name
        self.tubes: list[int] = []  # the tube each object points at
        self._ptr = {p: q for q, p in enumerate(tokens.pointers)}

    @property
    def done(self) -> bool:
        return self.mode == "done"

    def _free_pointers(self) -> list[int]:
        last = self.tubes[-1] if self.tubes else -1
        return list(self.tokens.pointers[last + 1 :])

    def allowed(self) -> torch.Tensor:
        t = self.tokens
        end = [t.period] if self.n == 0 else []
        if self.mode == "start":
            if t.pointers:
                return self._mask(end + self._free_pointers())
            return self._mask(end, start=True)
        if self.mode == "pointed":
            return self._mask(start=True)
        if self.mode == "name":
            return self._mask([t.obj], cont=self.k < self.max_name)
        if self.mode == "after_obj":
            more = self.n < self.max_objects and (not t.pointers or bool(self._free_pointers()))
            return self._mask([t.period] + ([t.comma] if more else []))
        return self._mask()

    def advance(self, token: int) -> None:
        if not self.allowed()[token]:
            raise GrammarError(f"token {token} is not allowed in state {self.mode!r}")
        t = self.tokens
        if token in self._ptr:
            self.tubes.append(self._ptr[token])
            self.mode = "pointed"
        elif self.mode in ("start", "pointed", "name") and token not in (t.obj, t.period):
            if self.mode != "name":
                self.names.append([])
            self.mode, self.k = "name", self.k + 1
            self.names[-1].append(token)
        elif token == t.obj:
            self.mode, self.k, self.n = "after_obj", 0, self.n + 1
        elif token == t.comma:
            self.mode = "start"
        else:  # period
            self.mode = "done"


class _Trie:
    """Token sequences as nested dicts; the key ``None`` of a node holds the indices of the sequences ending there."""

    def __init__(self, seqs: list[list[int]], indices: list[int] | None = None):
        self.root: dict = {}
        for i, s in zip(indices if indices is not None else range(len(seqs)), seqs):
            node = self.root
            for tok in s:
                node = node.setdefault(tok, {})
            node.setdefault(None, set()).add(i)

    @staticmethod
    def children(node: dict) -> list[int]:
        return [k for k in node if k is not None]

    @staticmethod
    def terminal(node: dict) -> bool:
        return None in node


class RelationGrammar(TokenGrammar):
    """Turn 2: ``rel (; rel)* .`` or ``.``; ``rel = REF PRED REF [a-b(,a-b)*]``.

    ``refs``: the token ids of every object reference (``<t2> " person#0"``), in object order; ``num_frames``:
    spans lie in ``[0, num_frames - 1]``."""

    def __init__(
        self,
        tokens: GrammarTokens,
        refs: list[list[int]],
        num_frames: int,
        max_relations: int = 50,
        max_pred_tokens: int = 4,
    ):
        if num_frames < 1:
            raise GrammarError("num_frames must be positive")
        if len({tuple(r) for r in refs}) != len(refs):
            raise GrammarError("object references must be distinct")
        self.tokens, self.T = tokens, num_frames
        self.max_rel, self.max_pred = max_relations, max_pred_tokens
        self.subj_trie = _Trie(refs)
        # the object of a relation is any reference but its subject
        self.obj_tries = [
            _Trie([r for j, r in enumerate(refs) if j != s], [j for j in range(len(refs)) if j != s])
            for s in range(len(refs))
        ]
        self.n_rel = 0
        self.configs: list[tuple] = [("start",)] if len(refs) >= 2 else [("end",)]
        self._numbers: dict[tuple[int, int], _Trie] = {}

    def _number_trie(self, lo: int) -> _Trie:
        key = (lo, self.T)
        if key not in self._numbers:
            self._numbers[key] = _Trie([self.tokens.encode_number(n) for n in range(lo, self.T)])
        return self._numbers[key]

    @property
    def done(self) -> bool:
        return any(c[0] == "done" for c in self.configs)

    # allowed next tokens of one configuration: (ids, word_start, word_cont)
    def _next(self, c: tuple) -> tuple[list[int], bool, bool]:
        t = self.tokens
        kind = c[0]
        if kind in ("start", "end"):
            first = self.n_rel == 0
            ids = [t.period] if (first or kind == "end") else []
            if kind == "start":
                ids += _Trie.children(self.subj_trie.root)
            return ids, False, False
        if kind == "subj":  # ("subj", node)
            node = c[1]
            ids = _Trie.children(node)
            return ids, _Trie.terminal(node), False
        if kind == "pred":  # ("pred", k, s)
            _, k, s = c
            ids = _Trie.children(self.obj_tries[s].root)
            return ids, False, k < self.max_pred
        if kind == "obj":  # ("obj", node, s)
            node = c[1]
            ids = _Trie.children(node)
            if _Trie.terminal(node):
                ids = ids + [t.lbracket]
            return ids, False, False
        if kind == "num":  # ("num", node, lo, role, a): role "a" (span start) or "b" (span end of start a)
            _, node, lo, role, a = c
            ids = list(_Trie.children(node))
            if _Trie.terminal(node):
                value = lo + min(node[None])
                if role == "a":
                    ids.append(t.dash)
                else:
                    ids.append(t.rbracket)
                    if value + 1 < self.T:
                        ids.append(t.comma)
            return ids, False, False
        if kind == "after":
            return [t.period] + ([t.semicolon] if self.n_rel < self.max_rel else []), False, False
        return [], False, False

    def allowed(self) -> torch.Tensor:
        m = torch.zeros(self.tokens.size, dtype=torch.bool)
        for c in self.configs:
            ids, start, cont = self._next(c)
            if cont:
                m |= self.tokens.word_cont
            elif start:
                m |= self.tokens.word_start
            if ids:
                m[ids] = True
        return m

    def _step(self, c: tuple, tok: int) -> list[tuple]:
        t = self.tokens
        kind = c[0]
        out: list[tuple] = []
        if kind in ("start", "end"):
            if tok == t.period and (self.n_rel == 0 or kind == "end"):
                out.append(("done",))
            if kind == "start" and tok in self.subj_trie.root:
                out.append(("subj", self.subj_trie.root[tok]))
        elif kind == "subj":
            node = c[1]
            if tok in node:
                out.append(("subj", node[tok]))
            if _Trie.terminal(node) and bool(t.word_start[tok]):
                out.append(("pred", 1, min(node[None])))
        elif kind == "pred":
            _, k, s = c
            root = self.obj_tries[s].root
            if tok in root:
                out.append(("obj", root[tok], s))
            if k < self.max_pred and bool(t.word_cont[tok]):
                out.append(("pred", k + 1, s))
        elif kind == "obj":
            node = c[1]
            if tok in node:
                out.append(("obj", node[tok], c[2]))
            if _Trie.terminal(node) and tok == t.lbracket:
                out.append(("num", self._number_trie(0).root, 0, "a", -1))
        elif kind == "num":
            _, node, lo, role, a = c
            if tok in node:
                out.append(("num", node[tok], lo, role, a))
            elif _Trie.terminal(node):
                value = lo + min(node[None])
                if role == "a" and tok == t.dash:
                    out.append(("num", self._number_trie(value).root, value, "b", value))
                elif role == "b" and tok == t.comma and value + 1 < self.T:
                    out.append(("num", self._number_trie(value + 1).root, value + 1, "a", -1))
                elif role == "b" and tok == t.rbracket:
                    out.append(("after",))
        elif kind == "after":
            if tok == t.period:
                out.append(("done",))
            elif tok == t.semicolon and self.n_rel < self.max_rel:
                out.append(("start",))
        return out

    def advance(self, token: int) -> None:
        new: list[tuple] = []
        finished = False
        for c in self.configs:
            for n in self._step(c, token):
                if n[0] == "after" and c[0] == "num":
                    finished = True
                if n not in new:
                    new.append(n)
        if not new:
            raise GrammarError(f"token {token} is not allowed here")
        if finished:
            self.n_rel += 1
        self.configs = new


class SingleTurnGrammar(TokenGrammar):
    """The single-turn variant: the turn-1 list, then (after its ``.``) the turn-2 list over those objects.
    ``make_refs(names, tubes)`` gives the reference tokens of the listed objects."""

    def __init__(self, tokens: GrammarTokens, make_refs, num_frames: int, max_objects: int, **kw):
        self.tokens = tokens
        self.objects = ObjectListGrammar(tokens, max_objects, kw.pop("max_name_tokens", 4))
        self.make_refs, self.T, self.kw = make_refs, num_frames, kw
        self.relations: RelationGrammar | None = None

    @property
    def done(self) -> bool:
        return self.relations is not None and self.relations.done

    def allowed(self) -> torch.Tensor:
        return (self.relations or self.objects).allowed()

    def advance(self, token: int) -> None:
        if self.relations is not None:
            self.relations.advance(token)
            return
        self.objects.advance(token)
        if self.objects.done:
            self.relations = RelationGrammar(
                self.tokens, self.make_refs(self.objects.names, self.objects.tubes), self.T, **self.kw
            )


class GrammarLogitsProcessor:
    """A transformers-style logits processor: tokens the grammar forbids get ``-inf``."""

    def __init__(self, grammar: TokenGrammar):
        self.grammar = grammar

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        allowed = self.grammar.allowed().to(scores.device)
        if not allowed.any():
            raise GrammarError("the grammar allows no token here (the answer is complete)")
        return scores.masked_fill(~allowed[: scores.shape[-1]], float("-inf"))


# --- parsers ------------------------------------------------------------------------------------------------
def _body(text: str, what: str) -> str | None:
    s = text.strip()
    if not s.endswith("."):
        raise ParseError(f"{what}: the answer must end with '.', got {text[-30:]!r}")
    s = s[:-1].strip()
    return s or None


def parse_objects(text: str) -> list[str]:
    """``"person <obj>, chair <obj>."`` -> ``["person", "chair"]``; ``"."`` -> ``[]``."""
    body = _body(text, "object list")
    if body is None:
        return []
    names = []
    for i, item in enumerate(body.split(",")):
        m = re.fullmatch(r"\s*([a-z]+(?: [a-z]+)*)\s*" + re.escape(OBJ) + r"\s*", item)
        if not m:
            raise ParseError(f"object list: item {i} {item.strip()!r} is not '<name> {OBJ}' (lowercase words)")
        names.append(m.group(1))
    return names


@dataclass
class ParsedRelation:
    subject: int
    predicate: str
    object: int
    spans: list[tuple[int, int]]


def parse_relations(text: str, refs: list[str], num_frames: int) -> list[ParsedRelation]:
    """``"person#0 sitting on chair#1 [12-30]; ..."`` -> relations over the objects named by ``refs``
    (``"person#0"``, ...); ``"."`` -> ``[]``."""
    body = _body(text, "relation list")
    if body is None:
        return []
    by_len = sorted(range(len(refs)), key=lambda i: -len(refs[i]))
    out = []
    for i, item in enumerate(body.split(";")):
        where = f"relation {i} {item.strip()!r}"
        m = re.fullmatch(r"\s*(.+?)\s*\[([^\]]*)\]\s*", item)
        if not m:
            raise ParseError(f"{where}: expected '<subject> <predicate> <object> [a-b]'")
        triple, span_text = m.group(1), m.group(2)
        subj = next((j for j in by_len if triple.startswith(refs[j] + " ")), None)
        if subj is None:
            raise ParseError(f"{where}: does not start with a known object ({', '.join(refs)})")
        rest = triple[len(refs[subj]) + 1 :]
        obj = next((j for j in by_len if rest.endswith(" " + refs[j])), None)
        if obj is None:
            raise ParseError(f"{where}: does not end with a known object ({', '.join(refs)})")
        pred = rest[: -len(refs[obj]) - 1].strip()
        if not _NAME.match(pred):
            raise ParseError(f"{where}: predicate {pred!r} is not lowercase words")
        if obj == subj:
            raise ParseError(f"{where}: subject and object are the same object")
        spans = []
        for part in span_text.split(","):
            sm = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", part)
            if not sm:
                raise ParseError(f"{where}: span {part!r} is not 'a-b'")
            a, b = int(sm.group(1)), int(sm.group(2))
            if not 0 <= a <= b < num_frames:
                raise ParseError(f"{where}: span {a}-{b} is outside frames 0-{num_frames - 1} or reversed")
            spans.append((a, b))
        out.append(ParsedRelation(subj, pred, obj, spans))
    return out


def render(tokenizer, ids: list[int], obj_id: int, pointers: bool = False) -> str:
    """Decode answer tokens; ``<obj>`` (not in the tokenizer) is written as the text ``" <obj>"``; tube pointers
    (the ids after it) as nothing, or with ``pointers`` as ``"<tq>"`` (for people; the parsers do not read it)."""
    parts, run = [], []
    for i in ids:
        if i >= obj_id:
            parts.append(tokenizer.decode(run) if run else "")
            if i == obj_id:
                parts.append(" " + OBJ)
            elif pointers:
                parts.append(f" <t{i - obj_id - 1}>")
            run = []
        else:
            run.append(i)
    if run:
        parts.append(tokenizer.decode(run))
    return "".join(parts)
