"""2D -> 4D weight transfer.

The query layers (cross-attention, self-attention, norms, FFN), the query embeddings, the mask embedding, the
relation graph transformer and the scene-graph head have the same names and shapes in the 2D and the 4D model;
they move. The class/predicate embeddings move row by row for the names both vocabularies share: the same name, or
failing that the same canonical name of :mod:`spade4d.vocab` (case, separators, COCO suffixes and synonyms:
PSG's ``wall-other-merged`` gives its row to a 4D ``wall``, ``couch`` to ``sofa``, VG's ``man`` to ``person``,
``next to`` to ``beside``). Everything
else (the sparse encoder, the temporal aggregators, the temporal relation convolution, the dense semantic
head) is new. The report lists every 4D tensor as moved, new, or skipped (same name, other shape).
"""

from __future__ import annotations

import torch

from spade4d.models.model4d import Model4D
from spade4d.models.spade2d import Spade2D
from spade4d.vocab import canonical_class, canonical_predicate

PARTS = {
    "decoder": ("decoder.layers.", "decoder.query", "decoder.null_key", "decoder.mask_embed."),
    "rgt": ("rgt.",),
    "head": ("head.",),
}
TRANSFERRED_PREFIXES = tuple(p for v in PARTS.values() for p in v)
SHARED_ARCHITECTURE = ("dim", "num_queries", "decoder_layers", "heads", "ffn_dim", "rgt_layers", "text_dim")


class TransferError(ValueError):
    pass


def model4d_overrides(model2d: Spade2D) -> dict:
    """The 4D config values that must equal the 2D model's for its tensors to fit."""
    return {k: getattr(model2d.config, k) for k in SHARED_ARCHITECTURE}


@torch.no_grad()
def transfer_2d_to_4d(model2d: Spade2D, model4d: Model4D, parts: tuple[str, ...] = tuple(PARTS)) -> dict:
    """Copy the dimension-invariant tensors of ``model2d`` into ``model4d`` in place; returns the report.
    ``parts``: which of ``decoder``, ``rgt``, ``head`` move (default all)."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise TransferError(f"unknown transfer parts {unknown}; choose from {sorted(PARTS)}")
    prefixes = tuple(x for p in parts for x in PARTS[p])
    src = model2d.state_dict()
    dst = model4d.state_dict()
    moved, new, skipped = [], [], []
    for name, t in dst.items():
        if name.startswith("lift."):
            continue  # the lifted backbone + pixel decoder are copies of the 2D model's, reported below
        if name.startswith(prefixes) and name in src:
            if src[name].shape == t.shape:
                t.copy_(src[name])
                moved.append(name)
            else:
                skipped.append({"name": name, "shape_2d": list(src[name].shape), "shape_4d": list(t.shape)})
        elif name not in ("class_embed", "predicate_embed"):
            new.append(name)
    vocab = {}
    for buf, names2d, names4d, canon in (
        ("class_embed", model2d.config.classes, model4d.config.classes, _canonical_class),
        ("predicate_embed", model2d.config.predicates, model4d.config.predicates, canonical_predicate),
    ):
        if src[buf].shape[1] != dst[buf].shape[1]:
            raise TransferError(f"{buf}: text dimension {src[buf].shape[1]} (2D) vs {dst[buf].shape[1]} (4D)")
        rows = match_names(names2d, names4d, canon)
        for j, i in rows.items():
            dst[buf][j] = src[buf][i]
        vocab[buf] = {
            "rows_moved": len(rows),
            "rows_4d": len(names4d),
            "matched_by_canonical_name": {names4d[j]: names2d[i] for j, i in rows.items() if names4d[j] != names2d[i]},
            "names_only_in_4d": [n for j, n in enumerate(names4d) if j not in rows],
        }
    model4d.load_state_dict(dst)
    n_moved = sum(dst[n].numel() for n in moved)
    return {
        "moved": moved,
        "new": new,
        "skipped": skipped,
        "vocabulary": vocab,
        "parameters_moved": n_moved,
        "parameters_new": sum(dst[n].numel() for n in new),
        "lifted_2d_features": model4d.lift is not None,
    }


def _canonical_class(name: str) -> str:
    return canonical_class(name, merge_person=True)  # VG's man/woman/child and PVSG's adult/child are persons


def match_names(names2d: list[str], names4d: list[str], canonical) -> dict[int, int]:
    """4D row -> 2D row for every 4D name the 2D vocabulary shares: the same name first, else the first 2D name
    with the same ``canonical`` form."""
    exact = {n: i for i, n in enumerate(names2d)}
    by_canon: dict[str, int] = {}
    for i, n in enumerate(names2d):
        by_canon.setdefault(canonical(n), i)
    rows = {}
    for j, n in enumerate(names4d):
        i = exact.get(n, by_canon.get(canonical(n)))
        if i is not None:
            rows[j] = i
    return rows


def format_transfer(report: dict) -> str:
    groups: dict[str, int] = {}
    for n in report["moved"]:
        g = ".".join(n.split(".")[:2])
        groups[g] = groups.get(g, 0) + 1
    lines = [
        f"2D -> 4D transfer: {len(report['moved'])} tensors moved ({report['parameters_moved']:,} values), "
        f"{len(report['new'])} new ({report['parameters_new']:,}), {len(report['skipped'])} skipped (shape)",
        "  moved: " + ", ".join(f"{g} ({c})" for g, c in sorted(groups.items())),
    ]
    for buf, v in report["vocabulary"].items():
        lines.append(f"  {buf}: {v['rows_moved']}/{v['rows_4d']} rows from the 2D vocabulary")
        if v["matched_by_canonical_name"]:
            pairs = ", ".join(f"{a} <- {b}" for a, b in v["matched_by_canonical_name"].items())
            lines.append(f"    by canonical name: {pairs}")
    if report["lifted_2d_features"]:
        lines.append("  lifted 2D features: the 2D backbone + pixel decoder run on the RGB frames (frozen)")
    return "\n".join(lines)
