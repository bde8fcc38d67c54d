"""Every code block of the README and of every docs/ page works as written (issue 11, item 13; issue 26): the Python
blocks run (ci-sized), every `sigprop` command in them and in the Makefile parses against the real CLI (option names,
types), and the cheap ones run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sigprop.cli import app

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TEXT = {p.relative_to(REPO).as_posix(): p.read_text() for p in PAGES}
#: Commands cheap enough to run for real in the suite (seconds).
CHEAP = ("sigprop blocks", "sigprop reproduce --list", "sigprop reproduce catch-up --dry-run", "sigprop reproduce --budget")


def blocks(lang: str) -> list[tuple[str, str]]:
    """(page, code) of every ```lang block of the README and the docs pages."""
    return [(page, b) for page, text in TEXT.items() for b in re.findall(rf"```{lang}\n(.*?)```", text, re.S)]


def commands() -> list[str]:
    """`sigprop ...` lines of the bash blocks of the README and every docs page, and of the Makefile's recipes,
    comments stripped."""
    lines = [ln for _, b in blocks("bash") for ln in b.splitlines()]
    lines += [ln.replace("$(BIN)/", "") for ln in (REPO / "Makefile").read_text().splitlines() if "$(BIN)/sigprop" in ln]
    out = []
    for ln in lines:
        ln = ln.split("#", 1)[0].strip()
        if ln.startswith("torchrun"):
            ln = "sigprop " + ln.split("-m sigprop", 1)[1].strip()
        if ln.startswith("sigprop"):
            out.append(ln)
    return out


@pytest.mark.parametrize("page, code", blocks("python"), ids=[f"{p}#{i}" for i, (p, _) in enumerate(blocks("python"))])
def test_readme_python_block_runs(page, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes lands here
    exec(compile(code, f"{page} python block", "exec"), {})


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


def test_the_readme_is_a_front_page_linking_every_docs_page():
    """Issue 26: at most ~10 KB, the two commands in the first screen, how to run the CLI after them, every docs page
    linked, and the notebooks named."""
    readme = TEXT["README.md"]
    assert len(readme.encode()) <= 10_240
    assert readme.index("make demo") < 2_500 and readme.index("make test") < 2_500
    assert ".venv/bin/activate" in readme
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, page.name
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert nb.name in readme, nb.name


def test_make_demo_ends_by_saying_how_to_run_the_cli_and_the_notebooks_need_only_the_dev_extra():
    """Issue 26: after `make demo`, `sigprop` is not on the PATH; the demo's last line and the README say how to run it.
    The notebooks' test (and `jupyter execute`) needs nbclient, nbformat and ipykernel: the `dev` extra installs them."""
    demo = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0].strip().splitlines()
    assert "source $(VENV)/bin/activate" in demo[-1] and "$(BIN)/sigprop" in demo[-1], demo[-1]
    dev = re.search(r"^dev = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M).group(1)  # tomllib: 3.11+
    names = set(re.findall(r'^\s*"([A-Za-z0-9_.-]+)', dev, re.M))
    assert {"nbclient", "nbformat", "ipykernel", "pytest"} <= names, names
    assert "jupyter execute notebooks/" in TEXT["README.md"] and "## What's new" in TEXT["README.md"]
