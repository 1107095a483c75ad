"""Each tracker's sample lines, their label text built once for the cached families of
sidecar.exposition: histograms, missing counts, baseline bins and drift gauges."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from sidecar.drift import ModelDriftResult
from sidecar.exposition import Block, Lines
from sidecar.stats.reference import Baseline
from sidecar.tracker import ModelTracker


def le_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


Labels = dict[str, str]


_DRIFT_FAMILIES = (
    "ml_feature_drift_psi",
    "ml_feature_drift_ks_statistic",
    "ml_feature_drift_ks_pvalue",
    "ml_feature_drift_chi2_statistic",
    "ml_feature_drift_chi2_pvalue",
    "ml_feature_drift_missing_rate",
    "ml_feature_baseline_missing_rate",
    "ml_feature_drift_detected",
    "ml_feature_drift_adjusted_pvalue",
    "ml_feature_drift_category_pvalue",
    "ml_feature_drift_samples",
    "ml_feature_baseline_samples",
    "ml_feature_drift_psi_expected",
)


def _per_feature(model: str, features: Sequence[str]) -> Callable[[str], Lines]:
    """Lines of one sample per feature, by sample name."""

    def lines(name: str) -> Lines:
        def keys() -> Iterator[tuple[str, Labels]]:
            for f in features:
                yield name, {"model_name": model, "feature_name": f}

        return Lines(keys, [name])

    return lines


def _histogram_keys(
    model: str, features: Sequence[str], bounds: Sequence[list[float]]
) -> Callable[[], Iterator[tuple[str, Labels]]]:
    def keys() -> Iterator[tuple[str, Labels]]:
        for f, edges in zip(features, bounds, strict=True):
            base = {"model_name": model, "feature_name": f}
            for le in edges:
                yield "ml_feature_value_bucket", {**base, "le": le_label(le)}
            yield "ml_feature_value_count", base
            yield "ml_feature_value_sum", base

    return keys


def _bin_keys(
    name: str, model: str, features: Sequence[str], bins: Sequence[int]
) -> Callable[[], Iterator[tuple[str, Labels]]]:
    def keys() -> Iterator[tuple[str, Labels]]:
        for f, k in zip(features, bins, strict=True):
            for i in range(k):
                yield name, {"model_name": model, "feature_name": f, "bin": str(i)}

    return keys


class TrackerLabels:
    """One tracker's sample lines, their text built once rather than at every scrape: at
    1,000 features a scrape holds about 50,000 samples (see sidecar.exposition). The bin
    lines and the constant per-bin blocks (reference shares, upper edges) follow the
    baseline, the drift gauges each drift result; they are rebuilt when those change."""

    def __init__(self, t: ModelTracker) -> None:
        m = t.name
        self.feature = {name: {"model_name": m, "feature_name": name} for name in t.feature_names}
        self.feature_index = {name: i for i, name in enumerate(t.feature_names)}
        numeric = list(t.numeric_names)
        bounds = [[*b.tolist(), math.inf] for b in t.feature_buckets]
        self.hist = Lines(
            _histogram_keys(m, numeric, bounds),
            ["ml_feature_value_bucket", "ml_feature_value_count", "ml_feature_value_sum"],
        )
        # where each feature's cumulative buckets, count and sum go among the lines
        sizes = np.array([len(b) for b in bounds], dtype=np.int64)
        self.hist_len = int(sizes.sum() + 2 * len(sizes))
        starts = np.concatenate([[0], np.cumsum(sizes + 2)[:-1]]).astype(np.int64)
        self.count_pos = starts + sizes
        self.sum_pos = starts + sizes + 1
        is_bucket = np.ones(self.hist_len, dtype=bool)
        is_bucket[self.count_pos] = is_bucket[self.sum_pos] = False
        self.bucket_pos = np.flatnonzero(is_bucket)
        self.bucket_ends = np.cumsum(sizes) - 1  # last bucket of each feature, in the flat counts
        self.seg_starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        per_feature = _per_feature(m, list(t.feature_names))
        self.missing = per_feature("ml_feature_missing_total")
        self.drift_lines = {name: per_feature(name) for name in _DRIFT_FAMILIES}
        self.bins_for: Baseline | None = None
        self.bin_lines: Lines | None = None
        self.ref_block: Block | None = None
        self.upper_block: Block | None = None
        self.drift_for: ModelDriftResult | None = None
        self.drift_blocks: dict[str, Block] = {}

    def histogram(self, t: ModelTracker, no_sum: np.ndarray | None = None) -> Block:
        """This scrape's histogram lines: every feature's cumulative buckets, count, sum;
        without the count and sum of the features where `no_sum` is set."""
        values = np.empty(self.hist_len)
        if self.hist_len:
            flat = np.concatenate(t.feature_counts)
            cum = np.cumsum(flat)
            # cumulative within each feature: subtract what the features before it hold
            within = cum - np.concatenate([[0], cum])[self.seg_starts]
            values[self.bucket_pos] = within
            values[self.count_pos] = within[self.bucket_ends]
            values[self.sum_pos] = t.feature_sums
        keep = None
        if no_sum is not None and no_sum.any():
            keep = np.ones(self.hist_len, dtype=bool)
            keep[self.count_pos[no_sum]] = keep[self.sum_pos[no_sum]] = False
        return Block(self.hist, values, keep)

    def for_baseline(self, t: ModelTracker) -> None:
        b = t.baseline
        if b is None or b is self.bins_for:
            return
        model = t.name
        names = [ref.name for ref in b.numeric]
        bins = [len(ref.shares) for ref in b.numeric]
        shares = [np.asarray(ref.shares, dtype=np.float64) for ref in b.numeric]
        last = np.array([math.inf])
        uppers = [e for ref in b.numeric for e in (ref.edges, last)]  # ref.upper_bounds
        self.bin_lines = Lines(
            _bin_keys("ml_feature_bin_events_total", model, names, bins),
            ["ml_feature_bin_events_total"],
        )
        ref_lines = Lines(
            _bin_keys("ml_feature_bin_reference_ratio", model, names, bins),
            ["ml_feature_bin_reference_ratio"],
        )
        upper_lines = Lines(
            _bin_keys("ml_feature_bin_upper_bound", model, names, bins),
            ["ml_feature_bin_upper_bound"],
        )
        self.ref_block = Block(ref_lines, np.concatenate(shares) if shares else np.empty(0))
        self.upper_block = Block(upper_lines, np.concatenate(uppers) if uppers else np.empty(0))
        self.bins_for = b

    def drift(self, r: ModelDriftResult) -> dict[str, Block]:
        """The drift gauges of result `r`, one block per family (kept until the next)."""
        if r is self.drift_for:
            return self.drift_blocks
        index = self.feature_index
        feats = [f for f in r.features if f.name in index]
        rows = np.array([index[f.name] for f in feats], dtype=np.int64)
        sufficient = np.array([f.sufficient for f in feats], dtype=bool)
        everyone = np.ones(len(feats), dtype=bool)

        def column(values: list[Any]) -> np.ndarray:
            return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

        has_psi = sufficient & np.array([f.psi is not None for f in feats], dtype=bool)
        has_ks = sufficient & np.array([f.ks_statistic is not None for f in feats], dtype=bool)
        has_chi = sufficient & np.array([f.chi2_statistic is not None for f in feats], dtype=bool)
        has_cat = sufficient & np.array([f.kind == "categorical" for f in feats], dtype=bool)
        columns: dict[str, tuple[list[Any], np.ndarray]] = {
            "ml_feature_drift_missing_rate": ([f.missing_rate for f in feats], everyone),
            "ml_feature_baseline_missing_rate": (
                [f.baseline_missing_rate for f in feats],
                everyone,
            ),
            "ml_feature_drift_detected": ([1.0 if f.drifted else 0.0 for f in feats], sufficient),
            "ml_feature_drift_psi": ([f.psi for f in feats], has_psi),
            "ml_feature_drift_ks_statistic": ([f.ks_statistic for f in feats], has_ks),
            "ml_feature_drift_ks_pvalue": ([f.ks_pvalue for f in feats], has_ks),
            "ml_feature_drift_chi2_statistic": ([f.chi2_statistic for f in feats], has_chi),
            "ml_feature_drift_chi2_pvalue": ([f.chi2_pvalue for f in feats], has_chi),
            "ml_feature_drift_adjusted_pvalue": ([f.alarm_p_adjusted for f in feats], sufficient),
            "ml_feature_drift_category_pvalue": ([f.test_pvalue for f in feats], has_cat),
            "ml_feature_drift_samples": ([f.samples for f in feats], sufficient),
            "ml_feature_baseline_samples": ([f.reference_samples for f in feats], sufficient),
            "ml_feature_drift_psi_expected": ([f.psi_expected for f in feats], sufficient),
        }
        n = len(index)
        blocks: dict[str, Block] = {}
        for name in _DRIFT_FAMILIES:
            got, present = columns[name]
            if not present.any():
                continue
            values = np.full(n, np.nan)
            keep = np.zeros(n, dtype=bool)
            values[rows] = column(got)
            keep[rows] = present
            blocks[name] = Block(self.drift_lines[name], values, keep)
        self.drift_blocks = blocks
        self.drift_for = r
        return self.drift_blocks


__all__ = ["TrackerLabels", "le_label"]
