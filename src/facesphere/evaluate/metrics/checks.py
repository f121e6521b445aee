"""Input validation shared by the metrics: every user error is an :class:`~facesphere.errors.InvalidOptionError`."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ...errors import InvalidOptionError


def as_float_array(values: Any, name: str, ndims: tuple[int, ...] = (1,)) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(f"{name} must be an array of numbers ({exc})") from None
    if arr.ndim not in ndims:
        shapes = " or ".join(f"{d}-D" for d in ndims)
        raise InvalidOptionError(f"{name} must be {shapes}, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidOptionError(f"{name} is empty: nothing to evaluate")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.ravel())
        raise InvalidOptionError(
            f"{name} contains {bad.size} NaN or infinite value(s) (first at flat index {int(bad[0])}); "
            "check the features that produced them"
        )
    return arr


def as_labels(issame: Any, n: int, name: str = "issame") -> np.ndarray:
    arr = np.asarray(issame)
    if arr.ndim != 1:
        raise InvalidOptionError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidOptionError(f"scores and {name} have different lengths ({n} vs {arr.shape[0]})")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind in "iuf":
        ok = (arr == 0) | (arr == 1)
        if not ok.all():
            raise InvalidOptionError(
                f"{name} must be binary (bool or 0/1); found {arr[~ok][0]!r} at index {int(np.flatnonzero(~ok)[0])}"
            )
        return arr == 1
    raise InvalidOptionError(f"{name} must be bool or 0/1 numbers, got dtype {arr.dtype}")


def scores_labels(scores: Any, issame: Any) -> tuple[np.ndarray, np.ndarray]:
    lab = np.asarray(issame)
    s = np.asarray(scores)
    if s.ndim == 1 and lab.ndim == 1 and s.shape[0] != lab.shape[0]:
        raise InvalidOptionError(f"scores and issame have different lengths ({s.shape[0]} vs {lab.shape[0]})")
    s = as_float_array(scores, "scores")
    return s, as_labels(issame, s.shape[0])


def need_both_classes(y: np.ndarray, what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        kind = "negative (different-identity)" if n_pos else "positive (same-identity)"
        raise InvalidOptionError(f"{what} needs both classes, but there is no {kind} pair")


def check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidOptionError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidOptionError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_rate(value: Any, name: str, *, allow_zero: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"{name} must be a number in [0, 1], got {value!r}") from None
    low_ok = v >= 0.0 if allow_zero else v > 0.0
    if not (math.isfinite(v) and low_ok and v <= 1.0):
        rng = "[0, 1]" if allow_zero else "(0, 1]"
        raise InvalidOptionError(f"{name} must be in {rng}, got {value!r}")
    return v
