"""Reference baselines as parquet files: writing them, and loading them back.

A baseline file is a parquet table with one column per feature and an optional
`prediction` column. The statistics a drift check needs (quantile bin edges and shares,
category frequencies, missing rates) are stored as JSON in the file's schema metadata, so
loading only reads and sorts the numeric columns. The statistics themselves are
`sidecar.stats.reference`'s.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sidecar.embedding import EmbeddingDeviceError, EmbeddingOptions, reference_from_rows
from sidecar.errors import BaselineError
from sidecar.files import write_atomically
from sidecar.fsutil import umask_file_mode
from sidecar.stats.mmd import EmbeddingReference
from sidecar.stats.numbers import finite_or_none
from sidecar.stats.reference import (
    EMBEDDING_COLUMN,
    PREDICTION_COLUMN,
    Baseline,
    CategoricalReference,
    NumericReference,
    build_baseline,
    categorical_from_counts,
    categorical_reference,
    category_key,
    numeric_reference_sorted,
    readonly,
    sorted_finite,
)

MIN_EMBEDDING_ROWS = 8
"""Fewest finite reference embeddings the embedding test accepts."""
METADATA_KEY = b"drift_sidecar.baseline.v1"
"""Schema-metadata key of the stored statistics; the suffix is the format version."""
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- metadata


def _numeric_meta(r: NumericReference) -> dict[str, Any]:
    return {
        "edges": r.edges.tolist(),
        "shares": r.shares.tolist(),
        "missing_rate": finite_or_none(r.missing_rate),
        "mean": finite_or_none(r.mean),
        "count": r.count,
    }


def _categorical_meta(r: CategoricalReference) -> dict[str, Any]:
    return {
        "categories": list(r.categories),
        "shares": r.shares.tolist(),
        "missing_rate": finite_or_none(r.missing_rate),
    }


def _metadata(b: Baseline, psi_bins: int, max_categories: int) -> bytes:
    pred: dict[str, Any] | None = None
    if isinstance(b.prediction, NumericReference):
        pred = {"kind": "numeric", **_numeric_meta(b.prediction)}
    elif isinstance(b.prediction, CategoricalReference):
        pred = {"kind": "categorical", **_categorical_meta(b.prediction)}
    doc = {
        "format": FORMAT_VERSION,
        "model": b.model,
        "source": b.source,
        "rows": b.rows,
        "psi_bins": psi_bins,
        "max_categories": max_categories,
        "numeric": {r.name: _numeric_meta(r) for r in b.numeric},
        "categorical": {r.name: _categorical_meta(r) for r in b.categorical},
        "prediction": pred,
    }
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()


def _stored_numeric(
    meta: Mapping[str, Any], name: str, sorted_values: np.ndarray, missing_rate: float
) -> NumericReference | None:
    """The stored statistics of a numeric column, if present and consistent with its data."""
    try:
        edges = np.asarray(meta["edges"], dtype=np.float64)
        shares = np.asarray(meta["shares"], dtype=np.float64)
        count = int(meta["count"])
        mean = meta["mean"]
    except (KeyError, TypeError, ValueError):
        return None
    if (
        count != sorted_values.shape[0]
        or edges.ndim != 1
        or shares.shape != (edges.shape[0] + 1,)
        or not np.all(np.isfinite(edges))
        or np.any(np.diff(edges) <= 0)
        or abs(float(shares.sum()) - 1.0) > 1e-9
    ):
        return None
    return NumericReference(
        name=name,
        sorted_values=sorted_values,
        edges=readonly(edges),
        shares=readonly(shares),
        missing_rate=missing_rate,
        mean=math.nan if mean is None else float(mean),
    )


def _stored_categorical(meta: Mapping[str, Any], name: str) -> CategoricalReference | None:
    try:
        categories = tuple(str(c) for c in meta["categories"])
        shares = np.asarray(meta["shares"], dtype=np.float64)
        rate = meta["missing_rate"]
        # null: a rate over no rows (see sidecar.stats.numbers.rate)
        missing_rate = math.nan if rate is None else float(rate)
    except (KeyError, TypeError, ValueError):
        return None
    if shares.shape != (len(categories) + 1,) or abs(float(shares.sum()) - 1.0) > 1e-9:
        return None
    return CategoricalReference(
        name=name, categories=categories, shares=readonly(shares), missing_rate=missing_rate
    )


def _read_metadata(schema: pa.Schema) -> dict[str, Any] | None:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
        return None
    return doc


# --------------------------------------------------------------------------- write


def write_baseline(
    path: str | os.PathLike[str],
    model: str,
    *,
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, Sequence[str | None]],
    prediction: np.ndarray | Sequence[str | None] | None,
    prediction_kind: str | None,
    psi_bins: int = 10,
    max_categories: int = 50,
    source: str = "file",
    mode: int | None = None,
    embedding: np.ndarray | None = None,
) -> Baseline:
    """Compute a baseline, write it atomically as parquet with its statistics, return it.

    `embedding`, (rows, dim) with NaN rows where an event had none, becomes the
    `embedding` column (fixed-size lists of float32, null where NaN); the returned
    Baseline carries no embedding reference (`load_baseline` builds it with its options).

    The file gets `mode`, by default what `open()` would give it (0o666 less the umask:
    0o644 under the usual umask 022), so the non-root user of the image can read a
    baseline built by someone else. The daemon writes its own captured ones 0o600.
    """
    b = build_baseline(
        model,
        numeric=numeric,
        categorical=categorical,
        prediction=prediction,
        prediction_kind=prediction_kind,
        psi_bins=psi_bins,
        max_categories=max_categories,
        source=source,
    )
    arrays: dict[str, pa.Array] = {}
    for name, values in numeric.items():
        v = np.asarray(values, dtype=np.float64)
        arrays[name] = pa.array(v, type=pa.float64(), mask=~np.isfinite(v))
    for name, cvalues in categorical.items():
        arrays[name] = pa.array([category_key(x) for x in cvalues], type=pa.string())
    if b.prediction is not None and prediction is not None:
        if prediction_kind == "numeric":
            p = np.asarray(prediction, dtype=np.float64)
            arrays[PREDICTION_COLUMN] = pa.array(p, type=pa.float64(), mask=~np.isfinite(p))
        else:
            arrays[PREDICTION_COLUMN] = pa.array(
                [category_key(x) for x in prediction], type=pa.string()
            )
    if embedding is not None:
        arrays[EMBEDDING_COLUMN] = embedding_array(embedding)
    table = pa.table(arrays) if arrays else pa.table({"__empty__": pa.nulls(0)})
    table = table.replace_schema_metadata({METADATA_KEY: _metadata(b, psi_bins, max_categories)})
    target = Path(path)
    file_mode = umask_file_mode() if mode is None else mode
    digest = write_atomically(target, lambda fh: _write_parquet(table, fh), mode=file_mode)
    return Baseline(
        model=b.model,
        numeric=b.numeric,
        categorical=b.categorical,
        prediction=b.prediction,
        rows=b.rows,
        sha256=digest,
        source=source,
        path=str(target),
    )


def _write_parquet(table: pa.Table, fh: BinaryIO) -> str:
    """Write the table to an open file; returns the sha256 of the bytes written."""
    pq.write_table(table, fh, compression="zstd")
    fh.flush()
    fh.seek(0)
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- columns


_NUMERIC_TYPES = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_decimal,
    pa.types.is_null,
)


def is_numeric_type(t: pa.DataType) -> bool:
    """Whether an Arrow column of type `t` can hold a numeric feature."""
    return any(check(t) for check in _NUMERIC_TYPES)


def column_float(col: pa.ChunkedArray | pa.Array, name: str, where: str) -> np.ndarray:
    """A numeric column as float64 (nulls become NaN); BaselineError naming the file if not."""
    if not is_numeric_type(col.type):
        raise BaselineError(
            f"baseline file {where}: column {name!r} is a numeric feature but holds {col.type} data"
        )
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
    e = np.ascontiguousarray(rows, dtype=np.float32)
    if e.ndim != 2:
        raise ValueError(f"embedding array of shape {e.shape}: expected (rows, dim)")
    values = pa.array(e.reshape(-1), type=pa.float32())
    fixed = pa.FixedSizeListArray.from_arrays(values, e.shape[1])
    missing = ~np.isfinite(e).all(axis=1)
    if not missing.any():
        return fixed
    return pa.FixedSizeListArray.from_arrays(
        values, e.shape[1], mask=pa.array(missing, type=pa.bool_())
    )


def embedding_column(col: pa.ChunkedArray | pa.Array, dim: int | None, where: str) -> np.ndarray:
    """An `embedding` column as (rows, dim) float32, NaN rows where null; `dim` None takes
    the first row's length. BaselineError for a non-list column or another length."""
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
    values: list[Any] = col.to_pylist()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return values
    return [category_key(v) for v in values]


