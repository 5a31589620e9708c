"""Repeat the first steps of a finished ``finetune-4d`` or ``pretrain-2d`` run and compare what it logs with what
the run logged.

A run folder records everything needed to train it again: ``train_config.json`` holds the config, the data and the
initialisation (``run``), and ``trainer_state.json`` the logged history (every ``log_every`` steps: the losses and
the learning rate). :func:`rerun` trains the same run again into another folder, stops at step ``steps`` of the
same schedule (``finetune_4d(stop_after=...)``, so the learning rate follows the full run's curve) and lines up the
two histories. On one machine with the same thread count and library versions the values agree bit for bit
(docs/experiments.md, "Reproducibility"); a difference says the code, the data or the environment changed, and
the run's ``environment.json`` (the commit, Python and torch of each start) against this process's tells which.

A ``pretrain-2d`` folder is repeated stage by stage (:func:`rerun_2d`): ``pretrain_config.json`` and
``pretrain_run.json`` (the data and backbone it was given) rebuild it, every stage trains its first steps again
starting from the run's own model of the stage before, and each stage's ``trainer_state.json`` is compared.

A run trained by several processes (``torchrun``) is repeated under the same launcher: the logged losses are the
first process's, and its gradients were averaged with the others'.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
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
    stage: str = ""  # a pretrain-2d stage folder (diffusion, calibration, psg); "" for a finetune-4d run

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

    def history_file(self, c: Comparison) -> Path:
        """The file the run logged ``c`` in."""
        return self.run / c.stage / "trainer_state.json" if c.stage else self.run / "trainer_state.json"

    def table(self) -> str:
        """The losses step by step (logged, repeated, largest difference over the step's values), stage by stage
        for a pretrain-2d run."""
        staged = any(r.stage for r in self.rows)
        head = f"{'step':>6}  {'loss (run)':>14}  {'loss (again)':>14}  {'largest |diff|':>14}  values"
        lines = [f"{'stage':<13}{head}" if staged else head]
        for stage, step in dict.fromkeys((r.stage, r.step) for r in self.rows):
            rows = [r for r in self.rows if (r.stage, r.step) == (stage, step)]
            loss = next((r for r in rows if r.key == "loss"), rows[0])
            worst = max(r.difference for r in rows)
            line = f"{step:>6}  {loss.logged:>14.8g}  {loss.repeated:>14.8g}  {worst:>14.3g}  {len(rows)}"
            lines.append(f"{stage:<13}{line}" if staged else line)
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
    if (run / "pretrain_config.json").is_file():
        return rerun_2d(run, steps, out, tolerance, progress)
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


STAGES_2D = ("diffusion", "calibration", "psg")


def rerun_2d(run: Path, steps: int, out, tolerance: float, progress: bool) -> RerunReport:
    """:func:`rerun` for a ``pretrain-2d`` folder: each stage it trained (``diffusion/``, ``calibration/``, ``psg/``)
    repeats its first ``steps`` steps from the run's model of the stage before (``pretrain_2d(stop_after=...)``)."""
    from spade4d.training.pretrain_2d import Pretrain2DConfig, pretrain_2d

    record = run / "pretrain_run.json"
    if not record.is_file():
        raise TrainError(f"{record}: not found (written by an older spade4d, the run has no record of its data): "
                         "cannot repeat the run")  # fmt: skip
    given = read_json(record)
    cfg = Pretrain2DConfig(**read_json(run / "pretrain_config.json"))
    stages = [s for s in STAGES_2D if (run / s / "trainer_state.json").is_file()]
    if not stages:
        raise TrainError(f"{run}: no stage to repeat (no diffusion/, calibration/ or psg/ with a trainer_state.json)")
    for s in stages:
        if not (run / s / "model").is_dir():
            raise TrainError(f"{run / s / 'model'}: not found: the run did not finish this stage")
    logged = {s: logged_history(run / s) for s in stages}
    first = max((h["step"] for s in stages for h in logged[s] if h["step"] <= steps), default=0)
    if not first:
        raise TrainError(f"{run}: no stage logged a step by step {steps} (they log every {cfg.log_every} steps): "
                         "pass a larger --steps")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="spade4d-rerun-") as tmp:
        where = Path(out) if out is not None else Path(tmp) / "run"
        pretrain_2d(given["psg_json"], given["coco_root"], where, cfg, given["backbone_dir"], given["sd15"],
                    progress=progress, stop_after=first, finished=run)  # fmt: skip
        rows = [replace(c, stage=s) for s in stages for c in compare_histories(logged[s], logged_history(where / s),
                                                                                first)]  # fmt: skip
    changed = list(dict.fromkeys(c for s in stages for c in environment_changes(run / s)))
    return RerunReport(run, first, rows, tolerance, changed)
