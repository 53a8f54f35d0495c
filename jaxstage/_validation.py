"""Eager input checks: run in Python before any tracing, with messages that name the value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np


def _scalar(value: object) -> object:
    """A 0-d NumPy or JAX array as the Python number it holds (others unchanged), so that
    ``jnp.int32(1000)`` is accepted wherever ``1000`` and ``np.int32(1000)`` are."""
    if isinstance(value, (numbers.Number, str, bytes)) or not hasattr(value, "dtype"):
        return value
    if getattr(value, "shape", None) != ():
        return value
    try:
        return np.asarray(value).item()
    except Exception:  # noqa: BLE001 - a traced value: left for the type check to refuse
        return value


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in ``[low, high]``; bools and non-integral floats are rejected."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in {_range_text(low, high)}, got {value}")
    return value


def check_real(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """A finite real number in the given (closed unless said open) range."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    bad = not math.isfinite(value)
    if low is not None:
        bad |= value <= low if open_low else value < low
    if high is not None:
        bad |= value >= high if open_high else value > high
    if bad:
        allowed = _range_text(low, high, open_low, open_high)
        raise ValueError(f"{name} must be a finite number in {allowed}, got {value}")
    return value


def check_probability(value: object, name: str) -> float:
    return check_real(value, name, low=0.0, high=1.0)


def check_positive(value: object, name: str) -> float:
    return check_real(value, name, low=0.0, open_low=True)


def check_finite_array(array: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {np.asarray(array).tolist()}")


def check_probability_vector(
    values: Sequence[float], name: str, size: int | None = None
) -> tuple[float, ...]:
    """Non-negative entries summing to 1 (within 1e-6), returned renormalised exactly."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if size is not None and array.shape != (size,):
        raise ValueError(f"{name} must have {size} entries, got {array.size}")
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be finite, non-negative and non-empty, got {array.tolist()}")
    if abs(array.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got {array.tolist()} (sum {array.sum():.6g})")
    return tuple(float(x) for x in array / array.sum())


def _range_text(low, high, open_low: bool = False, open_high: bool = False) -> str:
    left = "(" if open_low or low is None else "["
    right = ")" if open_high or high is None else "]"
    low_text = "-inf" if low is None else _number_text(low)
    high_text = "inf" if high is None else _number_text(high)
    return f"{left}{low_text}, {high_text}{right}"


def _number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"
