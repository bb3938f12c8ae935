"""The shared ArgumentParser (negative numbers in any notation are values, in every command and sub-command) and the one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from cs336_basics.errors import ArgumentParser


@pytest.mark.parametrize("text", ["-1", "-0.001", "-.5", "-1.", "-1e-3", "-1E-3", "-2.5e+4", "-3e2"])
def test_a_negative_number_in_any_notation_is_a_value(text):
    parser = ArgumentParser(prog="t")
    parser.add_argument("--lr", type=float)
    assert parser.parse_args(["--lr", text]).lr == float(text)


def test_sub_command_parsers_take_scientific_negatives_too():
    parser = ArgumentParser(prog="t")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").add_argument("--lr", type=float)
    assert parser.parse_args(["run", "--lr", "-1e-3"]).lr == -1e-3


def test_an_option_is_still_an_option(capsys):
    parser = ArgumentParser(prog="t")
    parser.add_argument("--lr", type=float)
    parser.add_argument("-e", action="store_true")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--lr", "-e"])
    assert exc.value.code == 2 and "expected one argument" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1e-3", "-0.001"])
def test_train_refuses_a_negative_lr_in_any_notation_with_its_range(value):
    """Run as the user runs it: the installed command, in a subprocess. The range check answers, not
    argparse's "expected one argument"."""
    exe = shutil.which("cs336-train")
    assert exe, "cs336-train is not on PATH: run uv sync"
    out = subprocess.run([exe, "--lr", value], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "--max-lr (--lr)" in lines[0] and "> 0" in lines[0] and "got -0.001" in lines[0], out.stderr
    assert "expected one argument" not in lines[0], out.stderr


def test_a_failed_atomic_write_names_the_users_path_not_our_temporary(tmp_path):
    """os.replace(tmp, target) onto a directory: the error's filename is our hidden temporary file."""
    from cs336_basics.atomic import atomic_write_json
    from cs336_basics.errors import describe_os_error

    target = tmp_path / "report"
    target.mkdir()
    with pytest.raises(OSError) as exc:
        atomic_write_json(target, {"a": 1})
    line = describe_os_error(exc.value)
    assert line == f"is a directory: {target}; a directory is in the way: give a file path"
    assert os.listdir(tmp_path) == ["report"] and not os.listdir(target)  # no temporary left behind


def test_a_killed_writers_temp_file_goes_with_the_next_write_of_that_file(tmp_path):
    """kill -9 mid-write (a tokenization) left `.train.npy.XXXXXXXX.tmp` (GBs for TinyStories) for good. The
    next write of train.npy removes it; a live writer's temp (it holds its flock), however old, and another
    file's are kept."""
    import fcntl

    from cs336_basics.atomic import atomic_write_text

    killed, live, other = (tmp_path / name for name in (".train.npy.ab12cd34.tmp", ".train.npy.zz99zz99.tmp",
                                                         ".train.npy.json.ef34gh56.tmp"))  # fmt: skip
    for path in (killed, live, other):
        path.write_bytes(b"partial")
        os.utime(path, (0, 0))  # last written long ago
    with open(live, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a writer that is still alive (stalled, say)
        atomic_write_text(tmp_path / "train.npy", "new")
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name, "train.npy"])
    assert (tmp_path / "train.npy").read_text() == "new"


def test_ctrl_c_in_a_command_is_one_line_that_promises_only_what_a_rerun_keeps(capsys):
    """It said 'resume' for every command, though a re-run of an interrupted tokenize starts that file over."""
    from cs336_basics.errors import cli_entry

    @cli_entry
    def command(argv=None):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exc:
        command()
    assert exc.value.code == 130
    assert capsys.readouterr().err == ("interrupted by the user (Ctrl-C): re-run the same command to go on (finished work is "
                                       "kept; training and downloads resume mid-way)\n")  # fmt: skip


def test_a_missing_source_of_a_rename_is_the_path_named():
    """Only a rename from our temporary file names its target; otherwise the path that failed is named."""
    from cs336_basics.errors import describe_os_error

    err = FileNotFoundError(2, "No such file or directory", "/data/a.txt", "/data/b.txt")
    assert describe_os_error(err).startswith("no such file or directory: /data/a.txt; ")
