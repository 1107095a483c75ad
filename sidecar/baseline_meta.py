"""The statistics a baseline file stores as JSON in its parquet schema metadata: writing
them, and reading back those still valid for the current settings."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sidecar.stats.numbers import finite_or_none
from sidecar.stats.reference import Baseline, CategoricalReference, NumericReference, readonly

METADATA_KEY = b"drift_sidecar.baseline.v1"
"""Schema-metadata key of the stored statistics; the suffix is the format version."""
FORMAT_VERSION = 1

if TYPE_CHECKING:
    import pyarrow as pa


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
        "counts": r.counts.tolist(),
        "tail": list(r.tail),
        "tail_counts": r.tail_counts.tolist(),
        "missing_rate": finite_or_none(r.missing_rate),
    }


def stats_metadata(b: Baseline, psi_bins: int, max_categories: int) -> bytes:
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


def stored_numeric(
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


def stored_categorical(meta: Mapping[str, Any], name: str) -> CategoricalReference | None:
    """The stored statistics of a categorical column, if present and consistent.

    Files written before the counts were stored have shares only; their statistics are
    computed from the column again (None here), since the two-sample tests need counts
    (and the tail, when OTHER holds any value).
    """
    try:
        categories = tuple(str(c) for c in meta["categories"])
        shares = np.asarray(meta["shares"], dtype=np.float64)
        counts = np.asarray(meta["counts"], dtype=np.int64)
        tail = tuple(str(c) for c in meta.get("tail", ()))
        tail_counts = np.asarray(meta.get("tail_counts", ()), dtype=np.int64)
        rate = meta["missing_rate"]
        # null: a rate over no rows (see sidecar.stats.numbers.rate)
        missing_rate = math.nan if rate is None else float(rate)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    k = len(categories) + 1
    if shares.shape != (k,) or abs(float(shares.sum()) - 1.0) > 1e-9:
        return None
    if counts.shape != (k,) or (counts < 0).any():
        return None
    present = int(counts.sum())
    if present and not np.allclose(counts / present, shares, rtol=0, atol=1e-12):
        return None
    if counts[-1] > 0 and "tail" not in meta:
        return None
    if (
        tail_counts.shape != (len(tail),)
        or (tail_counts < 0).any()
        or int(tail_counts.sum()) > int(counts[-1])
    ):
        return None
    return CategoricalReference(
        name=name,
        categories=categories,
        shares=readonly(shares),
        missing_rate=missing_rate,
        counts=readonly(counts),
        tail=tail,
        tail_counts=readonly(tail_counts),
    )


def read_metadata(schema: pa.Schema) -> dict[str, Any] | None:
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


@dataclass(frozen=True)
class StoredStats:
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
    ) -> StoredStats:
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
