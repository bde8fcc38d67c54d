"""Every code block of the README works as written (issue 11, item 13): the Python blocks run (ci-sized),
every `sigprop` command in the README and the Makefile parses against the real CLI (option names, types),
and the cheap ones run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sigprop.cli import app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
#: Commands cheap enough to run for real in the suite (seconds).
CHEAP = ("sigprop blocks", "sigprop reproduce --list", "sigprop reproduce catch-up --dry-run", "sigprop reproduce --budget")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def commands() -> list[str]:
    """`sigprop ...` lines of the README's bash blocks and the Makefile's recipes, comments stripped."""
    lines = [ln for b in blocks("bash") for ln in b.splitlines()]
    lines += [ln.replace("$(BIN)/", "") for ln in (REPO / "Makefile").read_text().splitlines() if "$(BIN)/sigprop" in ln]
    out = []
    for ln in lines:
        ln = ln.split("#", 1)[0].strip()
        if ln.startswith("torchrun"):
            ln = "sigprop " + ln.split("-m sigprop", 1)[1].strip()
        if ln.startswith("sigprop"):
            out.append(ln)
    return out


@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_readme_python_block_runs(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes lands here
    exec(compile(blocks("python")[i], f"README.md python block {i + 1}", "exec"), {})


def test_readme_and_makefile_commands_parse():
    cmds = commands()
    assert len(cmds) >= 15 and any("analyze" in c for c in cmds)  # the extraction itself works
    for line in cmds:
        cmd, args = typer.main.get_command(app), shlex.split(line)[1:]
        while hasattr(cmd, "commands"):  # a group (sigprop, sigprop data): step into the named command
            cmd, args = cmd.commands[args[0]], args[1:]
        cmd.make_context(cmd.name, args)  # parses every option: raises on an unknown one or a bad value


@pytest.mark.parametrize("line", CHEAP)
def test_cheap_readme_commands_run(line):
    assert line in commands()
    r = CliRunner().invoke(app, shlex.split(line)[1:])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
