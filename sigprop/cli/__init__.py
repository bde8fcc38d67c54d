"""`sigprop` command line: a thin layer over the library. Each module registers its commands on `app`."""

from sigprop.cli import blocks  # noqa: F401  (registers commands)
from sigprop.cli.app import app, main

__all__ = ["app", "main"]
