"""One exception type for bad user input, so the CLI can print it as one line."""

from __future__ import annotations

from collections.abc import Iterable


class SigpropError(ValueError):
    """A user-facing error: the message names the bad value and what is accepted."""


def choice_error(what: str, value: object, accepted: Iterable[object]) -> SigpropError:
    """`unknown block 'sass'; accepted: pre-ln, sas, ...`"""
    return SigpropError(f"unknown {what} {value!r}; accepted: {', '.join(map(str, accepted))}")


def check_choice(what: str, value: object, accepted: Iterable[object]) -> None:
    accepted = list(accepted)
    if value not in accepted:
        raise choice_error(what, value, accepted)


def check_positive(what: str, value: float) -> None:
    if not value > 0:
        raise SigpropError(f"{what} must be positive, got {value!r}")
