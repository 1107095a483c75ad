"""Reference baselines as parquet files: writing them, and loading them back.

A baseline file is a parquet table with one column per feature and an optional
`prediction` column. The statistics a drift check needs (quantile bin edges and shares,
category frequencies, missing rates) are stored as JSON in the file's schema metadata, so
loading only reads and sorts the numeric columns. The statistics themselves are
`sidecar.stats.reference`'s.

pyarrow is imported on first use, not with this module: a daemon whose models have no
baseline file (or capture one from live traffic and have not finished) never loads it,
which saves about 10 MiB of its own memory and 60 MiB of mapped libraries. A file is read
one column at a time and its bytes are never held whole; arrow's memory pool gives back
what it held once a load is done, so what stays is one sorted float64 array per numeric
column.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import numpy as np

from sidecar.baseline_columns import (
    column_float,
    column_keys,
    embedding_array,
    embedding_rows,
    is_numeric_type,
)
from sidecar.baseline_meta import (
    METADATA_KEY,
    StoredStats,
    read_metadata,
    stats_metadata,
    stored_categorical,
    stored_numeric,
)
from sidecar.embedding import EmbeddingDeviceError, EmbeddingOptions, reference_from_rows
from sidecar.errors import BaselineError
from sidecar.files import write_atomically
from sidecar.fsutil import umask_file_mode
from sidecar.stats.mmd import EmbeddingReference
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
_READ_ATTEMPTS = 3
"""Reads of a file that changed while being read (rewritten in place) before giving up."""
_HASH_CHUNK = 1 << 20

if TYPE_CHECKING:
    import pyarrow as pa


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

    The file gets `mode`, by default what `open()` would give it (0o666 less the umask:
    0o644 under the usual umask 022), so the non-root user of the image can read a
    baseline built by someone else. The daemon writes its own captured ones 0o600.

    `embedding`, (rows, dim) with NaN rows where an event had none, becomes the
    `embedding` column (fixed-size lists of float32, null where NaN); the returned
    Baseline carries no embedding reference (`load_baseline` builds it with its options).
    """
    import pyarrow as pa  # noqa: PLC0415 - see the module docstring

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
    table = table.replace_schema_metadata(
        {METADATA_KEY: stats_metadata(b, psi_bins, max_categories)}
    )
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
    import pyarrow.parquet as pq  # noqa: PLC0415 - see the module docstring

    pq.write_table(table, fh, compression="zstd")
    fh.flush()
    fh.seek(0)
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- load


def embedding_reference(rows: np.ndarray, opts: EmbeddingOptions, where: str) -> EmbeddingReference:
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


