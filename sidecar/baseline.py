"""Reference baselines: parquet in and out, and the reference statistics drift checks use.

A baseline file is a parquet table with one column per feature and an optional
`prediction` column. The statistics a drift check needs (quantile bin edges and shares,
category frequencies, missing rates) are stored as JSON in the file's schema metadata, so
loading only reads and sorts the numeric columns.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sidecar.errors import BaselineError
from sidecar.fsutil import umask_file_mode

OTHER = "__other__"
"""Pooled bin for categories not among the reference's kept categories."""

PREDICTION_COLUMN = "prediction"
METADATA_KEY = b"drift_sidecar.baseline.v1"
"""Schema-metadata key of the stored statistics; the suffix is the format version."""
FORMAT_VERSION = 1

_BATCH_ROWS = 65_536


def category_key(value: object) -> str | None:
    """The string a categorical value is compared as; None for missing.

    Booleans are `true`/`false` (their JSON spelling) and integral floats drop the `.0`,
    so a value means the same whether it came from an event, a parquet or a CSV file.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        if not math.isfinite(f):
            return None
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class NumericReference:
    """Reference statistics of one numeric column."""

    name: str
    sorted_values: np.ndarray
    """Finite reference values, ascending float64 (the KS reference sample)."""
    edges: np.ndarray
    """Inner bin edges, strictly increasing; bin i holds (edges[i-1], edges[i]]."""
    shares: np.ndarray
    """Reference share of each of the len(edges) + 1 bins; sums to 1."""
    missing_rate: float
    mean: float
    """Mean of the finite reference values; NaN when there are none."""

    @property
    def count(self) -> int:
        """Finite reference values."""
        return int(self.sorted_values.shape[0])

    @property
    def usable(self) -> bool:
        """Whether the reference holds any finite value to compare with."""
        return self.count > 0

    @property
    def upper_bounds(self) -> np.ndarray:
        """Upper bound of each bin, `inf` for the last (the `le`-style label of a bin)."""
        return np.append(self.edges, np.inf)

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """Bin of each value: outer bins are open-ended so no finite value is dropped."""
        return np.searchsorted(self.edges, np.asarray(values, dtype=np.float64), side="left")

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Count of the finite values in each bin (NaN and ±inf are missing)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        return np.bincount(self.bin_index(v), minlength=self.edges.shape[0] + 1)


@dataclass(frozen=True, eq=False)
class CategoricalReference:
    """Reference statistics of one categorical column."""

    name: str
    categories: tuple[str, ...]
    """Reference categories, most frequent first, at most max_categories."""
    shares: np.ndarray
    """Share of each category, then of OTHER (reference values beyond the cap)."""
    missing_rate: float
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.categories)})

    @property
    def usable(self) -> bool:
        """Whether the reference holds any non-missing value to compare with."""
        return len(self.categories) > 0

    @property
    def bin_labels(self) -> tuple[str, ...]:
        """Label of each bin: the categories, then OTHER."""
        return (*self.categories, OTHER)

    def code(self, value: object) -> int:
        """Code of one value: see `codes`."""
        key = value if isinstance(value, str) else category_key(value)
        if key is None:
            return -1
        return self._index.get(key, len(self.categories))

    def codes(self, values: Sequence[str | None]) -> np.ndarray:
        """int32 codes: index into categories, len(categories) for OTHER, -1 for missing."""
        other = len(self.categories)
        index = self._index
        out = np.fromiter(
            (
                -1
                if v is None
                else index.get(v, other)
                if isinstance(v, str)
                else self.code(v)
                for v in values
            ),
            dtype=np.int32,
            count=len(values),
        )
        return out

    def bin_counts(self, codes: np.ndarray) -> np.ndarray:
        """Count of non-missing codes in each bin (categories, then OTHER)."""
        c = np.asarray(codes)
        return np.bincount(c[c >= 0], minlength=len(self.categories) + 1)


Reference = NumericReference | CategoricalReference


@dataclass(frozen=True, eq=False)
class Baseline:
    """A model's reference: statistics per feature and for its predictions."""

    model: str
    numeric: tuple[NumericReference, ...]
    categorical: tuple[CategoricalReference, ...]
    prediction: NumericReference | CategoricalReference | None
    rows: int
    sha256: str
    """Of the parquet file's bytes; empty for a baseline never written to a file."""
    source: str
    """"file" or "capture"."""
    path: str | None
    stats_source: str = "computed"
    """"stored" when every statistic came from the file's metadata, "computed" when none
    did, "mixed" otherwise."""

    @property
    def numeric_names(self) -> tuple[str, ...]:
        """Numeric feature names, in column order of `WindowData.numeric`."""
        return tuple(r.name for r in self.numeric)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        """Categorical feature names, in column order of `WindowData.categorical`."""
        return tuple(r.name for r in self.categorical)


