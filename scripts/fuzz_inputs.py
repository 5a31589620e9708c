"""Fuzz what users hand to ``spade4d evaluate-4d`` and print what happened, by outcome and by input.

    python scripts/fuzz_inputs.py [--cases 2000] [--seed 0] [--show 5]

Each case copies a tiny dataset (2 sequences, spade4d-pc layout) and its prediction file, damages one input
(a JSON value replaced by another type or out of range, a field deleted, the file truncated or given a bad byte or
deep nesting, a point-cloud frame truncated or given NaN / fractional / boolean ids or wrong shapes), runs the
real command in this process and classifies the result (tests/fuzzing.py): ``ok`` (exit 0, metrics equal to the
reference loop), ``clean`` (exit 2, one line naming the file), and the failures ``wrong``, ``silent``, ``vague``,
``traceback``. Exits 1 when any failure occurs.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzzing import OUTCOMES, make_fixture, run_case  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="first case seed (cases use seed, seed + 1, ...)")
    ap.add_argument("--show", type=int, default=5, help="examples printed per failing outcome")
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        fixture = make_fixture(Path(tmp) / "fixture")
        by_outcome: collections.Counter = collections.Counter()
        by_target: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        examples: dict[str, list[str]] = collections.defaultdict(list)
        for k in range(args.cases):
            outcome, what = run_case(fixture, args.seed + k, Path(tmp) / "work")
            by_outcome[outcome] += 1
            target = "frame" if what.startswith("frame") else "json value" if "=" in what else "json other"
            by_target[target][outcome] += 1
            examples[outcome].append(what)
            if (k + 1) % 500 == 0:
                print(f"  {k + 1} cases, {time.time() - t0:.0f} s", file=sys.stderr)
    print(f"{args.cases} cases in {time.time() - t0:.0f} s\n")
    print(f"{'input':<12}" + "".join(f"{o:>11}" for o in OUTCOMES))
    for target, c in sorted(by_target.items()):
        print(f"{target:<12}" + "".join(f"{c[o]:>11}" for o in OUTCOMES))
    print(f"{'all':<12}" + "".join(f"{by_outcome[o]:>11}" for o in OUTCOMES))
    failures = [o for o in ("wrong", "silent", "vague", "traceback") if by_outcome[o]]
    for o in failures:
        print(f"\n{o}:")
        for w in examples[o][: args.show]:
            print(f"  {w}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
