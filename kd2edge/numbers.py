"""Numbers checked where they enter (CLI flags, YAML, --set): one error naming the key, the value and the
valid range, instead of a silent wrong result (a NaN student, a whole data set for `--limit-train 0`).

    lr = number("lr", cfg["lr"], low=0, low_open=True)          # finite, > 0
    n = number("limit_train", v, integer=True, low=1, none=True)
"""
from __future__ import annotations

import math

from kd2edge import Kd2EdgeError


def _range(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def number(key: str, value, *, low=None, high=None, low_open=False, high_open=False, integer=False,
           none=False):
    """`value` as an int (integer=True) or a finite float within the bounds, else a Kd2EdgeError."""
    if value is None and none:
        return None
    kind = "an integer" if integer else "a number"
    want = f"{key} must be {kind} {_range(low, high, low_open, high_open)}"
    if isinstance(value, bool) or value is None:
        raise Kd2EdgeError(f"{want}, got {value!r}")
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise Kd2EdgeError(f"{want}, got {value!r}")
    else:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise Kd2EdgeError(f"{want}, got {value!r}") from None
        if not math.isfinite(value):
            raise Kd2EdgeError(f"{want}, got {value!r}")
    bad = ((low is not None and (value < low or (low_open and value == low)))
           or (high is not None and (value > high or (high_open and value == high))))
    if bad:
        raise Kd2EdgeError(f"{want}, got {value!r}")
    return value