def _categorical_from_arrow(
    name: str, col: pa.ChunkedArray | pa.Array, max_categories: int
) -> CategoricalReference:
    import pyarrow as pa  # noqa: PLC0415 - see the module docstring
    import pyarrow.compute as pc  # noqa: PLC0415

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

    Raises BaselineError naming the file (and the column) when the file is missing or
    unreadable, lacks a configured column, or holds non-numeric data in a numeric column.
    A missing `prediction` column only disables prediction drift. `data`, when given, is
    the file's content already read (captured baselines are read with bounds first).
    With `embedding`, the file must have an `embedding` column of that dimension; its
    rows are reduced to the embedding test's statistics (the rows are not kept).
    """
    import pyarrow as pa  # noqa: PLC0415 - see the module docstring

    where = str(path)
    try:
        for _ in range(_READ_ATTEMPTS):
            with _BaselineFile(path, where, data) as f:
                baseline = _load(
                    f,
                    model=model,
                    numeric_names=numeric_names,
                    categorical_names=categorical_names,
                    prediction_kind=prediction_kind,
                    psi_bins=psi_bins,
                    max_categories=max_categories,
                    embedding=embedding,
                )
                if f.unchanged():
                    return baseline
        raise BaselineError(
            f"baseline file {where}: changed while being read, {_READ_ATTEMPTS} times; "
            "write it to another name and rename it into place"
        )
    finally:
        # The pool keeps freed memory for reuse; a baseline is read once, so give it back.
        pa.default_memory_pool().release_unused()


def _load(
    f: _BaselineFile,
    *,
    model: str,
    numeric_names: Sequence[str],
    categorical_names: Sequence[str],
    prediction_kind: str | None,
    psi_bins: int,
    max_categories: int,
    embedding: EmbeddingOptions | None = None,
) -> Baseline:
    schema = f.schema
    _check_columns(schema, f.where, numeric_names, categorical_names, prediction_kind)
    pred_kind = prediction_kind if PREDICTION_COLUMN in schema.names else None
    meta = read_metadata(schema)
    stored = StoredStats.of(meta, psi_bins, max_categories, pred_kind)

    tally = _Tally()
    num_refs = [
        tally.add(*_load_numeric(name, f, stored.numeric(name), psi_bins)) for name in numeric_names
    ]
    cat_refs = [
        tally.add(*_load_categorical(name, f, stored.categorical(name), max_categories))
        for name in categorical_names
    ]
    pred: NumericReference | CategoricalReference | None = None
    if pred_kind == "numeric":
        pred = tally.add(*_load_numeric(PREDICTION_COLUMN, f, stored.prediction, psi_bins))
    elif pred_kind == "categorical":
        pred = tally.add(
            *_load_categorical(PREDICTION_COLUMN, f, stored.prediction, max_categories)
        )
    emb = None
    if embedding is not None:
        if EMBEDDING_COLUMN not in schema.names:
            raise BaselineError(
                f"baseline file {f.where}: no column {EMBEDDING_COLUMN!r}, but the model has "
                "embedding drift configured"
            )
        rows = embedding_rows(f.column(EMBEDDING_COLUMN), embedding.dim, f"baseline file {f.where}")
        emb = embedding_reference(rows, embedding, f.where)
    return Baseline(
        model=model,
        numeric=tuple(num_refs),
        categorical=tuple(cat_refs),
        prediction=pred,
        embedding=emb,
        rows=f.rows,
        sha256=f.sha256,
        # a captured baseline reloaded after a restart is still a captured one
        source="capture" if meta is not None and meta.get("source") == "capture" else "file",
        path=f.where,
        stats_source=tally.source,
    )


class _BaselineFile:
    """An open parquet baseline: the sha256 of its bytes, its schema, and its columns read
    one at a time.

    The hash and the columns come from the same open file, so a file replaced by a rename
    while it is read cannot mix two versions; `unchanged` tells whether it was rewritten in
    place meanwhile.
    """

    def __init__(self, path: str | os.PathLike[str], where: str, data: bytes | None) -> None:
        import pyarrow as pa  # noqa: PLC0415 - see the module docstring
        import pyarrow.parquet as pq  # noqa: PLC0415

        self.where = where
        self._identity: tuple[int, int] | None = None
        try:
            # `data`: the bytes are already in memory, and cannot change
            self._file = pa.OSFile(os.fspath(path), "r") if data is None else pa.BufferReader(data)
        except FileNotFoundError as exc:
            raise BaselineError(f"baseline file {where}: not found") from exc
        except OSError as exc:
            raise BaselineError(f"baseline file {where}: cannot be read ({exc})") from exc
        try:
            if data is None:
                self._identity = _identity(self._file.fileno())
                self.sha256 = self._hash()
            else:
                self.sha256 = hashlib.sha256(data).hexdigest()
            self._file.seek(0)
            self._pf = pq.ParquetFile(self._file)
            self.schema: pa.Schema = self._pf.schema_arrow
            self.rows = int(self._pf.metadata.num_rows)
        except OSError as exc:
            self._file.close()
            raise BaselineError(f"baseline file {where}: cannot be read ({exc})") from exc
        except (pa.ArrowException, ValueError) as exc:
            self._file.close()
            raise BaselineError(
                f"baseline file {where}: not a readable parquet file ({exc})"
            ) from exc

    def _hash(self) -> str:
        h = hashlib.sha256()
        while chunk := self._file.read(_HASH_CHUNK):
            h.update(chunk)
        return h.hexdigest()

    def column(self, name: str) -> pa.ChunkedArray:
        """One column, read on its own (no other column is held meanwhile)."""
        import pyarrow as pa  # noqa: PLC0415 - see the module docstring

        try:
            # no threads: one column of one file; arrow's pool would spawn a thread per core
            return self._pf.read(columns=[name], use_threads=False).column(name)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BaselineError(
                f"baseline file {self.where}: cannot read column {name!r} ({exc})"
            ) from exc

    def unchanged(self) -> bool:
        """Whether the open file still has the size and modification time it had at open."""
        return self._identity is None or _identity(self._file.fileno()) == self._identity

    def __enter__(self) -> _BaselineFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns


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
    name: str, f: _BaselineFile, entry: Mapping[str, Any] | None, psi_bins: int
) -> tuple[NumericReference, bool]:
    finite, missing_rate = sorted_finite(column_float(f.column(name), name, f.where))
    if entry is not None:
        ref = stored_numeric(entry, name, readonly(finite), missing_rate)
        if ref is not None:
            return ref, True
    return numeric_reference_sorted(name, finite, missing_rate, psi_bins), False


def _load_categorical(
    name: str, f: _BaselineFile, entry: Mapping[str, Any] | None, max_categories: int
) -> tuple[CategoricalReference, bool]:
    ref = stored_categorical(entry, name) if entry is not None else None
    if ref is not None:
        return ref, True  # stored: the column is never read
    return _categorical_from_arrow(name, f.column(name), max_categories), False