# --------------------------------------------------------------------------- statistics


def quantile_edges(sorted_values: np.ndarray, psi_bins: int) -> np.ndarray:
    """Inner PSI bin edges: the reference's 1/B … (B-1)/B quantiles, de-duplicated.

    The quantiles are actual reference values (inverted CDF), so a bin boundary never
    falls between the points of discrete data.
    """
    if sorted_values.shape[0] == 0 or psi_bins < 2:
        return np.empty(0, dtype=np.float64)
    n = sorted_values.shape[0]
    # inverted CDF: the smallest value whose empirical CDF reaches i/B, i.e. index
    # ceil(i*n/B) - 1, in integers so no rounding moves an edge by one value
    i = np.arange(1, psi_bins, dtype=np.int64)
    idx = (i * n + psi_bins - 1) // psi_bins - 1
    return np.unique(sorted_values[idx]).astype(np.float64)


def _shares_sorted(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    n = sorted_values.shape[0]
    if n == 0:
        shares = np.zeros(edges.shape[0] + 1)
        shares[0] = 1.0
        return shares
    cum = np.searchsorted(sorted_values, edges, side="right")
    counts = np.diff(np.concatenate(([0], cum, [n])))
    out: np.ndarray = counts / n
    return out


def numeric_reference(name: str, values: np.ndarray, psi_bins: int = 10) -> NumericReference:
    """Reference statistics of one numeric column (NaN and ±inf are missing)."""
    v = np.asarray(values, dtype=np.float64)
    total = v.shape[0]
    finite = np.sort(v[np.isfinite(v)])
    edges = quantile_edges(finite, psi_bins)
    return NumericReference(
        name=name,
        sorted_values=_readonly(finite),
        edges=_readonly(edges),
        shares=_readonly(_shares_sorted(finite, edges)),
        missing_rate=_rate(total - finite.shape[0], total),
        mean=float(finite.mean()) if finite.shape[0] else math.nan,
    )


def categorical_reference(
    name: str, values: Sequence[object], max_categories: int = 50
) -> CategoricalReference:
    """Reference statistics of one categorical column; values compare as `category_key`."""
    counts: Counter[str] = Counter()
    missing = 0
    for v in values:
        key = v if isinstance(v, str) else category_key(v)
        if key is None:
            missing += 1
        else:
            counts[key] += 1
    return _categorical_from_counts(name, counts, missing, max_categories)


def _categorical_from_counts(
    name: str, counts: Mapping[str, int], missing: int, max_categories: int
) -> CategoricalReference:
    # ties broken by name so the kept categories do not depend on row order
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = ranked[:max_categories]
    present = sum(counts.values())
    if present == 0:
        shares = np.array([1.0])
    else:
        kept_counts = np.array([c for _, c in kept], dtype=np.float64)
        shares = np.append(kept_counts, present - kept_counts.sum()) / present
    return CategoricalReference(
        name=name,
        categories=tuple(k for k, _ in kept),
        shares=_readonly(shares),
        missing_rate=_rate(missing, present + missing),
    )


def _rate(part: int, total: int) -> float:
    return part / total if total else 0.0


def build_baseline(
    model: str,
    *,
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, Sequence[str | None]],
    prediction: np.ndarray | Sequence[str | None] | None,
    prediction_kind: str | None,
    psi_bins: int = 10,
    max_categories: int = 50,
    source: str = "capture",
) -> Baseline:
    """Compute a baseline from columns held in memory (sha256 stays empty until written)."""
    rows = _check_lengths(numeric, categorical, prediction, prediction_kind)
    num = tuple(
        numeric_reference(name, _as_float(values, name, "<memory>"), psi_bins)
        for name, values in numeric.items()
    )
    cat = tuple(
        categorical_reference(name, values, max_categories) for name, values in categorical.items()
    )
    pred = _prediction_reference(prediction, prediction_kind, psi_bins, max_categories)
    return Baseline(
        model=model,
        numeric=num,
        categorical=cat,
        prediction=pred,
        rows=rows,
        sha256="",
        source=source,
        path=None,
    )


