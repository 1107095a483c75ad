"""A drift check's parameters and result types, with the result's `GET /v1/drift` form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidecar.stats.alarm import DEFAULT_PERIOD_S, DEFAULT_RATE, AlarmPolicy
from sidecar.stats.correction import CORRECTIONS
from sidecar.stats.mmd import TEST_NAME
from sidecar.stats.numbers import finite_or_none

if TYPE_CHECKING:
    from sidecar.config import DriftSettings
    from sidecar.drift_bins import ColumnBins


@dataclass(frozen=True)
class DriftParams:
    """Thresholds of a drift check, and the alarm policy its verdicts follow."""

    min_samples: int = 500
    """Non-missing window values a statistic needs; below it the result is insufficient."""
    psi_threshold: float = 0.2
    """PSI above this marks a drifted feature's change as large; PSI never alarms alone."""
    p_value: float = 0.05
    """Per-check significance level (`significant`), after the check's correction; the
    verdicts use the false-alarm rate instead."""
    correction: str = "bonferroni"
    false_alarm_rate: float = DEFAULT_RATE
    """P(any false alarm of the model within a period) is kept at most this."""
    false_alarm_period_s: float = DEFAULT_PERIOD_S
    interval_s: float = 30.0
    """Seconds between the daemon's checks of the model: with the period, it bounds how
    many checks share the false-alarm rate."""

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction {self.correction!r}: expected one of {CORRECTIONS}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples {self.min_samples}: must be at least 1")
        self.policy  # noqa: B018 - validates the rate, the period and the interval

    @classmethod
    def from_settings(cls, d: DriftSettings) -> DriftParams:
        """The parameters a model's effective `drift:` settings give its checks."""
        return cls(
            min_samples=d.min_samples,
            psi_threshold=d.psi_threshold,
            p_value=d.p_value,
            correction=d.correction,
            false_alarm_rate=d.false_alarm_rate,
            false_alarm_period_s=d.false_alarm_period_s,
            interval_s=d.interval_s,
        )

    @property
    def policy(self) -> AlarmPolicy:
        return AlarmPolicy(
            false_alarm_rate=self.false_alarm_rate,
            period_s=self.false_alarm_period_s,
            interval_s=self.interval_s,
            correction=self.correction,
        )


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature; statistics are None when the check had too few samples."""

    name: str
    kind: str
    samples: int
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    chi2_statistic: float | None
    chi2_pvalue: float | None
    missing_rate: float
    baseline_missing_rate: float
    p_adjusted: float | None
    """The test's p-value after the check's correction (compared with `p_value`)."""
    drifted: bool
    """The verdict: `alarm_p_adjusted` <= the false-alarm rate."""
    sufficient: bool
    detected_by: tuple[str, ...] = ()
    """Why a drifted feature drifted: "pvalue" (the test), and "psi" when PSI is also
    above its threshold (a large change)."""
    test_pvalue: float | None = None
    """P-value of the test behind the verdict: KS for numeric features, the exact
    per-category test for categorical ones."""
    alarm_p_adjusted: float | None = None
    """The test's p-value on the scale of the false-alarm rate (see sidecar.stats.alarm)."""
    significant: bool = False
    """Per-check significance: `p_adjusted` < `p_value`."""
    reference_samples: int = 0
    """Non-missing baseline values the test compared with."""
    psi_expected: float | None = None
    """PSI expected with no drift at these sample sizes: (B - 1) * (1/n + 1/N)."""
    chi2_dof: int | None = None
    changed_category: str | None = None
    """Categorical: the category whose share moved most (by its exact test), if it is
    not pooled with others."""
    horizon_samples: int | None = None
    """Categorical: values in the longer horizon the exact test also ran on."""
    horizon_pvalue: float | None = None


@dataclass(frozen=True)
class PredictionDrift:
    """Drift of the model's predictions against the baseline's."""

    kind: str
    samples: int
    sufficient: bool
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    mean_shift_ratio: float | None = None
    psi: float | None = None
    chi2_statistic: float | None = None
    chi2_pvalue: float | None = None
    drifted: bool = False
    missing_rate: float = math.nan
    detected_by: tuple[str, ...] = ()
    test_pvalue: float | None = None
    p_adjusted: float | None = None
    alarm_p_adjusted: float | None = None
    significant: bool = False
    reference_samples: int = 0
    psi_expected: float | None = None
    chi2_dof: int | None = None
    changed_category: str | None = None
    horizon_samples: int | None = None
    horizon_pvalue: float | None = None


@dataclass(frozen=True)
class EmbeddingDrift:
    """Drift of the model's embeddings (sidecar.stats.mmd); statistics None when the
    window had too few."""

    dim: int
    samples: int
    sufficient: bool
    statistic: float | None
    """The cross-MMD statistic T, standard normal under no drift."""
    pvalue: float | None
    p_adjusted: float | None
    """Corrected within the check."""
    alarm_p_adjusted: float | None
    """On the period's scale (the false-alarm policy): drifted when <= its rate."""
    mmd2: float | None
    centroid_distance: float | None
    drifted: bool
    device: str
    n_features: int
    bandwidth: float
    reference_rows: int

    def to_json(self, p_value: float) -> dict[str, Any]:
        return {
            "test": TEST_NAME,
            "dim": self.dim,
            "samples": self.samples,
            "sufficient": self.sufficient,
            "drifted": self.drifted,
            "statistic": finite_or_none(self.statistic),
            "pvalue": finite_or_none(self.pvalue),
            "p_adjusted": finite_or_none(self.p_adjusted),
            "alarm_p_adjusted": finite_or_none(self.alarm_p_adjusted),
            "p_value_threshold": p_value,
            "mmd2": finite_or_none(self.mmd2),
            "centroid_distance": finite_or_none(self.centroid_distance),
            "device": self.device,
            "features": self.n_features,
            "bandwidth": self.bandwidth,
            "reference_rows": self.reference_rows,
        }


