"""Every command in pyproject's [project.scripts] is installed, loads, and answers --help (exit 0)."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

DECLARED = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_batch_size_sweep_is_a_command():
    from cs336_basics import console

    assert DECLARED["batch-size-sweep"] == "cs336_basics.console:batch_size_sweep"
    assert (
        console.batch_size_sweep.__doc__
        == "``cs336_basics.assignment_experiments.batch_size.batch_size_sweep.main``"
    )


def test_ctrl_c_while_a_command_starts_is_one_line_not_an_import_traceback():
    """Ctrl-C in the first second or two (torch loading) printed a 36-line traceback ending in
    KeyboardInterrupt (or, landing in torch's C++ start-up, aborted the process): the interrupt landed in the
    imports, before the command's own handler."""
    import shutil
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        [shutil.which("cs336-bench"), "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )  # fmt: skip: torch takes over a second to load
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    if proc.returncode in (0, -signal.SIGINT):  # done, or shutting down when the signal came
        pytest.skip("the command finished before the signal")
    assert (
        proc.returncode == 130
        and err == "interrupted by the user (Ctrl-C) while starting: nothing was done\n"
    ), err


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_command_is_installed_and_answers_help(name, capsys):
    installed = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert name in installed, f"{name} is declared but not installed: run uv sync"
    assert installed[name].value == DECLARED[name]
    with pytest.raises(SystemExit) as exc:
        installed[name].load()(["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_every_flag_of_every_command_says_what_it_does(name, monkeypatch, capsys):
    """The parsers a command builds for ``--help``, caught as they parse, and their sub-commands' parsers:
    every option (and every positional) has a help text."""
    import argparse

    parsers, parse = [], argparse.ArgumentParser.parse_known_args

    def recording(self, *args, **kwargs):
        parsers.append(self)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    installed = {ep.name: ep for ep in entry_points(group="console_scripts")}
    with pytest.raises(SystemExit):
        installed[name].load()(["--help"])
    capsys.readouterr()
    subparsers = [c for p in parsers for a in p._actions if isinstance(a, argparse._SubParsersAction)
                  for c in a.choices.values()]  # fmt: skip
    actions = [a for p in parsers + subparsers for a in p._actions if not isinstance(a, argparse._HelpAction)]
    assert parsers and actions
    silent = [a.option_strings[0] if a.option_strings else a.dest for a in actions
              if not a.help or a.help == argparse.SUPPRESS]  # fmt: skip
    assert silent == [], f"{name}: no help text for {silent}"


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_a_usage_mistake_is_one_line_and_exit_2(name):
    """An unknown flag (and, where the command takes one, a flag value that is not a number) reads like any
    other bad input: one line naming the flag and pointing at --help, not argparse's whole usage. Run as the
    user runs it: the installed command, in a subprocess."""
    import shutil
    import subprocess

    exe = shutil.which(name)
    assert exe, f"{name} is not on PATH: run uv sync"
    for argv, word in ((["--no-such-flag"], "--no-such-flag"), (["--seed", "abc"], "abc")):
        out = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=120)
        if word == "abc" and "unrecognized arguments: --seed" in out.stderr:
            continue  # this command has no --seed
        assert out.returncode == 2, (argv, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith(f"(see {name} --help)"), out.stderr
        # a command's required arguments are checked first
        assert word in lines[0] or "arguments are required" in lines[0], out.stderr