def _categorical_from_arrow(
    name: str, col: pa.ChunkedArray | pa.Array, max_categories: int
) -> CategoricalReference:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        # value_counts in Arrow avoids a Python loop over every row
        vc = pc.value_counts(col)
        counts: dict[str, int] = {}
        missing = 0
        for v, c in zip(
            vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
        ):
            if v is None:
                missing += c
            else:
                counts[v] = c
        return categorical_from_counts(name, counts, missing, max_categories)
    return categorical_reference(name, column_keys(col), max_categories)


# --------------------------------------------------------------------------- load


def load_baseline(
    path: str | os.PathLike[str],
    model: str,
    *,
    numeric_names: Sequence[str],
    categorical_names: Sequence[str],
    prediction_kind: str | None,
    psi_bins: int = 10,
    max_categories: int = 50,
    data: bytes | None = None,
    embedding: EmbeddingOptions | None = None,
) -> Baseline:
    """Read a parquet baseline; stored statistics are used when they match the settings.

    With `embedding`, the file must have an `embedding` column of that dimension; its
    rows are reduced to the embedding test's statistics (the rows are not kept).

    Raises BaselineError naming the file (and the column) when the file is missing or
    unreadable, lacks a configured column, or holds non-numeric data in a numeric column.
    A missing `prediction` column only disables prediction drift. `data`, when given, is
    the file's content already read (captured baselines are read with bounds first).
    """
    where = str(path)
    pf, schema, digest = _open_parquet(path, where, data)
    _check_columns(schema, where, numeric_names, categorical_names, prediction_kind)
    pred_kind = prediction_kind if PREDICTION_COLUMN in schema.names else None
    meta = _read_metadata(schema)
    stored = _StoredStats.of(meta, psi_bins, max_categories, pred_kind)

    # categorical columns are only read when their statistics are not stored
    first = [*numeric_names, *(n for n in categorical_names if stored.categorical(n) is None)]
    if pred_kind == "numeric" or (pred_kind == "categorical" and stored.prediction is None):
        first.append(PREDICTION_COLUMN)
    columns = _Columns(pf, where, first)

    tally = _Tally()
    num_refs = [
        tally.add(*_load_numeric(name, columns, stored.numeric(name), psi_bins))
        for name in numeric_names
    ]
    cat_refs = [
        tally.add(*_load_categorical(name, columns, stored.categorical(name), max_categories))
        for name in categorical_names
    ]
    pred: NumericReference | CategoricalReference | None = None
    if pred_kind == "numeric":
        pred = tally.add(*_load_numeric(PREDICTION_COLUMN, columns, stored.prediction, psi_bins))
    elif pred_kind == "categorical":
        pred = tally.add(
            *_load_categorical(PREDICTION_COLUMN, columns, stored.prediction, max_categories)
        )
    emb = None
    if embedding is not None:
        emb = load_embedding_reference(pf, schema, where, embedding)
    return Baseline(
        model=model,
        numeric=tuple(num_refs),
        categorical=tuple(cat_refs),
        prediction=pred,
        embedding=emb,
        rows=pf.metadata.num_rows,
        sha256=digest,
        # a captured baseline reloaded after a restart is still a captured one
        source="capture" if meta is not None and meta.get("source") == "capture" else "file",
        path=where,
        stats_source=tally.source,
    )


