"""One name space for class and predicate names across PSG, VG, PSG4D, PVSG and the synthetic world.

:func:`normalize_name` lower-cases, turns ``_``/``-`` into spaces, drops COCO-panoptic suffixes (``-merged``,
``-other``, ``-stuff``) and collapses spaces; then the synonym tables map known variants onto one canonical name
(``tvmonitor`` and ``television`` -> ``tv``, ``couch`` -> ``sofa``, ``next to`` -> ``beside`` ...). The tables
are the only place where such equivalences live; extend them there.

Merging classes that a dataset keeps apart (PVSG's ``adult``/``child``) is a choice: ``PERSON_ALIASES`` maps
them to ``person`` only when ``merge_person=True`` is asked for (the 2D→4D transfer wants it; a per-dataset
evaluation does not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SUFFIXES = ("merged", "other", "stuff")

CLASS_SYNONYMS: dict[str, tuple[str, ...]] = {
    "tv": ("television", "tvmonitor", "tv monitor", "tv screen", "monitor"),
    "sofa": ("couch",),
    "bicycle": ("bike",),
    "cup": ("mug", "teacup"),
    "ball": ("sports ball", "football", "soccer ball"),
    "table": ("dining table", "desk table"),
    "laptop": ("notebook computer", "laptop computer"),
    "plant": ("potted plant", "pottedplant", "houseplant", "flower pot"),
    "car": ("automobile",),
    "dog": ("puppy",),
    "cabinet": ("cupboard",),
    "floor": ("floor wood", "floor tile", "flooring"),
    "wall": ("wall brick", "wall stone", "wall tile", "wall wood"),
    "road": ("street",),
    "grass": ("lawn",),
    "box": ("carton",),
    "cart": ("shopping cart", "trolley"),
}
PERSON_ALIASES: tuple[str, ...] = ("adult", "child", "baby", "man", "woman", "boy", "girl", "people", "human")

PREDICATE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "on": ("on top of", "lying on top of", "placed on"),
    "beside": ("next to", "by", "alongside"),
    "in front of": ("infront of",),
    "over": ("above",),
    "under": ("below", "beneath", "underneath"),
    "holding": ("holds", "hold"),
    "carrying": ("carry", "carries"),
    "looking at": ("watching", "looking"),
    "sitting on": ("sit on", "sits on", "seated on"),
    "standing on": ("stand on", "stands on"),
    "walking on": ("walk on", "walks on"),
    "riding": ("ride", "rides", "riding on"),
    "chasing": ("chase", "chases", "running after"),
    "pushing": ("push", "pushes"),
    "driving on": ("drive on", "drives on", "driving"),
}


def normalize_name(name: str) -> str:
    """Case, separators and COCO suffixes only (no synonyms): ``"Wall-Other-Merged"`` -> ``"wall"``."""
    s = re.sub(r"[_\-/]+", " ", str(name).strip().lower())
    words = s.split()
    while len(words) > 1 and words[-1] in _SUFFIXES:
        words.pop()
    return " ".join(words)


def _invert(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    out = {}
    for canon, variants in table.items():
        out[normalize_name(canon)] = canon
        for v in variants:
            out[normalize_name(v)] = canon
    return out


_CLASS_MAP = _invert(CLASS_SYNONYMS)
_PRED_MAP = _invert(PREDICATE_SYNONYMS)


def canonical_class(name: str, merge_person: bool = False) -> str:
    n = normalize_name(name)
    if merge_person and n in PERSON_ALIASES:
        return "person"
    return _CLASS_MAP.get(n, n)


def canonical_predicate(name: str) -> str:
    n = normalize_name(name)
    return _PRED_MAP.get(n, n)


def unify(names: Iterable[str], kind: str = "class", merge_person: bool = False) -> dict[str, str]:
    """Map each original name to its canonical one (``kind``: class | predicate)."""
    if kind == "class":
        return {n: canonical_class(n, merge_person) for n in names}
    if kind == "predicate":
        return {n: canonical_predicate(n) for n in names}
    raise ValueError(f"kind must be 'class' or 'predicate', not {kind!r}")
