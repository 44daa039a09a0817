"""Turn what a caller hands to ``predict`` into one dense float32 row-major buffer.

Accepted, fastest first:
- a C-contiguous float32 numpy array of shape (n, num_feature): passed to C without a copy;
- any other numeric numpy array, or a pandas DataFrame (columns matched by name): converted;
- ``array.array`` ('f' without a copy, other numeric typecodes converted) or a ``memoryview``
  of floats, flat and row-major, n * num_feature long;
- a sequence of rows, each a sequence of numbers in model feature order or a mapping from
  feature name to number. ``None`` (JSON null) and NaN mean "missing"; bools and strings are
  refused, never guessed.

Zero rows are not an error (XGBoost returns an empty array for them): the batch is empty.
numpy is optional: it is only touched when the caller passes a numpy or pandas object.
"""

from __future__ import annotations

import math
import numbers
from array import array
from collections.abc import Mapping, Sequence

from .exceptions import FeatureNameError, InputError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

    Batch = tuple[Any, int, bool]  # (float32 data, rows, from numpy)

__all__ = ["PLAIN_NUMBERS", "PLAIN_NUMBERS_OR_NONE", "to_batch"]

_NUMPY_NUMERIC_KINDS = "fiu"
# Cells of these exact types are converted in C (by array.array here, by cffi for the single
# rows Model.predict hands over directly) without a per-value Python check.
PLAIN_NUMBERS = frozenset((float, int))
# ... and JSON's null, a missing value: NaN in C.
PLAIN_NUMBERS_OR_NONE = frozenset((float, int, type(None)))
# How many names an error message lists before it says "and N more".
_NAMES_SHOWN = 5


# (dense float32 buffer: numpy array, array.array or memoryview; row count; came from numpy).
# A plain tuple: predict() is called per row on devices, and a NamedTuple costs 0.3 us more.


def to_batch(rows: Any, num_feature: int, feature_names: Sequence[str] | None) -> Batch:
    kind = type(rows)
    # The common exact types first: each isinstance() against an ABC below costs ~0.1 us.
    if kind is list or kind is tuple:
        return _from_rows(rows, num_feature, feature_names)
    if kind is array:
        return _from_flat(_as_float32_array(rows), num_feature)
    module = kind.__module__
    if module == "numpy" or module.startswith("numpy."):  # ndarray's module is "numpy"
        return _from_numpy(rows, num_feature)
    if module.startswith("pandas"):
        return _from_dataframe(rows, num_feature, feature_names)
    if isinstance(rows, array):
        return _from_flat(_as_float32_array(rows), num_feature)
    if isinstance(rows, memoryview):
        return _from_memoryview(rows, num_feature)
    if isinstance(rows, (str, bytes, bytearray)) or not isinstance(rows, Sequence):
        raise InputError(
            f"rows must be a sequence of rows, a numpy array or an array.array; "
            f"got {type(rows).__name__}"
        )
    return _from_rows(rows, num_feature, feature_names)


def _from_numpy(rows: Any, num_feature: int) -> Batch:
    if rows.dtype.kind not in _NUMPY_NUMERIC_KINDS:
        raise InputError(f"numpy rows must be numeric; got dtype {rows.dtype}")
    if rows.ndim != 2:
        raise InputError(
            f"numpy rows must be 2-D (n_rows, {num_feature}); got shape {rows.shape}"
            + (f"; for one row use rows.reshape(1, {num_feature})" if rows.ndim == 1 else "")
        )
    if rows.shape[1] != num_feature:
        raise InputError(f"rows have {rows.shape[1]} columns; the model has {num_feature} features")
    # No copy when it already is C-contiguous float32 (the C side never writes to it).
    data = _numpy().ascontiguousarray(rows, dtype="float32")
    return data, rows.shape[0], True


def _numpy() -> Any:
    """numpy, imported on first use only: devices without it never get here."""
    import numpy

    return numpy


def _from_dataframe(frame: Any, num_feature: int, feature_names: Sequence[str] | None) -> Batch:
    if not hasattr(frame, "columns"):
        raise InputError(f"unsupported pandas object {type(frame).__name__}; pass a DataFrame")
    names = _require_names(feature_names)
    _check_names([str(c) for c in frame.columns], names, where="DataFrame columns")
    try:
        values = frame[list(names)].to_numpy(dtype="float32")
    except (TypeError, ValueError) as exc:
        raise InputError(f"DataFrame columns must be numeric: {exc}") from exc
    return _from_numpy(values, num_feature)


