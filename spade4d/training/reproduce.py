"""Repeat the first steps of a finished ``finetune-4d`` run and compare what it logs with what the run logged.

A run folder records everything needed to train it again: ``train_config.json`` holds the config, the data and the
initialisation (``run``), and ``trainer_state.json`` the logged history (every ``log_every`` steps: the losses and
the learning rate). :func:`rerun` trains the same run again into another folder, stops at step ``steps`` of the
same schedule (``finetune_4d(stop_after=...)``, so the learning rate follows the full run's curve) and lines up the
two histories. On one machine with the same thread count and library versions the values agree bit for bit
(docs/experiments.md, "Reproducibility"); a difference says the code, the data or the environment changed, and
the run's ``environment.json`` (the commit, Python and torch of each start) against this process's tells which.

A run trained by several processes (``torchrun``) is repeated under the same launcher: the logged losses are the
first process's, and its gradients were averaged with the others'.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from spade4d.io import read_json
from spade4d.training.loop import TrainError

NOT_COMPARED = ("step", "time")  # wall-clock time differs between any two runs


@dataclass
class Comparison:
    """One logged value of one step, as the run logged it and as the repeat did."""

    step: int
    key: str
    logged: float
    repeated: float

    @property
    def difference(self) -> float:
        return abs(self.repeated - self.logged)


@dataclass
class RerunReport:
    run: Path
    steps: int
    rows: list[Comparison] = field(default_factory=list)
    tolerance: float = 0.0
    # what differs between the run's first start (its environment.json) and this process: "torch 2.12.0 then,
    # 2.13.0 now"; empty when they agree or the run recorded nothing
    changed: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> list[Comparison]:
        """Values that differ by more than ``tolerance`` relative to the logged one (NaN always differs)."""
        bad = []
        for r in self.rows:
            bound = self.tolerance * max(abs(r.logged), 1e-12)
            if not (r.difference <= bound):
                bad.append(r)
        return bad

    @property
    def identical(self) -> bool:
        return all(r.logged == r.repeated for r in self.rows)

    def table(self) -> str:
        """The losses step by step (logged, repeated, largest difference over the step's values)."""
        lines = [f"{'step':>6}  {'loss (run)':>14}  {'loss (again)':>14}  {'largest |diff|':>14}  values"]
        for step in sorted({r.step for r in self.rows}):
            rows = [r for r in self.rows if r.step == step]
            loss = next((r for r in rows if r.key == "loss"), rows[0])
            worst = max(r.difference for r in rows)
            lines.append(f"{step:>6}  {loss.logged:>14.8g}  {loss.repeated:>14.8g}  {worst:>14.3g}  {len(rows)}")
        return "\n".join(lines)


def environment_changes(run: Path) -> list[str]:
    """How this process's :func:`~spade4d.version.environment` differs from the run's first start."""
    from spade4d.provenance import environment

    path = run / "environment.json"
    starts = read_json(path) if path.is_file() else []
    if not isinstance(starts, list) or not starts or not isinstance(starts[0], dict):
        return []
    now = environment()
    return [f"{k} {starts[0][k]} then, {v} now" for k, v in now.items() if k in starts[0] and starts[0][k] != v]


def logged_history(run: Path) -> list[dict]:
    state = run / "trainer_state.json"
    if not state.is_file():
        raise TrainError(f"{state}: not found (is {run} a finetune-4d run folder?)")
    history = read_json(state).get("history")
    if not isinstance(history, list) or not all(isinstance(h, dict) and "step" in h for h in history):
        raise TrainError(f"{state}: no 'history' list of logged steps")
    return history


def compare_histories(logged: list[dict], repeated: list[dict], steps: int) -> list[Comparison]:
    """Every numeric value both histories logged at a step up to ``steps``, wall-clock time aside."""
    again = {h["step"]: h for h in repeated}
    rows = []
    for h in logged:
        if h["step"] > steps or h["step"] not in again:
            continue
        for key, value in h.items():
            other = again[h["step"]].get(key)
            if key in NOT_COMPARED or not _number(value) or not _number(other):
                continue
            rows.append(Comparison(h["step"], key, float(value), float(other)))
    return rows


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def rerun(
    run: str | os.PathLike,
    steps: int = 20,
    out: str | os.PathLike | None = None,
    tolerance: float = 0.0,
    progress: bool = True,
) -> RerunReport:
    """Train the ``finetune-4d`` run in ``run`` again for its first ``steps`` steps (in ``out``, by default a
    temporary folder removed afterwards) and compare the logged values step by step. ``tolerance``: the relative
    difference :attr:`RerunReport.mismatches` allows (0: bit for bit)."""
    from spade4d.training.finetune_4d import Train4DConfig, finetune_4d

    run = Path(run)
    saved = run / "train_config.json"
    if not saved.is_file():
        raise TrainError(f"{saved}: not found (is {run} a finetune-4d run folder?)")
    config = read_json(saved)
    if "run" not in config or "train" not in config:
        raise TrainError(f"{saved}: written by an older spade4d (no 'run' record): cannot repeat the run")
    logged = logged_history(run)
    cfg = Train4DConfig(**config["train"])
    first = [h["step"] for h in logged if h["step"] <= steps]
    if not first:
        raise TrainError(f"{run / 'trainer_state.json'}: nothing logged by step {steps} (the run logged every "
                         f"{cfg.log_every} steps): pass a larger --steps")  # fmt: skip
    r = config["run"]
    with tempfile.TemporaryDirectory(prefix="spade4d-rerun-") as tmp:
        where = Path(out) if out is not None else Path(tmp) / "run"
        res = finetune_4d(r["root"], where, cfg, split=r["split"], init_from=r["init_from"], progress=progress,
                          init_from_2d=r["init_from_2d"], rgb_root=r["rgb_root"], fmt=r["format"],
                          annotation=r["annotation"], stop_after=max(first))  # fmt: skip
    rows = compare_histories(logged, res.history, max(first))
    if not rows:
        raise TrainError(f"{run / 'trainer_state.json'}: no value logged in both runs by step {max(first)}")
    return RerunReport(run, max(first), rows, tolerance, environment_changes(run))