def _check_lengths(
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, Sequence[str | None]],
    prediction: np.ndarray | Sequence[str | None] | None,
    prediction_kind: str | None,
) -> int:
    if prediction_kind not in (None, "numeric", "categorical"):
        raise BaselineError(f"prediction kind {prediction_kind!r}: expected numeric or categorical")
    lengths = {name: len(v) for name, v in numeric.items()}
    lengths.update({name: len(v) for name, v in categorical.items()})
    if prediction is not None and prediction_kind is not None:
        if PREDICTION_COLUMN in lengths:
            raise BaselineError(
                f"feature {PREDICTION_COLUMN!r}: the name is reserved for the prediction column"
            )
        lengths[PREDICTION_COLUMN] = len(prediction)
    if not lengths:
        return 0
    rows = next(iter(lengths.values()))
    for name, n in lengths.items():
        if n != rows:
            raise BaselineError(f"column {name!r}: {n} values, but other columns have {rows}")
    return rows


def _as_float(values: object, name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BaselineError(f"{where}: column {name!r} holds non-numeric data ({exc})") from exc
    if arr.ndim != 1:
        raise BaselineError(f"{where}: column {name!r} is not one-dimensional")
    return arr


def _prediction_reference(
    prediction: np.ndarray | Sequence[object] | None,
    kind: str | None,
    psi_bins: int,
    max_categories: int,
) -> NumericReference | CategoricalReference | None:
    if prediction is None or kind is None:
        return None
    if kind == "numeric":
        return numeric_reference(
            PREDICTION_COLUMN, _as_float(prediction, PREDICTION_COLUMN, "<memory>"), psi_bins
        )
    return categorical_reference(PREDICTION_COLUMN, list(prediction), max_categories)


# --------------------------------------------------------------------------- metadata


def _f(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _numeric_meta(r: NumericReference) -> dict[str, Any]:
    return {
        "edges": r.edges.tolist(),
        "shares": r.shares.tolist(),
        "missing_rate": r.missing_rate,
        "mean": _f(r.mean),
        "count": r.count,
    }


def _categorical_meta(r: CategoricalReference) -> dict[str, Any]:
    return {
        "categories": list(r.categories),
        "shares": r.shares.tolist(),
        "missing_rate": r.missing_rate,
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
        edges=_readonly(edges),
        shares=_readonly(shares),
        missing_rate=missing_rate,
        mean=math.nan if mean is None else float(mean),
    )


def _stored_categorical(meta: Mapping[str, Any], name: str) -> CategoricalReference | None:
    try:
        categories = tuple(str(c) for c in meta["categories"])
        shares = np.asarray(meta["shares"], dtype=np.float64)
        missing_rate = float(meta["missing_rate"])
    except (KeyError, TypeError, ValueError):
        return None
    if shares.shape != (len(categories) + 1,) or abs(float(shares.sum()) - 1.0) > 1e-9:
        return None
    return CategoricalReference(
        name=name, categories=categories, shares=_readonly(shares), missing_rate=missing_rate
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
) -> Baseline:
    """Compute a baseline, write it atomically as parquet with its statistics, return it.

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
    table = pa.table(arrays) if arrays else pa.table({"__empty__": pa.nulls(0)})
    table = table.replace_schema_metadata({METADATA_KEY: _metadata(b, psi_bins, max_categories)})
    target = Path(path)
    digest = _write_atomically(table, target, umask_file_mode() if mode is None else mode)
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


def _write_atomically(table: pa.Table, target: Path, mode: int = 0o600) -> str:
    """Write to a temporary file beside the target, then rename; returns the sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0o600; the rename keeps what is set here
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        digest = _sha256_file(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return digest
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return digest


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- load


_NUMERIC_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                  pa.types.is_decimal, pa.types.is_null)


def _is_numeric_type(t: pa.DataType) -> bool:
    return any(check(t) for check in _NUMERIC_TYPES)


def _column_float(col: pa.ChunkedArray | pa.Array, name: str, where: str) -> np.ndarray:
    if not _is_numeric_type(col.type):
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


def _column_keys(col: pa.ChunkedArray | pa.Array) -> list[str | None]:
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
        return _categorical_from_counts(name, counts, missing, max_categories)
    return categorical_reference(name, _column_keys(col), max_categories)


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
) -> Baseline:
    """Read a parquet baseline; stored statistics are used when they match the settings.

    Raises BaselineError naming the file (and the column) when the file is missing or
    unreadable, lacks a configured column, or holds non-numeric data in a numeric column.
    A missing `prediction` column only disables prediction drift. `data`, when given, is
    the file's content already read (captured baselines are read with bounds first).
    """
    where = str(path)
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

    present = set(schema.names)
    for name in [*numeric_names, *categorical_names]:
        if name not in present:
            raise BaselineError(
                f"baseline file {where}: no column {name!r} for a configured feature"
            )
    for name in numeric_names:
        t = schema.field(name).type
        if not _is_numeric_type(t):
            raise BaselineError(
                f"baseline file {where}: column {name!r} is a numeric feature but holds {t} data"
            )
    has_prediction = prediction_kind is not None and PREDICTION_COLUMN in present
    if has_prediction and prediction_kind == "numeric":
        t = schema.field(PREDICTION_COLUMN).type
        if not _is_numeric_type(t):
            raise BaselineError(
                f"baseline file {where}: column {PREDICTION_COLUMN!r} holds {t} data "
                "but predictions are numeric"
            )

    meta = _read_metadata(schema)
    stored_num = meta.get("numeric", {}) if meta and meta.get("psi_bins") == psi_bins else {}
    stored_cat = (
        meta.get("categorical", {}) if meta and meta.get("max_categories") == max_categories else {}
    )
    stored_pred = meta.get("prediction") if meta else None
    if not isinstance(stored_num, dict):
        stored_num = {}
    if not isinstance(stored_cat, dict):
        stored_cat = {}

    # categorical columns are only read when their statistics are not stored
    need_cat = [n for n in categorical_names if _stored_cat_entry(stored_cat, n) is None]
    pred_stored_ok = (
        has_prediction
        and isinstance(stored_pred, dict)
        and stored_pred.get("kind") == prediction_kind
        and (
            (prediction_kind == "numeric" and meta is not None and meta.get("psi_bins") == psi_bins)
            or (prediction_kind == "categorical" and meta is not None
                and meta.get("max_categories") == max_categories)
        )
    )
    columns = list(dict.fromkeys([*numeric_names, *need_cat]))
    if has_prediction and (prediction_kind == "numeric" or not pred_stored_ok):
        columns.append(PREDICTION_COLUMN)
    try:
        table = pf.read(columns=columns, use_threads=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BaselineError(f"baseline file {where}: cannot read columns ({exc})") from exc
    rows = pf.metadata.num_rows

    used_stored = 0
    computed = 0
    num_refs: list[NumericReference] = []
    for name in numeric_names:
        ref, stored = _load_numeric(
            name, table.column(name), where, stored_num.get(name), psi_bins
        )
        num_refs.append(ref)
        used_stored += stored
        computed += not stored
    cat_refs: list[CategoricalReference] = []
    for name in categorical_names:
        entry = _stored_cat_entry(stored_cat, name)
        cref = _stored_categorical(entry, name) if entry is not None else None
        if cref is None:
            if name not in table.column_names:
                table = table.append_column(name, pf.read(columns=[name]).column(name))
            cref = _categorical_from_arrow(name, table.column(name), max_categories)
            computed += 1
        else:
            used_stored += 1
        cat_refs.append(cref)

    pred: NumericReference | CategoricalReference | None = None
    if has_prediction:
        if prediction_kind == "numeric":
            entry = stored_pred if pred_stored_ok and isinstance(stored_pred, dict) else None
            pred, stored = _load_numeric(
                PREDICTION_COLUMN, table.column(PREDICTION_COLUMN), where, entry, psi_bins
            )
        else:
            pred = (
                _stored_categorical(stored_pred, PREDICTION_COLUMN)
                if pred_stored_ok and isinstance(stored_pred, dict)
                else None
            )
            stored = pred is not None
            if pred is None:
                if PREDICTION_COLUMN not in table.column_names:
                    table = table.append_column(
                        PREDICTION_COLUMN,
                        pf.read(columns=[PREDICTION_COLUMN]).column(PREDICTION_COLUMN),
                    )
                pred = _categorical_from_arrow(
                    PREDICTION_COLUMN, table.column(PREDICTION_COLUMN), max_categories
                )
        used_stored += stored
        computed += not stored

    stats_source = "stored" if computed == 0 else "computed" if used_stored == 0 else "mixed"
    return Baseline(
        model=model,
        numeric=tuple(num_refs),
        categorical=tuple(cat_refs),
        prediction=pred,
        rows=rows,
        sha256=digest,
        # a captured baseline reloaded after a restart is still a captured one
        source="capture" if meta is not None and meta.get("source") == "capture" else "file",
        path=where,
        stats_source=stats_source,
    )


def _stored_cat_entry(stored: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    entry = stored.get(name)
    return entry if isinstance(entry, dict) else None


def _load_numeric(
    name: str, col: pa.ChunkedArray, where: str, entry: object, psi_bins: int
) -> tuple[NumericReference, bool]:
    values = _column_float(col, name, where)
    total = values.shape[0]
    finite = np.sort(values[np.isfinite(values)])
    missing_rate = _rate(total - finite.shape[0], total)
    if isinstance(entry, dict):
        ref = _stored_numeric(entry, name, _readonly(finite), missing_rate)
        if ref is not None:
            return ref, True
    edges = quantile_edges(finite, psi_bins)
    return (
        NumericReference(
            name=name,
            sorted_values=_readonly(finite),
            edges=_readonly(edges),
            shares=_readonly(_shares_sorted(finite, edges)),
            missing_rate=missing_rate,
            mean=float(finite.mean()) if finite.shape[0] else math.nan,
        ),
        False,
    )


# --------------------------------------------------------------------------- build from data


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
) -> tuple[Baseline, list[dict[str, Any]]]:
    """Reservoir-sample training data (.parquet or .csv) into a baseline file.

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
        schema, batches = _iter_parquet(src, wanted)
    else:
        raise BaselineError(f"training file {src}: expected a .parquet or .csv file")

    for name in [*numeric_names, *categorical_names]:
        if name not in schema.names:
            raise BaselineError(f"training file {src}: no column {name!r} for a configured feature")
    for name in numeric_names:
        if not _is_numeric_type(schema.field(name).type):
            raise BaselineError(
                f"training file {src}: column {name!r} is a numeric feature "
                f"but holds {schema.field(name).type} data"
            )
    has_prediction = prediction_kind is not None and PREDICTION_COLUMN in schema.names
    present = [c for c in wanted if c in schema.names]
    read_schema = pa.schema([schema.field(c) for c in present])
    try:
        table, seen = reservoir_sample(batches, read_schema, sample, seed)
    except (pa.ArrowException, OSError) as exc:
        raise BaselineError(f"training file {src}: cannot be read ({exc})") from exc

    where = str(src)
    numeric = {n: _column_float(table.column(n), n, where) for n in numeric_names}
    categorical = {n: _column_keys(table.column(n)) for n in categorical_names}
    prediction: np.ndarray | list[str | None] | None = None
    if has_prediction:
        col = table.column(PREDICTION_COLUMN)
        if prediction_kind == "numeric":
            prediction = _column_float(col, PREDICTION_COLUMN, where)
        else:
            prediction = _column_keys(col)
    b = write_baseline(
        out,
        model,
        numeric=numeric,
        categorical=categorical,
        prediction=prediction,
        prediction_kind=prediction_kind if has_prediction else None,
        psi_bins=psi_bins,
        max_categories=max_categories,
    )
    summaries = [_summary_numeric(r, numeric[r.name], "feature", seen) for r in b.numeric]
    summaries += [_summary_categorical(r, table.num_rows, "feature", seen) for r in b.categorical]
    if isinstance(b.prediction, NumericReference) and isinstance(prediction, np.ndarray):
        summaries.append(_summary_numeric(b.prediction, prediction, "prediction", seen))
    elif isinstance(b.prediction, CategoricalReference):
        summaries.append(_summary_categorical(b.prediction, table.num_rows, "prediction", seen))
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
        "mean": _f(r.mean),
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