def _as_float32_array(values: array) -> array:  # type: ignore[type-arg]
    if values.typecode == "f":
        return values
    if values.typecode in "uw":
        raise InputError(f"array.array of typecode {values.typecode!r} is text, not numbers")
    return array("f", values)


def _from_memoryview(view: memoryview, num_feature: int) -> Batch:
    if not view.c_contiguous:
        raise InputError("memoryview rows must be C-contiguous")
    if view.format == "f":
        flat = view.cast("B").cast("f")
    elif view.format == "d":
        flat = memoryview(array("f", view.cast("B").cast("d")))
    else:
        raise InputError(
            f"memoryview rows must hold floats ('f' or 'd'); got format {view.format!r}"
        )
    if view.ndim == 2 and view.shape is not None and view.shape[1] != num_feature:
        raise InputError(f"rows have {view.shape[1]} columns; the model has {num_feature} features")
    return _from_flat(flat, num_feature)


def _from_flat(flat: Any, num_feature: int) -> Batch:
    n_values = len(flat)
    if n_values % num_feature:
        raise InputError(
            f"a flat buffer must hold n_rows * {num_feature} values; it holds {n_values}"
        )
    return flat, n_values // num_feature, False


def _from_rows(rows: Sequence[Any], num_feature: int, feature_names: Sequence[str] | None) -> Batch:
    flat = array("f")
    for i, row in enumerate(rows):
        kind = type(row)
        plain = kind is list or kind is tuple  # no need to ask the ABCs below
        if not plain and isinstance(row, Mapping):
            names = _require_names(feature_names)
            if len(row) != num_feature or any(name not in row for name in names):
                _check_names(list(row), names, where=f"row {i}")
            if not _extend_plain(flat, [row[name] for name in names]):
                flat.extend(_number(row[name], i, name) for name in names)
        elif plain or (isinstance(row, Sequence) and not isinstance(row, (str, bytes, bytearray))):
            if len(row) != num_feature:
                raise InputError(
                    f"row {i} has {len(row)} values; the model has {num_feature} features"
                )
            if not _extend_plain(flat, row):
                flat.extend(_number(value, i, j) for j, value in enumerate(row))
        else:
            raise InputError(
                f"row {i} is a {type(row).__name__}; each row must be a list of numbers "
                "or an object keyed by feature name"
            )
    return flat, len(rows), False


def _extend_plain(flat: array, values: Sequence[Any]) -> bool:  # type: ignore[type-arg]
    """The common case, converted in C: every cell a float or an int. False (and ``flat``
    unchanged) when some cell needs the careful path, which also words the error."""
    if not PLAIN_NUMBERS.issuperset(map(type, values)):
        return False
    size = len(flat)
    try:
        flat.extend(values)
    except OverflowError:  # an int beyond double range
        del flat[size:]
        return False
    return True


def _number(value: Any, row: int, feature: int | str) -> float:
    """One cell as float; None means missing. Refuses bools, strings and containers."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if value is None:
        return math.nan
    if kind is int or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
        try:
            return float(value)
        except OverflowError:
            raise InputError(
                f"row {row}, feature {_name(feature)}: {_short(value)} is out of float range"
            ) from None
    raise InputError(
        f"row {row}, feature {_name(feature)}: expected a number or null, "
        f"got {type(value).__name__} {_short(value)}"
    )


def _name(feature: int | str) -> str:
    return repr(feature) if isinstance(feature, str) else str(feature)


def _require_names(feature_names: Sequence[str] | None) -> Sequence[str]:
    if not feature_names:
        raise FeatureNameError(
            "rows were given by feature name, but this model has no feature names; "
            "give each row as a list of numbers in model order"
        )
    return feature_names


def _check_names(given: Sequence[str], names: Sequence[str], *, where: str) -> None:
    known = set(names)
    seen = set(given)
    missing = [n for n in names if n not in seen]
    unknown = [g for g in given if g not in known]
    problems = []
    if missing:
        problems.append(f"missing {_list(missing)}")
    if unknown:
        problems.append(f"unknown {_list(unknown)}")
    if problems:
        raise FeatureNameError(
            f"{where}: " + "; ".join(problems) + f" (model features: {_list(names)})"
        )


def _list(names: Sequence[Any]) -> str:
    shown = ", ".join(repr(n) for n in names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return f"[{shown}" + (f", and {more} more]" if more > 0 else "]")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