def load_embedding_reference(
    pf: pq.ParquetFile, schema: pa.Schema, where: str, opts: EmbeddingOptions
) -> EmbeddingReference:
    """The embedding test's reference from the file's `embedding` column."""
    if EMBEDDING_COLUMN not in schema.names:
        raise BaselineError(
            f"baseline file {where}: no column {EMBEDDING_COLUMN!r}, but the model has "
            "embedding drift configured"
        )
    try:
        col = pf.read(columns=[EMBEDDING_COLUMN], use_threads=True).column(EMBEDDING_COLUMN)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BaselineError(f"baseline file {where}: cannot read embeddings ({exc})") from exc
    rows = embedding_rows(col, opts.dim, f"baseline file {where}")
    return embedding_reference(rows, opts, where)


def embedding_reference(
    rows: np.ndarray, opts: EmbeddingOptions, where: str
) -> EmbeddingReference:
    """The reference statistics of (n, dim) rows; BaselineError if too few or no device."""
    if rows.shape[0] < MIN_EMBEDDING_ROWS:
        raise BaselineError(
            f"baseline {where}: {rows.shape[0]} finite embeddings, the test needs at least "
            f"{MIN_EMBEDDING_ROWS}"
        )
    try:
        return reference_from_rows(rows, opts)
    except EmbeddingDeviceError as exc:
        raise BaselineError(f"baseline {where}: {exc}") from exc


def _open_parquet(
    path: str | os.PathLike[str], where: str, data: bytes | None = None
) -> tuple[pq.ParquetFile, pa.Schema, str]:
    """The parquet file read whole into memory (or `data`, its bytes already read), its
    schema, and the sha256 of its bytes."""
    if data is None:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError as exc:
            raise BaselineError(f"baseline file {where}: not found") from exc
        except OSError as exc:
            raise BaselineError(f"baseline file {where}: cannot be read ({exc})") from exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BaselineError(f"baseline file {where}: not a readable parquet file ({exc})") from exc
    return pf, schema, digest


