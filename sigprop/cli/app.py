"""The Typer app every command module registers on, plus shared CLI helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from sigprop.errors import SigpropError

app = typer.Typer(
    name="sigprop",
    help="Signal-propagation analysis of transformer blocks (He & Hofmann, 'Simplifying Transformer Blocks').",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
#: Piped or logged output (tee, CI) would default to 80 columns and cut the wide tables to "…".
PIPE_WIDTH = 160
console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = PIPE_WIDTH
err_console = Console(stderr=True)


def vocab_alias() -> typer.models.OptionInfo:
    """`--vocab`: the hidden old name of `--vocab-size` (the one name every command uses)."""
    return typer.Option(None, "--vocab", hidden=True, help="Old name of --vocab-size.")


def pick_vocab(vocab_size: int | None, vocab: int | None) -> int | None:
    """--vocab-size, or its old name --vocab; both with different values is an error."""
    if vocab is not None and vocab_size is not None and vocab != vocab_size:
        raise SigpropError(f"--vocab {vocab} and --vocab-size {vocab_size} disagree; accepted: --vocab-size alone")
    return vocab_size if vocab_size is not None else vocab


def folder(option: str, value: str | None) -> Path | None:
    """A folder option as a Path; an empty one (`--out ''`, which Path reads as the current folder) is refused."""
    if value is None:
        return None
    if not value.strip():
        raise SigpropError(f"{option} {value!r} names no folder; accepted: a folder path, e.g. {option} runs/sas-p")
    return Path(value)


def split_list(text: str | None) -> list[str]:
    """'pre-ln, sas,sas-p' -> ['pre-ln', 'sas', 'sas-p']."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def os_error_text(e: OSError) -> str:
    """'cannot write runs/x/metrics.jsonl: No space left on device' (the file and the system's reason)."""
    where = f" {e.filename}" if e.filename else ""
    return f"file system error{':' if where else ''}{where}: {e.strerror or e}"


def main() -> None:
    """Console entry point: user errors and file-system errors (read-only folder, full disk, a file where a
    folder should be) print as one line (exit 2), never as a traceback."""
    try:
        app()
    except SigpropError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:
        err_console.print(f"[bold red]error:[/] {os_error_text(e)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


@app.callback()
def _root() -> None:
    """sigprop: build every block of the paper, probe signal propagation, train, reproduce figures."""
