"""`sigprop` command line: a thin layer over the library. Each module registers its commands on `app`."""

from sigprop.cli import bench  # noqa: F401  (registers `sigprop bench`)
from sigprop.cli import analyze  # noqa: F401  (registers `sigprop analyze`)
from sigprop.cli import blocks  # noqa: F401  (registers `sigprop blocks`)
from sigprop.cli import data  # noqa: F401  (registers `sigprop data`)
from sigprop.cli import train  # noqa: F401  (registers `sigprop train`, `sigprop compare`)
from sigprop.cli import reproduce  # noqa: F401  (registers `sigprop reproduce`)
from sigprop.cli import sweep  # noqa: F401  (registers `sigprop sweep`)
from sigprop.cli import phase  # noqa: F401  (registers `sigprop phase`)
from sigprop.cli.app import app, main

__all__ = ["app", "main"]
