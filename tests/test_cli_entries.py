"""Every command in pyproject's [project.scripts] is installed, loads, and answers --help (exit 0)."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

DECLARED = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_batch_size_sweep_is_a_command():
    assert (
        DECLARED["batch-size-sweep"] == "cs336_basics.assignment_experiments.batch_size.batch_size_sweep:main"
    )


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_command_is_installed_and_answers_help(name, capsys):
    installed = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert name in installed, f"{name} is declared but not installed: run uv sync"
    assert installed[name].value == DECLARED[name]
    with pytest.raises(SystemExit) as exc:
        installed[name].load()(["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out
