"""The demo's record of where its time went (``timings.json``): each stage's seconds, in order, adding up to the
total, with the host described, written atomically and logged."""

import json

import pytest

from spade4d import demo


def test_stage_clock_records_each_stage_in_order_and_writes_the_host(tmp_path):
    readings = iter([100.0, 103.4, 110.0, 112.0])  # start, then one reading per lap
    clock = demo.StageClock(now=lambda: next(readings))
    clock.lap("data")
    clock.lap("2D core")
    clock.lap("4D training")
    lines = []
    path = clock.report(tmp_path, "timings", log=lines.append)
    rec = json.loads(path.read_text())
    assert path == tmp_path / "timings.json"
    assert list(rec["stages"]) == ["data", "2D core", "4D training"]
    assert rec["stages"] == {"data": 3.4, "2D core": 6.6, "4D training": 2.0}
    assert rec["seconds"] == pytest.approx(sum(rec["stages"].values())) == 12.0
    assert rec["date"] == "1970-01-01T00:01:40Z"
    assert rec["host"]["code"] and rec["host"]["torch"]  # the same record a training run keeps, plus the CPU
    assert rec["host"]["torch_threads"] >= 1 and rec["host"]["cpus"] >= 1 and rec["host"]["cpu_capability"]
    assert lines == ["[demo] time by stage: data 3 s, 2D core 7 s, 4D training 2 s"]
    assert not list(tmp_path.glob("*.tmp*"))  # nothing left behind by the atomic write
