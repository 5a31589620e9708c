"""Metric reports: the console table, the metrics JSON and the per-predicate bar chart beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spade4d.io import atomic_path, write_json


def format_table(metrics: dict[str, Any], title: str = "") -> str:
    ks = metrics["options"]["ks"]
    rows = [r for r in ("R", "mR", "wR", "sfR", "PR") if f"{r}@{ks[0]}" in metrics]
    lines = [title] if title else []
    lines.append(f"{'':>6} " + " ".join(f"{'@' + str(k):>8}" for k in ks))
    for r in rows:
        lines.append(f"{r:>6} " + " ".join(f"{metrics[f'{r}@{k}']:8.2f}" for k in ks))
    return "\n".join(lines)


def plot_per_predicate(metrics: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Horizontal bars of per-predicate recall at each K, sorted by the largest K's recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ks = metrics["options"]["ks"]
    per = metrics["per_predicate"]
    names = sorted(per, key=lambda p: per[p][f"R@{ks[-1]}"])
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(names) + 1.4), dpi=150)
    y = np.arange(len(names))
    h = 0.8 / len(ks)
    for j, k in enumerate(ks):
        ax.barh(y + (j - (len(ks) - 1) / 2) * h, [per[p][f"R@{k}"] for p in names], height=h, label=f"R@{k}")
    count_key = "gt" if names and "gt" in per[names[0]] else "images"
    ax.set_yticks(y, [f"{p} ({per[p][count_key]})" for p in names], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("recall (%)")
    ax.set_title(title or "per-predicate recall", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_report(metrics: dict[str, Any], out: str | os.PathLike, title: str = "") -> dict[str, Path]:
    """Write ``out`` (JSON) and ``<out stem>_per_predicate.png`` beside it."""
    out = Path(out)
    write_json(out, metrics, indent=1)
    png = plot_per_predicate(metrics, out.with_name(out.stem + "_per_predicate.png"), title)
    return {"json": out, "png": png}
