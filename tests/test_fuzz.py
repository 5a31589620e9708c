"""Mutation fuzzing of evaluate-4d's inputs (prediction file, annotation, point-cloud frames): every outcome is
either success with the reference loop's numbers or a one-line error naming the file (tests/fuzzing.py).
``scripts/fuzz_inputs.py`` runs the same cases by the thousand and prints a table."""

import collections

from fuzzing import make_fixture, run_case


def test_every_mutated_input_is_refused_cleanly_or_scored_as_the_reference(tmp_path):
    fixture = make_fixture(tmp_path / "fixture")
    outcomes = collections.Counter()
    bad = []
    for seed in range(250):
        outcome, what = run_case(fixture, seed, tmp_path / "work")
        outcomes[outcome] += 1
        if outcome not in ("ok", "clean"):
            bad.append(f"{outcome}: {what}")
    assert not bad, "\n".join(bad[:10])
    assert outcomes["ok"] > 0 and outcomes["clean"] > 0  # both kinds of outcome occur
