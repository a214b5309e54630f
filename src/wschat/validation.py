"""Checks for numeric options, shared by every constructor that takes one.

Imports: the standard library and :mod:`wschat.errors` only (pure layer).
"""

from __future__ import annotations

import math

from .errors import ConfigurationError

__all__ = ["check_number"]


def check_number(
    name: str,
    value: object,
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
    above: bool = False,
    unit: str = "",
    none: str = "",
) -> None:
    """Refuse a numeric option that is not a finite number of the right type in range.

    ``nan`` passes every ``x <= 0`` check and ``True`` is an ``int`` in Python, so
    options are checked here rather than with a bare comparison.

    Args:
        name: The option's name, for the message.
        value: The value given.
        minimum: The smallest value allowed (or the bound to stay above).
        maximum: The largest value allowed, if any.
        integer: Whether only an ``int`` will do (else ``int`` or ``float``).
        above: Whether ``minimum`` itself is refused.
        unit: What the number counts (``"seconds"``), for the message.
        none: If set, None is allowed and this says what it means (``"for no
            limit"``).

    Raises:
        ConfigurationError: The value is refused; the message says what is allowed.
    """
    if value is None and none:
        return
    types = int if integer else (int, float)
    # bool is an int in Python, never a count or a number of seconds here.
    if (
        isinstance(value, types)
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
        and (value > minimum if above else value >= minimum)
        and (maximum is None or value <= maximum)
    ):
        return
    kind = "an integer" if integer else "a number"
    if unit:
        kind += f" of {unit}"
    if maximum is not None:
        span = f"from {minimum:g} to {maximum:g}"
    else:
        span = f"above {minimum:g}" if above else f"of at least {minimum:g}"
    alternative = f", or None {none}" if none else ""
    try:
        shown = repr(value)[:40]
    except ValueError:  # an int too long to print
        shown = f"an {type(value).__name__} too large to show"
    raise ConfigurationError(f"{name} must be {kind} {span}{alternative}; got {shown}")
