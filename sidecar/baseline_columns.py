"""Arrow columns of a baseline file as numpy arrays and back: numeric, categorical and
embedding columns. pyarrow is imported on first use (see `sidecar.baseline`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sidecar.errors import BaselineError
from sidecar.stats.reference import EMBEDDING_COLUMN, category_key

if TYPE_CHECKING:
    import pyarrow as pa


def is_numeric_type(t: pa.DataType) -> bool:
    """Whether an Arrow column of type `t` can hold a numeric feature."""
    import pyarrow as pa  # noqa: PLC0415 - see the module docstring

    checks = (
        pa.types.is_integer,
        pa.types.is_floating,
        pa.types.is_boolean,
        pa.types.is_decimal,
        pa.types.is_null,
    )
    return any(check(t) for check in checks)


def column_float(col: pa.ChunkedArray | pa.Array, name: str, where: str) -> np.ndarray:
    """A numeric column as float64 (nulls become NaN); BaselineError naming the file if not.

    A float64 column without nulls comes back as a read-only view of arrow's memory.
    """
    import pyarrow as pa  # noqa: PLC0415 - see the module docstring

    if not is_numeric_type(col.type):
        raise BaselineError(
            f"baseline file {where}: column {name!r} is a numeric feature but holds {col.type} data"
        )
    as_float = col
    if col.type != pa.float64():
        import pyarrow.compute as pc  # noqa: PLC0415 - only other types need a cast

        try:
            as_float = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise BaselineError(
                f"baseline file {where}: column {name!r} cannot be read as numbers ({exc})"
            ) from exc
    if isinstance(as_float, pa.ChunkedArray):
        as_float = as_float.combine_chunks() if as_float.num_chunks != 1 else as_float.chunk(0)
    arr = as_float.to_numpy(zero_copy_only=False)
    return np.asarray(arr, dtype=np.float64)


def embedding_array(rows: np.ndarray) -> pa.Array:
    """(n, dim) floats as a fixed-size-list float32 column; rows with a NaN are null."""
    import pyarrow as pa  # noqa: PLC0415 - see the module docstring

    e = np.ascontiguousarray(rows, dtype=np.float32)
    if e.ndim != 2:
        raise ValueError(f"embedding array of shape {e.shape}: expected (rows, dim)")
    values = pa.array(e.reshape(-1), type=pa.float32())
    missing = ~np.isfinite(e).all(axis=1)
    if not missing.any():
        return pa.FixedSizeListArray.from_arrays(values, e.shape[1])
    return pa.FixedSizeListArray.from_arrays(
        values, e.shape[1], mask=pa.array(missing, type=pa.bool_())
    )


def embedding_column(col: pa.ChunkedArray | pa.Array, dim: int | None, where: str) -> np.ndarray:
    """An `embedding` column as (rows, dim) float32, NaN rows where null; `dim` None takes
    the first row's length. BaselineError for a non-list column or another length."""
    import pyarrow as pa  # noqa: PLC0415 - see the module docstring
    import pyarrow.compute as pc  # noqa: PLC0415

    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise BaselineError(
            f"{where}: column {EMBEDDING_COLUMN!r} holds {t} data, expected lists of floats"
        )
    if not is_numeric_type(t.value_type):
        raise BaselineError(f"{where}: column {EMBEDDING_COLUMN!r} holds lists of {t.value_type}")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    valid = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)
    present = col.filter(pa.array(valid))
    lengths = np.asarray(pc.list_value_length(present).to_numpy(zero_copy_only=False))
    if dim is None:
        dim = int(lengths[0]) if lengths.size else 0
    if (lengths != dim).any():
        bad = int(lengths[lengths != dim][0])
        raise BaselineError(
            f"{where}: column {EMBEDDING_COLUMN!r} has a row of {bad} values, expected {dim}"
        )
    out = np.full((n, dim), np.nan, dtype=np.float32)
    if len(present):
        flat = pc.cast(pc.list_flatten(present), pa.float32())
        values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
        out[valid] = values.reshape(len(present), dim)
    return out


def embedding_rows(col: pa.ChunkedArray | pa.Array, dim: int, where: str) -> np.ndarray:
    """The finite rows of an `embedding` column as (n, dim) float32; null rows and rows
    holding a null or non-finite value are left out."""
    rows = embedding_column(col, dim, where)
    finite: np.ndarray = rows[np.isfinite(rows).all(axis=1)]
    return finite


def column_keys(col: pa.ChunkedArray | pa.Array) -> list[str | None]:
    """A categorical column as `category_key` strings (None for missing)."""
    import pyarrow as pa  # noqa: PLC0415 - see the module docstring

    values: list[Any] = col.to_pylist()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return values
    return [category_key(v) for v in values]