def _check_columns(
    schema: pa.Schema,
    where: str,
    numeric_names: Sequence[str],
    categorical_names: Sequence[str],
    prediction_kind: str | None,
) -> None:
    """Every configured feature has a column, and numeric ones (and predictions) numbers."""
    present = set(schema.names)
    for name in [*numeric_names, *categorical_names]:
        if name not in present:
            raise BaselineError(
                f"baseline file {where}: no column {name!r} for a configured feature"
            )
    for name in numeric_names:
        t = schema.field(name).type
        if not is_numeric_type(t):
            raise BaselineError(
                f"baseline file {where}: column {name!r} is a numeric feature but holds {t} data"
            )
    if prediction_kind == "numeric" and PREDICTION_COLUMN in present:
        t = schema.field(PREDICTION_COLUMN).type
        if not is_numeric_type(t):
            raise BaselineError(
                f"baseline file {where}: column {PREDICTION_COLUMN!r} holds {t} data "
                "but predictions are numeric"
            )


@dataclass(frozen=True)
class _StoredStats:
    """The statistics in a file's metadata that were computed with the current settings."""

    numeric_entries: Mapping[str, Any]
    categorical_entries: Mapping[str, Any]
    prediction: Mapping[str, Any] | None
    """Only when the file's prediction kind is the configured one."""

    @classmethod
    def of(
        cls,
        meta: Mapping[str, Any] | None,
        psi_bins: int,
        max_categories: int,
        prediction_kind: str | None,
    ) -> _StoredStats:
        if meta is None:
            return cls({}, {}, None)
        same_bins = meta.get("psi_bins") == psi_bins
        same_cap = meta.get("max_categories") == max_categories
        numeric = meta.get("numeric", {}) if same_bins else {}
        categorical = meta.get("categorical", {}) if same_cap else {}
        pred = meta.get("prediction")
        pred_ok = (
            isinstance(pred, dict)
            and pred.get("kind") == prediction_kind
            and (
                (prediction_kind == "numeric" and same_bins)
                or (prediction_kind == "categorical" and same_cap)
            )
        )
        return cls(
            numeric_entries=numeric if isinstance(numeric, dict) else {},
            categorical_entries=categorical if isinstance(categorical, dict) else {},
            prediction=pred if pred_ok else None,
        )

    def numeric(self, name: str) -> Mapping[str, Any] | None:
        entry = self.numeric_entries.get(name)
        return entry if isinstance(entry, dict) else None

    def categorical(self, name: str) -> Mapping[str, Any] | None:
        entry = self.categorical_entries.get(name)
        return entry if isinstance(entry, dict) else None


class _Columns:
    """A baseline file's columns: the ones surely needed in one threaded read, the rest
    (categorical columns whose stored statistics turn out unusable) on demand."""

    def __init__(self, pf: pq.ParquetFile, where: str, first: Sequence[str]) -> None:
        self._pf = pf
        self._where = where
        self._table = self._read(list(dict.fromkeys(first)), use_threads=True)

    def _read(self, names: list[str], use_threads: bool) -> pa.Table:
        try:
            return self._pf.read(columns=names, use_threads=use_threads)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BaselineError(
                f"baseline file {self._where}: cannot read columns ({exc})"
            ) from exc

    @property
    def where(self) -> str:
        return self._where

    def get(self, name: str) -> pa.ChunkedArray:
        if name not in self._table.column_names:
            col = self._read([name], use_threads=True).column(name)
            self._table = self._table.append_column(name, col)
        return self._table.column(name)


_Ref = TypeVar("_Ref", NumericReference, CategoricalReference)


@dataclass
class _Tally:
    """How many references came from stored statistics and how many were computed."""

    stored: int = 0
    computed: int = 0

    def add(self, ref: _Ref, stored: bool) -> _Ref:
        if stored:
            self.stored += 1
        else:
            self.computed += 1
        return ref

    @property
    def source(self) -> str:
        """`Baseline.stats_source`."""
        return "stored" if self.computed == 0 else "computed" if self.stored == 0 else "mixed"


def _load_numeric(
    name: str, columns: _Columns, entry: Mapping[str, Any] | None, psi_bins: int
) -> tuple[NumericReference, bool]:
    finite, missing_rate = sorted_finite(column_float(columns.get(name), name, columns.where))
    if entry is not None:
        ref = _stored_numeric(entry, name, readonly(finite), missing_rate)
        if ref is not None:
            return ref, True
    return numeric_reference_sorted(name, finite, missing_rate, psi_bins), False


def _load_categorical(
    name: str, columns: _Columns, entry: Mapping[str, Any] | None, max_categories: int
) -> tuple[CategoricalReference, bool]:
    ref = _stored_categorical(entry, name) if entry is not None else None
    if ref is not None:
        return ref, True
    return _categorical_from_arrow(name, columns.get(name), max_categories), False
