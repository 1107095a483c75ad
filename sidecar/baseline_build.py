"""`drift-sidecar baseline build`: a baseline file from a uniform sample of training data.

Training data (.parquet or .csv) is streamed in batches through a reservoir sample, so a
file of any size needs only the sample and one batch in memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sidecar.baseline import write_baseline
from sidecar.baseline_columns import (
    column_float,
    column_keys,
    embedding_column,
    is_numeric_type,
)
from sidecar.errors import BaselineError
from sidecar.stats.numbers import finite_or_none
from sidecar.stats.reference import (
    EMBEDDING_COLUMN,
    PREDICTION_COLUMN,
    Baseline,
    CategoricalReference,
    NumericReference,
)

_BATCH_ROWS = 65_536


def _iter_parquet(source: Path, columns: list[str]) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    try:
        pf = pq.ParquetFile(source)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BaselineError(f"training file {source}: not a readable parquet file ({exc})") from exc
    present = [c for c in columns if c in schema.names]
    return schema, pf.iter_batches(batch_size=_BATCH_ROWS, columns=present)


def _csv_header(source: Path) -> list[str]:
    try:
        reader = pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=1 << 16))
    except (pa.ArrowException, OSError) as exc:
        raise BaselineError(f"training file {source}: not a readable CSV file ({exc})") from exc
    names: list[str] = list(reader.schema.names)
    reader.close()
    return names


def _iter_csv(
    source: Path, columns: list[str], types: Mapping[str, pa.DataType]
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    header = _csv_header(source)
    present = [c for c in columns if c in header]
    convert = pacsv.ConvertOptions(
        include_columns=present,
        column_types={c: types[c] for c in present},
        strings_can_be_null=True,
    )
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            convert_options=convert,
        )
    except pa.ArrowInvalid as exc:
        raise _csv_error(source, header, exc) from exc
    except (pa.ArrowException, OSError) as exc:
        raise BaselineError(f"training file {source}: not a readable CSV file ({exc})") from exc
    schema = pa.schema([pa.field(c, types[c]) for c in present])

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except pa.ArrowInvalid as exc:
            raise _csv_error(source, header, exc) from exc

    return schema, batches()


_CSV_COLUMN = re.compile(r"column #(\d+)")


def _csv_error(source: Path, header: list[str], exc: Exception) -> BaselineError:
    m = _CSV_COLUMN.search(str(exc))
    if m and int(m.group(1)) < len(header):
        name = header[int(m.group(1))]
        return BaselineError(
            f"training file {source}: column {name!r} holds data that is not numeric ({exc})"
        )
    return BaselineError(f"training file {source}: cannot be parsed ({exc})")


def reservoir_sample(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, sample: int, seed: int = 0
) -> tuple[pa.Table, int]:
    """A uniform sample of `sample` rows from a stream of batches, in stream order.

    Each row gets a uniform random key and the rows with the smallest keys are kept
    (reservoir sampling with random priorities), so only the sample and one batch are
    ever in memory; the same seed and file give the same rows. Returns it and the rows seen.
    """
    rng = np.random.default_rng(seed)
    kept = schema.empty_table()
    keys = np.empty(0)
    rows = np.empty(0, dtype=np.int64)
    seen = 0
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        batch_keys = rng.random(n)
        table = pa.concat_tables([kept, pa.Table.from_batches([batch]).cast(schema)])
        keys = np.concatenate([keys, batch_keys])
        rows = np.concatenate([rows, np.arange(seen, seen + n, dtype=np.int64)])
        seen += n
        if keys.shape[0] > sample:
            pick = np.argpartition(keys, sample - 1)[:sample] if sample > 0 else np.empty(0, int)
            table = table.take(pa.array(pick))
            keys = keys[pick]
            rows = rows[pick]
        kept = table
    order = np.argsort(rows, kind="stable")
    return kept.take(pa.array(order)), seen


def build_baseline_file(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: str,
    *,
    numeric_names: Sequence[str],
    categorical_names: Sequence[str],
    prediction_kind: str | None,
    sample: int = 50_000,
    seed: int = 0,
    psi_bins: int = 10,
    max_categories: int = 50,
    embedding_dim: int | None = None,
) -> tuple[Baseline, list[dict[str, Any]]]:
    """Reservoir-sample training data (.parquet or .csv) into a baseline file.

    A parquet `embedding` column (lists of floats) is sampled with the rest and written;
    with `embedding_dim` (the model's `embedding.dim`) it must be there, of that length.

    Returns the written baseline and one summary per feature (and the prediction).
    """
    src = Path(source)
    if not src.exists():
        raise BaselineError(f"training file {src}: not found")
    if sample < 1:
        raise BaselineError(f"sample size {sample}: must be at least 1")
    wanted = list(dict.fromkeys([*numeric_names, *categorical_names]))
    if prediction_kind is not None:
        wanted.append(PREDICTION_COLUMN)
    suffix = src.suffix.lower()
    if suffix == ".csv":
        types: dict[str, pa.DataType] = {n: pa.float64() for n in numeric_names}
        types.update({n: pa.string() for n in categorical_names})
        types[PREDICTION_COLUMN] = pa.float64() if prediction_kind == "numeric" else pa.string()
        schema, batches = _iter_csv(src, wanted, types)
    elif suffix in (".parquet", ".pq"):
        wanted.append(EMBEDDING_COLUMN)  # lists of floats: parquet only
        schema, batches = _iter_parquet(src, wanted)
    else:
        raise BaselineError(f"training file {src}: expected a .parquet or .csv file")

    for name in [*numeric_names, *categorical_names]:
        if name not in schema.names:
            raise BaselineError(f"training file {src}: no column {name!r} for a configured feature")
    for name in numeric_names:
        if not is_numeric_type(schema.field(name).type):
            raise BaselineError(
                f"training file {src}: column {name!r} is a numeric feature "
                f"but holds {schema.field(name).type} data"
            )
    has_prediction = prediction_kind is not None and PREDICTION_COLUMN in schema.names
    if embedding_dim is not None and EMBEDDING_COLUMN not in schema.names:
        raise BaselineError(
            f"training file {src}: no column {EMBEDDING_COLUMN!r}, but the model has "
            "embedding drift configured (embedding columns need a parquet file)"
        )
    present = [c for c in wanted if c in schema.names]
    read_schema = pa.schema([schema.field(c) for c in present])
    try:
        table, seen = reservoir_sample(batches, read_schema, sample, seed)
    except (pa.ArrowException, OSError) as exc:
        raise BaselineError(f"training file {src}: cannot be read ({exc})") from exc

    where = str(src)
    numeric = {n: column_float(table.column(n), n, where) for n in numeric_names}
    categorical = {n: column_keys(table.column(n)) for n in categorical_names}
    prediction: np.ndarray | list[str | None] | None = None
    if has_prediction:
        col = table.column(PREDICTION_COLUMN)
        if prediction_kind == "numeric":
            prediction = column_float(col, PREDICTION_COLUMN, where)
        else:
            prediction = column_keys(col)
    embedding = None
    if EMBEDDING_COLUMN in table.column_names:
        embedding = embedding_column(
            table.column(EMBEDDING_COLUMN), embedding_dim, f"training file {src}"
        )
    b = write_baseline(
        out,
        model,
        numeric=numeric,
        categorical=categorical,
        prediction=prediction,
        prediction_kind=prediction_kind if has_prediction else None,
        psi_bins=psi_bins,
        max_categories=max_categories,
        embedding=embedding,
    )
    summaries = [_summary_numeric(r, numeric[r.name], "feature", seen) for r in b.numeric]
    summaries += [_summary_categorical(r, table.num_rows, "feature", seen) for r in b.categorical]
    if isinstance(b.prediction, NumericReference) and isinstance(prediction, np.ndarray):
        summaries.append(_summary_numeric(b.prediction, prediction, "prediction", seen))
    elif isinstance(b.prediction, CategoricalReference):
        summaries.append(_summary_categorical(b.prediction, table.num_rows, "prediction", seen))
    if embedding is not None:
        finite = int(np.isfinite(embedding).all(axis=1).sum())
        summaries.append(
            {
                "name": EMBEDDING_COLUMN,
                "role": "embedding",
                "type": "vector",
                "rows": finite,
                "source_rows": seen,
                "dim": int(embedding.shape[1]),
                "missing_rate": 1.0 - finite / embedding.shape[0] if embedding.shape[0] else None,
            }
        )
    return b, summaries


def _summary_numeric(
    r: NumericReference, values: np.ndarray, role: str, seen: int
) -> dict[str, Any]:
    v = r.sorted_values
    return {
        "name": r.name,
        "role": role,
        "type": "numeric",
        "rows": int(values.shape[0]),
        "source_rows": seen,
        "missing_rate": r.missing_rate,
        "min": float(v[0]) if v.shape[0] else None,
        "mean": finite_or_none(r.mean),
        "max": float(v[-1]) if v.shape[0] else None,
        "bins": int(r.shares.shape[0]),
    }


def _summary_categorical(
    r: CategoricalReference, rows: int, role: str, seen: int
) -> dict[str, Any]:
    return {
        "name": r.name,
        "role": role,
        "type": "categorical",
        "rows": rows,
        "source_rows": seen,
        "missing_rate": r.missing_rate,
        "categories": len(r.categories),
        "other_share": float(r.shares[-1]),
        "top": [(c, float(s)) for c, s in zip(r.categories[:5], r.shares[:5], strict=False)],
    }
