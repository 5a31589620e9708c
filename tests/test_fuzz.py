"""Mutation fuzzing of evaluate-4d's inputs (prediction file, annotation, point-cloud frames): every outcome is
either success with the reference loop's numbers or a one-line error naming the file (tests/fuzzing.py).
``scripts/fuzz_inputs.py`` runs the same cases by the thousand and prints a table."""

import collections

from fuzzing import make_fixture, run_case
from hypothesis import given, settings
from hypothesis import strategies as st

OUTCOMES: collections.Counter = collections.Counter()


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=250, deadline=None, database=None, derandomize=True)  # the same cases on every run
def test_every_mutated_input_is_refused_cleanly_or_scored_as_the_reference(tmp_path_factory, seed):
    fixture = FIXTURE.get("f") or FIXTURE.setdefault("f", make_fixture(tmp_path_factory.mktemp("fuzz") / "fixture"))
    outcome, what = run_case(fixture, seed, fixture["root"].parent / "work")
    OUTCOMES[outcome] += 1
    assert outcome in ("ok", "clean"), f"{outcome}: {what}"


FIXTURE: dict = {}


def test_both_kinds_of_outcome_occur():
    # after the fuzz test above (same module, file order): refusals and correct acceptances both happened
    assert OUTCOMES["ok"] > 0 and OUTCOMES["clean"] > 0
