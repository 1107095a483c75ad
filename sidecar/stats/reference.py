"""Reference statistics of a column, and a model's `Baseline`: what a drift check compares to.

Computed from arrays held in memory; reading and writing them as parquet is
`sidecar.baseline`'s job.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sidecar.errors import BaselineError
from sidecar.stats.bins import OTHER, bin_index, quantile_edges, shares, sorted_bin_counts
from sidecar.stats.calibration import BaselinePerformance
from sidecar.stats.mmd import EmbeddingReference
from sidecar.stats.numbers import rate

TAIL_FACTOR = 4
"""A categorical reference counts up to this many times max_categories categories one by
one (the kept ones and its tail); a live vocabulary keeps as many (sidecar.tracker)."""

PREDICTION_COLUMN = "prediction"
"""Name of the predictions' column; no feature may take it."""
EMBEDDING_COLUMN = "embedding"
"""Name of the embeddings' column: a list (or fixed-size list) of floats per row."""


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


def readonly(a: np.ndarray) -> np.ndarray:
    """`a`, made read-only: references are shared between threads and never change."""
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
        """Bin of each value (see `sidecar.stats.bins`)."""
        return bin_index(self.edges, values)

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Count of the finite values in each bin (NaN and ±inf are missing)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        return np.bincount(self.bin_index(v), minlength=self.edges.shape[0] + 1)

    def sorted_bin_counts(self, sorted_finite: np.ndarray) -> np.ndarray:
        """Count in each bin of ascending finite values."""
        return sorted_bin_counts(sorted_finite, self.edges)


@dataclass(frozen=True, eq=False)
class CategoricalReference:
    """Reference statistics of one categorical column."""

    name: str
    categories: tuple[str, ...]
    """Reference categories, most frequent first, at most max_categories."""
    shares: np.ndarray
    """Share of each category, then of OTHER (reference values beyond the cap)."""
    missing_rate: float
    counts: np.ndarray
    """int64 count of each category, then of OTHER: the two-sample tests need the
    baseline's sample size, not only its shares."""
    tail: tuple[str, ...] = ()
    """The next most frequent categories after `categories`, up to TAIL_FACTOR *
    max_categories categories in all. They are in OTHER for PSI and the bin counters (so
    label cardinality stays bounded by max_categories), and columns of their own for the
    two-sample tests, which must not compare a pool chosen by the baseline's counts."""
    tail_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.categories)})

    @property
    def usable(self) -> bool:
        """Whether the reference holds any non-missing value to compare with."""
        return len(self.categories) > 0

    @property
    def count(self) -> int:
        """Non-missing reference values."""
        return int(self.counts.sum())

    @property
    def residual(self) -> int:
        """Reference values in OTHER that are in no category of `tail` either."""
        return int(self.counts[-1]) - int(self.tail_counts.sum())

    @property
    def overflowed(self) -> bool:
        """Whether the reference had more categories than it counts one by one (kept and
        tail). Then a live category outside them may be one of those, so the two-sample
        tests compare the rest only as a whole, and that comparison is biased: the counted
        categories were chosen as the baseline's most frequent (docs/statistics.md)."""
        return self.residual > 0

    def test_counts(self) -> np.ndarray:
        """The baseline's row of the two-sample table: each kept category, the residual
        OTHER, then each tail category (the codes `WindowData` uses, see sidecar.drift)."""
        k = len(self.categories)
        out = np.empty(k + 1 + len(self.tail), dtype=np.int64)
        out[:k] = self.counts[:k]
        out[k] = self.residual
        out[k + 1 :] = self.tail_counts
        return out

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
                -1 if v is None else index.get(v, other) if isinstance(v, str) else self.code(v)
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
    embedding: EmbeddingReference | None = None
    """The reference of the embedding test, when the model has `embedding:` configured."""
    performance: BaselinePerformance | None = None
    """Accuracy and calibration, from a baseline with a `label` column (sidecar.labels_io)."""

    @property
    def numeric_names(self) -> tuple[str, ...]:
        """Numeric feature names, in column order of `WindowData.numeric`."""
        return tuple(r.name for r in self.numeric)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        """Categorical feature names, in column order of `WindowData.categorical`."""
        return tuple(r.name for r in self.categorical)


# --------------------------------------------------------------------------- statistics


def sorted_finite(values: np.ndarray) -> tuple[np.ndarray, float]:
    """The finite values ascending as float64, and the missing rate (NaN and ±inf)."""
    v = np.asarray(values, dtype=np.float64)
    total = v.shape[0]
    finite = v[np.isfinite(v)]  # a copy: sorted in place, it is the only one kept
    finite.sort()
    return finite, rate(total - finite.shape[0], total)


def numeric_reference(name: str, values: np.ndarray, psi_bins: int = 10) -> NumericReference:
    """Reference statistics of one numeric column (NaN and ±inf are missing)."""
    finite, missing_rate = sorted_finite(values)
    return numeric_reference_sorted(name, finite, missing_rate, psi_bins)


def numeric_reference_sorted(
    name: str, finite: np.ndarray, missing_rate: float, psi_bins: int = 10
) -> NumericReference:
    """Reference statistics from a column's ascending finite values and missing rate."""
    edges = quantile_edges(finite, psi_bins)
    return NumericReference(
        name=name,
        sorted_values=readonly(finite),
        edges=readonly(edges),
        shares=readonly(shares(finite, edges)),
        missing_rate=missing_rate,
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
    return categorical_from_counts(name, counts, missing, max_categories)


def categorical_from_counts(
    name: str, counts: Mapping[str, int], missing: int, max_categories: int
) -> CategoricalReference:
    """Reference statistics from the count of each category and of missing values."""
    # ties broken by name so the kept categories do not depend on row order
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = ranked[:max_categories]
    tail = ranked[max_categories : TAIL_FACTOR * max_categories]
    present = sum(counts.values())
    kept_counts = np.array([c for _, c in kept], dtype=np.int64)
    all_counts = np.append(kept_counts, present - int(kept_counts.sum())).astype(np.int64)
    ref_shares = np.array([1.0]) if present == 0 else all_counts / present
    return CategoricalReference(
        name=name,
        categories=tuple(k for k, _ in kept),
        shares=readonly(ref_shares),
        missing_rate=rate(missing, present + missing),
        counts=readonly(all_counts),
        tail=tuple(k for k, _ in tail),
        tail_counts=readonly(np.array([c for _, c in tail], dtype=np.int64)),
    )


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
        numeric_reference(name, as_float(values, name, "<memory>"), psi_bins)
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


def as_float(values: object, name: str, where: str) -> np.ndarray:
    """A one-dimensional float64 column; BaselineError naming `where` and the column if not."""
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
            PREDICTION_COLUMN, as_float(prediction, PREDICTION_COLUMN, "<memory>"), psi_bins
        )
    return categorical_reference(PREDICTION_COLUMN, list(prediction), max_categories)