@dataclass(frozen=True)
class ModelDriftResult:
    """One drift check of one model."""

    model: str
    checked_at: float
    """Unix seconds."""
    duration_s: float
    samples: int
    """Events in the window."""
    sufficient: bool
    features: tuple[FeatureDrift, ...]
    prediction: PredictionDrift | None
    params: DriftParams = DriftParams()
    tests: int = 0
    """Tests that ran in this check (features with enough data, the predictions, and the
    embeddings)."""
    embedding: EmbeddingDrift | None = None
    feature_bins: tuple[ColumnBins, ...] = ()
    """Per feature, in the order of `features`: its bins (sidecar.drift_bins)."""
    prediction_bins: ColumnBins | None = None

    @property
    def drifted(self) -> bool:
        """Whether any feature, the prediction or the embedding drifted."""
        return (
            any(f.drifted for f in self.features)
            or bool(self.prediction and self.prediction.drifted)
            or bool(self.embedding and self.embedding.drifted)
        )

    def to_json(self) -> dict[str, Any]:
        """The `GET /v1/drift` body for this model; JSON-safe (None where NaN)."""
        p = self.params
        policy = p.policy
        features: dict[str, Any] = {}
        for i, f in enumerate(self.features):
            entry = _column_json(f, p)
            entry["baseline_missing_rate"] = finite_or_none(f.baseline_missing_rate)
            if i < len(self.feature_bins):
                entry["bins"] = self.feature_bins[i].to_json()
            features[f.name] = entry
        pred: dict[str, Any] | None = None
        if self.prediction is not None:
            q = self.prediction
            pred = _column_json(q, p)
            if q.kind == "numeric":
                pred["mean_shift_ratio"] = finite_or_none(q.mean_shift_ratio)
            if self.prediction_bins is not None:
                pred["bins"] = self.prediction_bins.to_json()
        return {
            "model": self.model,
            "status": "ok" if self.sufficient else "insufficient_data",
            "checked_at": self.checked_at,
            "duration_s": self.duration_s,
            "samples": self.samples,
            "min_samples": p.min_samples,
            "correction": p.correction,
            "p_value": p.p_value,
            "psi_threshold": p.psi_threshold,
            "alarm": {
                "false_alarm_rate": p.false_alarm_rate,
                "period_s": p.false_alarm_period_s,
                "interval_s": p.interval_s,
                "checks_per_period": policy.checks,
                "tests": self.tests,
                "check_level": policy.check_level,
                "test_level": policy.test_level(self.tests),
            },
            "drifted": self.drifted,
            "drifted_features": [f.name for f in self.features if f.drifted],
            "features": features,
            "prediction": pred,
            "embedding": None if self.embedding is None else self.embedding.to_json(p.p_value),
        }


def _column_json(x: FeatureDrift | PredictionDrift, p: DriftParams) -> dict[str, Any]:
    """The /v1/drift entry of one feature or of the predictions: what the two share."""
    entry: dict[str, Any] = {
        "kind": x.kind,
        "samples": x.samples,
        "reference_samples": x.reference_samples,
        "sufficient": x.sufficient,
        "drifted": x.drifted,
        "detected_by": list(x.detected_by),
        "psi": finite_or_none(x.psi),
        "psi_expected": finite_or_none(x.psi_expected),
        "psi_threshold": p.psi_threshold,
    }
    if x.kind == "numeric":
        entry["ks_statistic"] = finite_or_none(x.ks_statistic)
        entry["ks_pvalue"] = finite_or_none(x.ks_pvalue)
    else:
        entry["chi2_statistic"] = finite_or_none(x.chi2_statistic)
        entry["chi2_pvalue"] = finite_or_none(x.chi2_pvalue)
        entry["chi2_dof"] = x.chi2_dof
        entry["changed_category"] = x.changed_category
        entry["horizon_samples"] = x.horizon_samples
        entry["horizon_pvalue"] = finite_or_none(x.horizon_pvalue)
    entry.update(_verdict_json(x.test_pvalue, x.p_adjusted, x.significant, x.alarm_p_adjusted, p))
    entry["missing_rate"] = finite_or_none(x.missing_rate)
    return entry


def _verdict_json(
    test_p: float | None,
    p_adj: float | None,
    significant: bool,
    alarm_p: float | None,
    p: DriftParams,
) -> dict[str, Any]:
    return {
        "test_pvalue": finite_or_none(test_p),
        "p_adjusted": finite_or_none(p_adj),
        "p_value_threshold": p.p_value,
        "significant": significant,
        "alarm_p_adjusted": finite_or_none(alarm_p),
        "false_alarm_rate": p.false_alarm_rate,
    }
