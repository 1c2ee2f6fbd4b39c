"""The one check for numbers that come from users and files: finite reals, optionally bounded below.

Every reader (scored-generations rows, budgets, router files, candidate files, measured costs) uses
``finite`` so a bad number is refused with the same words wherever it comes from.
"""

from __future__ import annotations

import json
import math
import numbers

from .errors import RouterError


def is_finite(value) -> bool:
    """A real number (not a bool) that is finite, without raising on huge integers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _shown(value) -> str:
    if isinstance(value, float):
        return repr(value)
    try:
        return json.dumps(value)[:40]
    except (TypeError, ValueError, RecursionError):  # not JSON, or nested too deeply to show
        return type(value).__name__


def finite(value, what: str, minimum: float | None = None, error: type[RouterError] = RouterError,
           where: str = "") -> float:
    """``value`` as a float, or ``error`` with one line: '[where: ]what must be a finite number[ >= m], got ...'."""
    prefix = f"{where}: " if where else ""
    need = "a finite number" + (f" >= {minimum:g}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{prefix}{what} must be {need}, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise error(f"{prefix}{what} must be {need}, got a number too large") from None
    if not math.isfinite(number):
        raise error(f"{prefix}{what} must be {need}, got {_shown(number)}")
    if minimum is not None and number < minimum:
        raise error(f"{prefix}{what} must be {need}, got {number:g}")
    return number
