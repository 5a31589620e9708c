"""Bad input and interrupted work: a one-line error with exit status 2, or correct output; never a traceback."""

import json
import os
import stat

import pytest

from spade4d.cli import main
from spade4d.io import atomic_dir, read_json, write_json

ANSI = "\x1b["


def run_error(argv, capsys):
    """Run the CLI expecting a refusal; return its message (checked: status 2, one line, no escape codes)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in err and ANSI not in err
    return err


def test_json_files_that_are_not_json(tmp_path):
    p = tmp_path / "f.json"
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"f.json: not UTF-8 text \(byte 0xff at offset 0\)"):
        read_json(p)
    p.write_text('{"a": [1, 2')
    with pytest.raises(ValueError, match="f.json: not valid JSON"):
        read_json(p)
    p.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="f.json: JSON nested too deeply"):
        read_json(p)


def test_prediction_file_version_must_be_the_integer_1(tmp_path, synthetic_root, capsys):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"format": "spade4d-predictions-4d", "version": True, "sequences": {}}))
    argv = ["evaluate-4d", "--format", "synthetic", "--root", str(synthetic_root), "--pred", str(p)]
    err = run_error([*argv, "--out", str(tmp_path / "m.json"), "--quiet"], capsys)
    assert "p.json: field 'version' is True" in err


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        f = write_json(tmp_path / "m.json", {"a": 1})
        with atomic_dir(tmp_path / "out") as d:
            (d / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert not (tmp_path / "out" / ".owner_pid").exists()


def test_a_killed_build_leaves_nothing_that_blocks_the_rerun(tmp_path):
    stale = tmp_path / ".data.partial-abc123"  # what a SIGKILLed make-synthetic leaves
    stale.mkdir()
    (stale / "big.bin").write_bytes(b"0" * 1000)
    (stale / ".owner_pid").write_text("999999999")  # no such process
    live = tmp_path / ".data.partial-live"
    live.mkdir()
    (live / ".owner_pid").write_text(str(os.getpid()))  # a build still running is left alone
    with atomic_dir(tmp_path / "data") as d:
        (d / "x").write_text("1")
    assert not stale.exists() and live.exists() and (tmp_path / "data" / "x").is_file()


def test_cli_arguments_out_of_range_are_refused(tmp_path, synthetic_root, capsys):
    pc = str(synthetic_root / "psg4d_pc")
    render = ["render", "--root", pc, "--out", str(tmp_path / "r"), "--quiet"]
    assert "8192" in run_error([*render, "--width", "100000"], capsys)
    assert "must be a finite number above 0" in run_error([*render, "--fps", "0"], capsys)
    assert "--frames 99: sequence" in run_error([*render, "--frames", "99"], capsys)
    assert not (tmp_path / "r").exists()  # refused before writing anything
    env = os.environ.pop("DISPLAY", None)
    try:
        assert "--interactive needs a display" in run_error([*render, "--interactive"], capsys)
    finally:
        if env is not None:
            os.environ["DISPLAY"] = env
    train = ["finetune-4d", "--format", "synthetic", "--root", str(synthetic_root), "--out", str(tmp_path / "t")]
    assert "must be a finite number above 0" in run_error([*train, "--lr", "inf"], capsys)
    conv = ["convert", "psg4d-gta", "--root", str(synthetic_root / "psg4d_gta"), "--out", str(tmp_path / "c")]
    assert "must be a finite number above 0" in run_error([*conv, "--voxel-size", "inf"], capsys)
    assert "must be a finite number above 0" in run_error([*conv, "--depth-scale", "0"], capsys)
    infer = ["infer", "--model", str(tmp_path), "--root", pc, "--out", str(tmp_path / "p.json")]
    assert "--device bogus: " in run_error([*infer, "--device", "bogus"], capsys)
