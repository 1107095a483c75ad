"""Three sidecars, one drifting, scraped by a real Prometheus that runs the shipped rules.

Every alert expression, recording rule and dashboard query is evaluated over the HTTP API
against live daemons fed over their sockets, and the fleet drift that Prometheus records
is checked against drift computed here over the union of the events the daemons were sent.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import DaemonProcess, kill_quietly, start_daemon
from promtools import (
    RULE_FILES,
    PrometheusHandle,
    Series,
    alert_rules,
    dashboard_panels,
    dashboard_queries,
    metric_names,
    recording_rules,
    run_promtool,
    start_prometheus,
    substitute_variables,
)

from sidecar.baseline import write_baseline
from sidecar.stats.psi import psi
from sidecar.stats.reference import Baseline, NumericReference, Reference, category_key

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

SEED = 20_240_611
BASELINE_ROWS = 5_000
PHASES = 2
"""Traffic arrives in two phases with a scrape between them, so that series the daemon
creates on first use (requests by status, confidence by class, rejections by reason) have
an earlier sample to take a rate from."""
EVENTS_PER_PHASE = 800
"""Per daemon and model and phase."""
REPLICAS = 3
DRIFTING = 0
"""The daemon whose `fraud` traffic drifts; the others and all `churn` traffic are clean."""
REJECTING = 1
"""The daemon that is also sent events for a model it does not know."""
REJECTS_PER_PHASE = 3
MEMORY_REPORT = {"model": "fraud", "kind": "stats", "model_memory_bytes": 3 * 2**30}
ZERO_SAMPLES = 15
"""Scrapes of the zeroed counters before the first event (see the fleet drift test)."""

FRAUD_COUNTRIES = ("US", "DE", "FR", "GB", "JP", "BR")
FRAUD_MIX = (0.5, 0.2, 0.15, 0.1, 0.05, 0.0)
DRIFTED_MIX = (0.2, 0.2, 0.15, 0.1, 0.05, 0.3)
"""BR never occurs in the baseline, so drifted traffic fills the `__other__` bin."""
AMOUNT_MEAN, AMOUNT_SD, AMOUNT_SHIFT_SD = 100.0, 15.0, 2.0
EMBEDDING_DIM = 8
EMBEDDING_AXIS = np.full(EMBEDDING_DIM, 0.5)
"""fraud's embeddings: noise plus the amount's z-score along this axis."""
DRIFTED_FRAUD_FEATURES = {"amount", "country"}
CHURN_CLASSES = ("stay", "churn")

PSI_ALARM = 0.2
"""FleetFeatureDrift's and FleetPredictionDrift's threshold in alerts.yml."""
FLEET_VOLUME_GUARD = 500

MODELS = ("fraud", "churn")
MFB = ("model_name", "feature_name", "bin")
MF = ("model_name", "feature_name")
MB = ("model_name", "bin")
M = ("model_name",)

Columns = dict[str, Any]
"""One model's traffic as columns: feature name (and "prediction") to values."""


# --------------------------------------------------------------------------- traffic


def fraud_columns(rng: np.random.Generator, n: int, drifting: bool = False) -> Columns:
    z = rng.normal(AMOUNT_SHIFT_SD if drifting else 0.0, 1.0, n)
    score = rng.uniform(0.0, 1.0, n)
    score[rng.random(n) < 0.02] = np.nan
    country = rng.choice(FRAUD_COUNTRIES, n, p=DRIFTED_MIX if drifting else FRAUD_MIX)
    return {
        "amount": AMOUNT_MEAN + AMOUNT_SD * z,
        "score": score,
        "country": [str(c) for c in country],
        # the model follows the amount, so drifted amounts drift its predictions too
        "prediction": 1.0 / (1.0 + np.exp(-(z + rng.normal(0.0, 0.5, n)))),
        # and so does its representation vector
        "embedding": rng.normal(0.0, 1.0, (n, EMBEDDING_DIM)) + np.outer(z, EMBEDDING_AXIS),
    }


def churn_columns(rng: np.random.Generator, n: int) -> Columns:
    return {
        "tenure_months": rng.gamma(2.0, 12.0, n),
        "monthly_charges": rng.normal(70.0, 20.0, n),
        "prediction": [str(c) for c in rng.choice(CHURN_CLASSES, n, p=(0.8, 0.2))],
    }


def _value(x: Any) -> float | str | None:
    if isinstance(x, str):
        return x
    f = float(x)
    return f if math.isfinite(f) else None


def events(model: str, cols: Columns, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Events of one model: fraud is fast and confident, churn is slow and unsure, and
    one in twenty requests of either fails."""
    n = len(cols["prediction"])
    if model == "fraud":
        confidence, latency = rng.uniform(0.91, 0.98, n), rng.uniform(0.005, 0.04, n)
    else:
        confidence, latency = rng.uniform(0.3, 0.5, n), rng.uniform(0.15, 0.3, n)
    status = np.where(rng.random(n) < 0.05, "error", "success")
    features = [name for name in cols if name not in ("prediction", "embedding")]
    out = [
        {
            "model": model,
            "features": {name: _value(cols[name][i]) for name in features},
            "prediction": _value(cols["prediction"][i]),
            "confidence": float(confidence[i]),
            "latency_s": float(latency[i]),
            "status": str(status[i]),
        }
        for i in range(n)
    ]
    if "embedding" in cols:
        for ev, row in zip(out, cols["embedding"].tolist(), strict=True):
            ev["embedding"] = row
    if model == "fraud":  # its stages: fixed parts of its latency (no draw of the rng)
        for ev in out:
            ev["stages"] = {"preprocess": 0.2 * ev["latency_s"], "inference": 0.7 * ev["latency_s"]}
    return out


def concat(parts: Sequence[Columns]) -> Columns:
    return {
        name: (
            [v for p in parts for v in p[name]]
            if isinstance(parts[0][name], list)
            else np.concatenate([p[name] for p in parts])
        )
        for name in parts[0]
    }


# --------------------------------------------------------------------------- bins


def bin_labels(ref: Reference) -> list[str]:
    """`bin` label values of a reference, in bin order (see docs/metrics.md)."""
    if isinstance(ref, NumericReference):
        return [str(i) for i in range(ref.shares.shape[0])]
    return list(ref.bin_labels)


def bin_counts(ref: Reference, values: Any) -> np.ndarray:
    """Live values per bin of `ref`, missing ones left out, as the daemon counts them."""
    if isinstance(ref, NumericReference):
        return ref.bin_counts(np.asarray(values, dtype=np.float64))
    return ref.bin_counts(ref.codes([category_key(v) for v in values]))


def feature_refs(b: Baseline) -> list[Reference]:
    return [*b.numeric, *b.categorical]


def prediction_ref(b: Baseline) -> Reference:
    assert b.prediction is not None, b.model
    return b.prediction


def numeric_prefix(ref: Reference) -> list[str]:
    """Bins the cumulative recording rules cover: numeric bins "0" to "19"."""
    return bin_labels(ref)[:20] if isinstance(ref, NumericReference) else []


def binned_ks(ref_shares: np.ndarray, counts: np.ndarray) -> float:
    """Largest gap between cumulative shares at the first 20 bin edges (recording.yml)."""
    live = np.cumsum(counts / counts.sum())[:20]
    ref = np.cumsum(ref_shares)[:20]
    return float(np.max(np.abs(live - ref)))


# --------------------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    prom: PrometheusHandle
    daemons: list[DaemonProcess]
    instances: list[str]
    baselines: dict[str, Baseline]
    sent: list[dict[str, Columns]]
    """Per daemon, per model: every event it was sent, as columns."""
    traffic_scraped_at: float
    """Unix time by which Prometheus had scraped every event from every daemon."""

    def union_counts(self, model: str, ref: Reference, column: str) -> np.ndarray:
        union: np.ndarray = np.sum(self.counts_by_replica(model, ref, column), axis=0)
        return union

    def counts_by_replica(self, model: str, ref: Reference, column: str) -> list[np.ndarray]:
        return [bin_counts(ref, sent[model][column]) for sent in self.sent]


def wait_scalar(prom: PrometheusHandle, expr: str, expected: float, timeout: float = 30) -> None:
    prom.wait_for(expr, lambda r: bool(r) and float(r[0]["value"][1]) == expected, timeout=timeout)


def config(paths: dict[str, Path]) -> dict[str, Any]:
    return {
        # gpu.interval_s also sets how long a reported model memory figure stays fresh
        "gpu": {"enabled": False, "interval_s": 60},
        "log": {"level": "warning"},
        "drift": {
            "interval_s": 0.5,
            "window_size": 4 * PHASES * EVENTS_PER_PHASE,
            "min_samples": 200,
            # the drifted columns are far past any threshold; a strict one keeps the seed's
            # clean columns clean however the p-value method is refined
            "p_value": 0.001,
        },
        "models": [
            {
                "name": "fraud",
                "version": "1.0.0",
                "baseline": {"path": str(paths["fraud"])},
                "features": [
                    {"name": "amount", "type": "numeric"},
                    {"name": "score", "type": "numeric"},
                    {"name": "country", "type": "categorical"},
                ],
                "prediction": {"type": "numeric"},
                "embedding": {"dim": EMBEDDING_DIM, "device": "numpy", "features": 128},
            },
            {
                "name": "churn",
                "version": "3",
                "baseline": {"path": str(paths["churn"])},
                "features": [
                    {"name": "tenure_months", "type": "numeric"},
                    {"name": "monthly_charges", "type": "numeric"},
                ],
                "prediction": {"type": "categorical"},
            },
        ],
    }


def write_baselines(
    tmp: Path, rng: np.random.Generator
) -> tuple[dict[str, Path], dict[str, Baseline]]:
    paths = {m: tmp / f"{m}.parquet" for m in MODELS}
    fraud = fraud_columns(rng, BASELINE_ROWS)
    churn = churn_columns(rng, BASELINE_ROWS)
    baselines = {
        "fraud": write_baseline(
            paths["fraud"],
            "fraud",
            numeric={"amount": fraud["amount"], "score": fraud["score"]},
            categorical={"country": fraud["country"]},
            prediction=fraud["prediction"],
            prediction_kind="numeric",
            embedding=fraud["embedding"],
        ),
        "churn": write_baseline(
            paths["churn"],
            "churn",
            numeric={k: churn[k] for k in ("tenure_months", "monthly_charges")},
            categorical={},
            prediction=churn["prediction"],
            prediction_kind="categorical",
        ),
    }
    return paths, baselines


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    rng = np.random.default_rng(SEED)
    paths, baselines = write_baselines(tmp, rng)
    daemons: list[DaemonProcess] = []
    try:
        for i in range(REPLICAS):
            (tmp / f"d{i}").mkdir()
            daemons.append(start_daemon(tmp / f"d{i}", config(paths), wait_ready=True))
        instances = [f"127.0.0.1:{d.port}" for d in daemons]
        with start_prometheus(tmp, instances, RULE_FILES) as prom:
            prom.wait_for_targets_up(REPLICAS)
            # increase() counts from each counter's first sample: every bin counter must be
            # scraped at zero before the first event, or its first events are lost to it
            n_feature_bins = sum(
                len(bin_labels(r)) for b in baselines.values() for r in feature_refs(b)
            )
            n_prediction_bins = sum(len(bin_labels(prediction_ref(b))) for b in baselines.values())
            wait_scalar(prom, "count(ml_feature_bin_events_total == 0)", REPLICAS * n_feature_bins)
            wait_scalar(
                prom, "count(ml_prediction_bin_events_total == 0)", REPLICAS * n_prediction_bins
            )
            # a longer history before the traffic keeps increase()'s extrapolation small
            prom.wait_for(
                "min(count_over_time(ml_feature_bin_events_total[1h]))",
                lambda r: bool(r) and float(r[0]["value"][1]) >= ZERO_SAMPLES,
            )

            phases = [
                [
                    {
                        "fraud": fraud_columns(rng, EVENTS_PER_PHASE, drifting=i == DRIFTING),
                        "churn": churn_columns(rng, EVENTS_PER_PHASE),
                    }
                    for i in range(REPLICAS)
                ]
                for _ in range(PHASES)
            ]
            for p, phase in enumerate(phases, start=1):
                for i, d in enumerate(daemons):
                    for model in MODELS:
                        d.send(events(model, phase[i][model], rng))
                    if i == REJECTING:
                        d.send([{"model": "unknown-model", "prediction": 1.0}] * REJECTS_PER_PHASE)
                    if p == PHASES:
                        d.send([MEMORY_REPORT])
                accepted = p * EVENTS_PER_PHASE * len(MODELS) * REPLICAS
                wait_scalar(prom, "sum(drift_sidecar_events_accepted_total)", accepted)
                wait_scalar(prom, "sum(drift_sidecar_events_rejected_total)", p * REJECTS_PER_PHASE)
            scraped_at = time.time()
            sent = [
                {m: concat([ph[i][m] for ph in phases]) for m in MODELS} for i in range(REPLICAS)
            ]

            # Drift gauges from a check that started after the last event; fleet rules
            # evaluated after the last scrape that still changed a counter.
            prom.wait_for(
                f"ml_drift_last_check_timestamp_seconds > {scraped_at}",
                lambda r: len(r) == REPLICAS * len(MODELS),
            )
            for record, n in fleet_records(baselines).items():
                prom.wait_for(f"count(timestamp({record}) > {scraped_at}) == {n}")
            yield Fleet(prom, daemons, instances, baselines, sent, scraped_at)
    finally:
        for d in daemons:
            kill_quietly(d)


def fleet_records(baselines: dict[str, Baseline]) -> dict[str, int]:
    """The last record of each fleet rule group, with how many series it has."""
    refs = [r for b in baselines.values() for r in feature_refs(b)]
    preds = [prediction_ref(b) for b in baselines.values()]
    return {
        "model_name_feature_name:ml_feature_drift_ks_statistic:fleet_1h": sum(
            isinstance(r, NumericReference) for r in refs
        ),
        "model_name:ml_prediction_drift_ks_statistic:fleet_1h": sum(
            isinstance(r, NumericReference) for r in preds
        ),
    }


# --------------------------------------------------------------------------- helpers


def labels(result: list[Series], keys: Sequence[str]) -> set[tuple[str, ...]]:
    tuples = [tuple(s["metric"].get(k, "") for k in keys) for s in result]
    assert len(tuples) == len(set(tuples)), f"series differ only in labels beyond {keys}: {result}"
    return set(tuples)


def values(result: list[Series], keys: Sequence[str]) -> dict[tuple[str, ...], float]:
    return {tuple(s["metric"][k] for k in keys): float(s["value"][1]) for s in result}


def tolerance(
    stat: Callable[[np.ndarray], float], per_replica: list[np.ndarray], eps: Sequence[float]
) -> float:
    """How far `stat` of the union can move when each replica's counts are scaled by any
    weight in [1, 1 + eps]: the most increase()'s extrapolation can make it differ.

    The statistic is smooth in the weights, so its largest move over that box is at a
    corner, up to second-order terms in eps, which are allowed for.
    """
    plain = stat(np.sum(per_replica, axis=0))
    corners = [
        stat(np.sum([w * c for w, c in zip(weights, per_replica, strict=True)], axis=0))
        for weights in itertools.product(*[(1.0, 1.0 + e) for e in eps])
    ]
    second_order = max(eps) ** 2 * max(map(abs, corners))
    return max(abs(c - plain) for c in corners) + second_order + 1e-12


# --------------------------------------------------------------------------- tests


def test_promtool_check_metrics_finds_no_problem_in_any_daemon(fleet: Fleet) -> None:
    for d in fleet.daemons:
        status, body = d.get("/metrics")
        text = body.decode()
        assert status == 200
        assert "# EOF" not in text, "expected the text format, not OpenMetrics"
        # after traffic and checks: the families created on first use are there too
        assert 'status="error"' in text and "ml_feature_drift_psi{" in text
        result = run_promtool("check", "metrics", stdin=text)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), d.url


def test_every_alert_expression_returns_exactly_the_expected_series(fleet: Fleet) -> None:
    inst = fleet.instances
    fleet_features, fleet_predictions = fleet_alarms(fleet)
    # An empty set is the expected outcome for alerts the traffic must not trigger.
    expected: dict[str, tuple[tuple[str, ...], set[tuple[str, ...]]]] = {
        # one request in twenty fails, everywhere
        "HighErrorRate": ((), {()}),
        # churn answers in 0.15-0.3 s, fraud within 0.04 s
        "HighLatency": (("instance", "model_name"), {(i, "churn") for i in inst}),
        # churn's confidence stays under 0.5, fraud's over 0.9
        "LowConfidencePredictions": (
            ("instance", "model_name", "predicted_class"),
            {(i, "churn", c) for i in inst for c in CHURN_CLASSES},
        ),
        "GPUMemoryHigh": ((), set()),  # no GPU
        "FeatureDrift": (
            ("instance", "model_name", "feature_name"),
            {(inst[DRIFTING], "fraud", f) for f in DRIFTED_FRAUD_FEATURES},
        ),
        "PredictionDrift": (("instance", "model_name"), {(inst[DRIFTING], "fraud")}),
        "EmbeddingDrift": (("instance", "model_name"), {(inst[DRIFTING], "fraud")}),
        "FleetFeatureDrift": (MF, fleet_features),
        "FleetPredictionDrift": (M, fleet_predictions),
        "DriftCheckStale": ((), set()),  # checks run every half second
        "EventsRejected": (("instance", "reason"), {(inst[REJECTING], "unknown_model")}),
        "EventsDropped": ((), set()),
        "SidecarDown": ((), set()),
        "BaselineMissing": ((), set()),
        "StateSnapshotFailing": ((), set()),  # the state folders are writable
        "ConfigReloadFailed": ((), set()),  # no reload was refused
        "UnknownFeatures": ((), set()),  # every feature sent is configured
        "AccuracyDrop": ((), set()),  # no labels (test_labels_prometheus_e2e sends some)
        "EstimatedAccuracyDrop": ((), set()),  # no probabilities, no labeled baseline
    }
    rules = alert_rules()
    assert set(expected) == set(rules), "every shipped alert needs an expectation here"
    got = {
        name: labels(fleet.prom.query(str(rule["expr"])), expected[name][0])
        for name, rule in rules.items()
    }
    assert got == {name: want for name, (_, want) in expected.items()}


def fleet_alarms(fleet: Fleet) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """(model, feature) and (model,) whose PSI over the union of events passes the alarm.

    Every fleet PSI must be well clear of the alarm, so that increase()'s extrapolation
    (see the fleet drift test) cannot decide the verdict.
    """
    features: set[tuple[str, ...]] = set()
    predictions: set[tuple[str, ...]] = set()
    for m, b in fleet.baselines.items():
        for ref in feature_refs(b):
            counts = fleet.union_counts(m, ref, ref.name)
            value = psi(ref.shares, counts)
            assert abs(value - PSI_ALARM) > 0.25 * PSI_ALARM, (m, ref.name, value)
            if value > PSI_ALARM and counts.sum() >= FLEET_VOLUME_GUARD:
                features.add((m, ref.name))
        counts = fleet.union_counts(m, prediction_ref(b), "prediction")
        value = psi(prediction_ref(b).shares, counts)
        assert abs(value - PSI_ALARM) > 0.25 * PSI_ALARM, (m, "prediction", value)
        if value > PSI_ALARM and counts.sum() >= FLEET_VOLUME_GUARD:
            predictions.add((m,))
    return features, predictions


def test_drift_alerts_fire_for_the_drifting_model_only(fleet: Fleet) -> None:
    prom = fleet.prom
    drifting = fleet.instances[DRIFTING]
    features, predictions = fleet_alarms(fleet)
    # the seed's fleet PSI: amount 0.34, country 0.74, fraud's predictions 0.28; the rest
    # under 0.01
    assert features == {("fraud", f) for f in DRIFTED_FRAUD_FEATURES}, features
    assert predictions == {("fraud",)}, predictions

    rules = alert_rules()
    flagged = labels(prom.query(rules["FeatureDrift"]["expr"]), ("instance", *MF))
    assert {(i, m) for i, m, _ in flagged} == {(drifting, "fraud")}
    flagged = labels(prom.query(rules["PredictionDrift"]["expr"]), ("instance", "model_name"))
    assert flagged == {(drifting, "fraud")}
    flagged = labels(prom.query(rules["FleetFeatureDrift"]["expr"]), MF)
    assert {m for m, _ in flagged} == {"fraud"}
    assert labels(prom.query(rules["FleetPredictionDrift"]["expr"]), M) == {("fraud",)}

    # Silence elsewhere is a verdict of 0 from a check that ran, not a missing series.
    detected = values(prom.query("ml_feature_drift_detected"), ("instance", *MF))
    assert len(detected) == REPLICAS * sum(len(feature_refs(b)) for b in fleet.baselines.values())
    assert {k for k, v in detected.items() if v == 1} == {
        (drifting, "fraud", f) for f in DRIFTED_FRAUD_FEATURES
    }
    detected = values(prom.query("ml_prediction_drift_detected"), ("instance", "model_name"))
    assert detected == {
        (i, m): float(i == drifting and m == "fraud") for i in fleet.instances for m in MODELS
    }


def expected_recording_series(fleet: Fleet) -> dict[str, tuple[tuple[str, ...], set[Any]]]:
    """Label sets every recording rule must produce: by bin, feature or model."""
    feature_bins = set[tuple[str, ...]]()
    cumulative_bins = set[tuple[str, ...]]()
    features = set[tuple[str, ...]]()
    numeric_features = set[tuple[str, ...]]()
    prediction_bins = set[tuple[str, ...]]()
    numeric_prediction_bins = set[tuple[str, ...]]()
    for m, b in fleet.baselines.items():
        for ref in feature_refs(b):
            features.add((m, ref.name))
            feature_bins |= {(m, ref.name, x) for x in bin_labels(ref)}
            cumulative_bins |= {(m, ref.name, x) for x in numeric_prefix(ref)}
            if isinstance(ref, NumericReference):
                numeric_features.add((m, ref.name))
        prediction_bins |= {(m, x) for x in bin_labels(prediction_ref(b))}
        numeric_prediction_bins |= {(m, x) for x in numeric_prefix(prediction_ref(b))}
    models = {(m,) for m in fleet.baselines}
    numeric_models = {(m,) for m, _ in numeric_prediction_bins}
    f, p = "model_name_feature_name", "model_name"
    return {
        f"{f}_bin:ml_feature_bin_events:increase1h": (MFB, feature_bins),
        f"{f}:ml_feature_bin_events:increase1h": (MF, features),
        f"{f}_bin:ml_feature_bin_reference_ratio:max": (MFB, feature_bins),
        f"{f}_bin:ml_feature_bin_live_ratio:increase1h": (MFB, feature_bins),
        f"{f}:ml_feature_drift_psi:fleet_1h": (MF, features),
        f"{f}_bin:ml_feature_bin_live_cumulative_ratio:increase1h": (MFB, cumulative_bins),
        f"{f}_bin:ml_feature_bin_reference_cumulative_ratio:max": (MFB, cumulative_bins),
        f"{f}:ml_feature_drift_ks_statistic:fleet_1h": (MF, numeric_features),
        f"{p}_bin:ml_prediction_bin_events:increase1h": (MB, prediction_bins),
        f"{p}:ml_prediction_bin_events:increase1h": (M, models),
        f"{p}_bin:ml_prediction_bin_reference_ratio:max": (MB, prediction_bins),
        f"{p}_bin:ml_prediction_bin_live_ratio:increase1h": (MB, prediction_bins),
        f"{p}:ml_prediction_drift_psi:fleet_1h": (M, models),
        f"{p}_bin:ml_prediction_bin_live_cumulative_ratio:increase1h": (
            MB,
            numeric_prediction_bins,
        ),
        f"{p}_bin:ml_prediction_bin_reference_cumulative_ratio:max": (
            MB,
            numeric_prediction_bins,
        ),
        f"{p}:ml_prediction_drift_ks_statistic:fleet_1h": (M, numeric_models),
        **performance_series(),
    }


def performance_series() -> dict[str, tuple[tuple[str, ...], set[Any]]]:
    """This fleet sends no label and no probabilities: the labeled counts are 0 (correct
    counts and estimates for the classifier churn only, fraud predicts numbers), churn's
    confusion cells are all 0 among its classes, and every ratio is absent (no division
    by zero); test_labels_prometheus_e2e checks their values."""
    classes = CHURN_CLASSES  # no event had a class past the cap: no __other__ cells
    cells = {("churn", a, b) for a in classes for b in classes}
    per_class = {("churn", c) for c in classes}
    mpa = ("model_name", "predicted_class", "actual_class")
    mc = ("model_name", "class")
    out: dict[str, tuple[tuple[str, ...], set[Any]]] = {}
    for w in ("1h", "1d"):
        out[f"model_name:ml_labeled_predictions:increase{w}"] = (M, {(m,) for m in MODELS})
        out[f"model_name:ml_labeled_correct:increase{w}"] = (M, {("churn",)})
        out[f"model_name:ml_prediction_estimated:increase{w}"] = (M, {("churn",)})
        for ratio in ("label_accuracy", "label_mae", "label_rmse", "prediction_expected_accuracy"):
            out[f"model_name:ml_{ratio}:ratio{w}"] = (M, set())
        for short in ("ml_label", "ml_prediction_expected"):
            out[f"model_name_predicted_class_actual_class:{short}_confusion:increase{w}"] = (
                mpa,
                cells,
            )
            for part in ("predicted", "actual", "true_positives"):
                out[f"model_name_class:{short}_{part}:increase{w}"] = (mc, per_class)
            for ratio in ("precision", "recall"):
                out[f"model_name_class:{short}_{ratio}:ratio{w}"] = (mc, set())
    return out


def test_every_recording_rule_and_its_expression_return_the_expected_series(
    fleet: Fleet,
) -> None:
    expected = expected_recording_series(fleet)
    rules = recording_rules()
    assert set(expected) == set(rules), "every shipped recording rule needs an expectation"
    for record, rule in rules.items():
        keys, want = expected[record]
        for expr in (record, str(rule["expr"])):
            result = fleet.prom.query(expr)
            assert labels(result, keys) == want, expr
            extra = {k for s in result for k in s["metric"]} - {"__name__", *keys}
            assert not extra, f"{expr}: unexpected labels {extra}"
    health = [r for g in fleet.prom.api("rules")["groups"] for r in g["rules"]]
    assert len(health) == len(rules) + len(alert_rules())
    assert all(r["health"] == "ok" for r in health), [
        (r["name"], r["health"], r.get("lastError")) for r in health if r["health"] != "ok"
    ]


@dataclass
class Column:
    """One feature (or a model's predictions) as the fleet rules see it."""

    ref: Reference
    key: tuple[str, ...]
    """(model, feature) or (model,)."""
    per_replica: list[np.ndarray]
    """Counts sent to each daemon, by bin."""


FLEET_GROUPS = {
    "feature": (
        "model_name_feature_name_bin:ml_feature_bin_events:increase1h",
        {
            "psi": "model_name_feature_name:ml_feature_drift_psi:fleet_1h",
            "ks": "model_name_feature_name:ml_feature_drift_ks_statistic:fleet_1h",
            "volume": "model_name_feature_name:ml_feature_bin_events:increase1h",
        },
    ),
    "prediction": (
        "model_name_bin:ml_prediction_bin_events:increase1h",
        {
            "psi": "model_name:ml_prediction_drift_psi:fleet_1h",
            "ks": "model_name:ml_prediction_drift_ks_statistic:fleet_1h",
            "volume": "model_name:ml_prediction_bin_events:increase1h",
        },
    ),
}
STATISTICS: dict[str, Any] = {
    "psi": lambda ref, counts: psi(ref.shares, counts),
    "ks": lambda ref, counts: binned_ks(ref.shares, counts),
    # what the fleet alerts' volume guard reads
    "volume": lambda ref, counts: float(counts.sum()),
}


def fleet_columns(fleet: Fleet, group: str) -> list[Column]:
    out: list[Column] = []
    for m, b in fleet.baselines.items():
        if group == "feature":
            for ref in feature_refs(b):
                out.append(Column(ref, (m, ref.name), fleet.counts_by_replica(m, ref, ref.name)))
        else:
            ref = prediction_ref(b)
            out.append(Column(ref, (m,), fleet.counts_by_replica(m, ref, "prediction")))
    return out


def test_daemons_count_every_event_into_the_baselines_bins(fleet: Fleet) -> None:
    prom = fleet.prom
    for group, family in (("feature", "ml_feature_bin"), ("prediction", "ml_prediction_bin")):
        keys = ("instance", *(MFB if group == "feature" else MB))
        raw = values(prom.query(f"{family}_events_total"), keys)
        shares = values(prom.query(f"{family}_reference_ratio"), keys)
        n_bins = 0
        for col in fleet_columns(fleet, group):
            bins = bin_labels(col.ref)
            n_bins += len(bins)
            for inst, counts in zip(fleet.instances, col.per_replica, strict=True):
                assert [raw[(inst, *col.key, x)] for x in bins] == counts.tolist(), col.key
                assert [shares[(inst, *col.key, x)] for x in bins] == col.ref.shares.tolist()
        assert len(raw) == len(shares) == REPLICAS * n_bins


@pytest.mark.parametrize("group", FLEET_GROUPS)
def test_fleet_drift_equals_drift_over_the_union_of_events(fleet: Fleet, group: str) -> None:
    """The recording rules' PSI, KS and volume are those of every event the fleet was sent.

    increase() extrapolates: each counter was first scraped at 0, so nothing is added
    towards the start of the hour, but towards its end each replica's increases are
    stretched by one factor f in [1, 1 + 1.1 / (n - 1)] (n samples; the same for every
    series of a target, which share their scrape timestamps; n - 2 is allowed for, as an
    evaluation can miss a scrape appended just after it). So:
    - the factors solved from the recorded per-bin increases and the counts sent must
      explain every increase exactly, and lie in that range;
    - the recorded statistics must equal those of the union weighted by the factors;
    - they must equal those of the plain union within the most that weights in that
      range can move them (under a tenth here, see `tolerance`).
    """
    prom = fleet.prom
    bins_record, stat_records = FLEET_GROUPS[group]
    # one evaluation of the group: every record in it carries the same timestamp
    at = float(prom.query(f"max(timestamp({stat_records['psi']}))")[0]["value"][1])
    assert at > fleet.traffic_scraped_at
    columns = fleet_columns(fleet, group)
    bin_keys = MFB if group == "feature" else MB
    recorded_bins = values(prom.query(bins_record, at), bin_keys)
    recorded = {
        name: values(prom.query(record, at), bin_keys[:-1]) for name, record in stat_records.items()
    }
    samples = values(
        prom.query("min by (instance) (count_over_time(ml_feature_bin_events_total[1h]))", at),
        ("instance",),
    )

    # One extrapolation factor per replica explains every recorded bin increase.
    sent = np.vstack([np.stack(col.per_replica, axis=1) for col in columns])
    increases = np.array(
        [recorded_bins[(*col.key, x)] for col in columns for x in bin_labels(col.ref)]
    )
    factors = np.linalg.lstsq(sent, increases, rcond=None)[0]
    np.testing.assert_allclose(sent @ factors, increases, rtol=1e-9)
    eps = [1.1 / (samples[(inst,)] - 2) for inst in fleet.instances]
    for f, e in zip(factors, eps, strict=True):
        assert 1.0 - 1e-9 <= f <= 1.0 + e, (factors, eps)

    compared = 0
    for col in columns:
        union = sum(col.per_replica)
        weighted = sum(f * c for f, c in zip(factors, col.per_replica, strict=True))
        for name, stat in STATISTICS.items():
            if name == "ks" and not isinstance(col.ref, NumericReference):
                continue
            got = recorded[name][col.key]
            assert got == pytest.approx(stat(col.ref, weighted), rel=1e-9, abs=1e-12)
            want = stat(col.ref, union)
            tol = tolerance(functools.partial(stat, col.ref), col.per_replica, eps)
            assert abs(got - want) <= tol, (name, col.key, got, want, tol)
            compared += 1
    assert compared == sum(map(len, recorded.values()))


# Dashboard queries that must come back empty here, by a metric they select, with the
# models they are empty for. Every other query must return series for both models.
EMPTY_DASHBOARD_QUERIES: dict[str, tuple[set[str], str]] = {
    "ml_gpu_utilization_percent": (set(MODELS), "no GPU"),
    "ml_gpu_memory_used_bytes": (set(MODELS), "no GPU"),
    "drift_sidecar_gpu_errors_total": (set(MODELS), "no GPU, so no NVML error either"),
    "drift_sidecar_drift_check_errors_total": (set(MODELS), "no check failed"),
    "drift_sidecar_baseline_capture_progress_ratio": (set(MODELS), "file baselines"),
    "ml_model_memory_bytes": ({"churn"}, "only fraud reports its memory"),
    "ml_feature_drift_chi2_pvalue": ({"churn"}, "churn has no categorical feature"),
    "ml_prediction_drift_ks_pvalue": ({"churn"}, "churn predicts classes"),
    "model_name:ml_prediction_drift_ks_statistic:fleet_1h": ({"churn"}, "churn predicts classes"),
    "ml_prediction_drift_chi2_pvalue": ({"fraud"}, "fraud predicts numbers"),
    "ml_prediction_drift_mean_shift_ratio": ({"churn"}, "churn predicts classes"),
    "ml_embedding_drift_statistic": ({"churn"}, "churn sends no embeddings"),
    "ml_prediction_stage_latency_seconds_sum": ({"churn"}, "churn sends no stages"),
    "ml_embedding_drift_centroid_distance": ({"churn"}, "churn sends no embeddings"),
    "ml_embedding_drift_detected": ({"churn"}, "churn sends no embeddings"),
    # no labels, probabilities or labeled baseline here (test_labels_prometheus_e2e)
    "model_name:ml_label_accuracy:ratio1h": (set(MODELS), "no labels"),
    "model_name_class:ml_label_recall:ratio1h": (set(MODELS), "no labels"),
    "model_name:ml_label_mae:ratio1h": (set(MODELS), "no labels"),
    "model_name:ml_label_rmse:ratio1h": (set(MODELS), "no labels"),
    "model_name:ml_prediction_expected_accuracy:ratio1h": (set(MODELS), "no probabilities"),
    "model_name_class:ml_prediction_expected_recall:ratio1h": (set(MODELS), "no probabilities"),
    "ml_label_baseline_accuracy": (set(MODELS), "no baseline has a label column"),
}


def test_every_dashboard_query_returns_series_for_the_selected_model(fleet: Fleet) -> None:
    used: set[str] = set()
    for model in MODELS:
        for expr in dashboard_queries(model_name=model, rate_interval="1m"):
            result = fleet.prom.query(expr)  # raises on any API error
            empty_for = {
                name: models
                for name, (models, _) in EMPTY_DASHBOARD_QUERIES.items()
                if name in metric_names(expr)
            }
            used |= set(empty_for)
            if any(model in models for models in empty_for.values()):
                assert result == [], expr
                continue
            assert result, f"no series for {model}: {expr}"
            shown = {s["metric"]["model_name"] for s in result if "model_name" in s["metric"]}
            assert shown <= {model}, (expr, shown)
    assert used == set(EMPTY_DASHBOARD_QUERIES), "stale entries in EMPTY_DASHBOARD_QUERIES"


def test_bins_panel_shows_the_reference_and_the_fleets_live_shares(fleet: Fleet) -> None:
    """The dashboard's bins panel, for a numeric and a categorical feature: the reference
    shares exactly, the live shares those of every event the fleet was sent (within what
    increase()'s extrapolation can move them, see the fleet drift test)."""
    (panel,) = [p for p in dashboard_panels() if p["type"] == "barchart"]
    reference, live = (t["expr"] for t in panel["targets"])
    prom = fleet.prom
    samples = values(
        prom.query("min by (instance) (count_over_time(ml_feature_bin_events_total[1h]))"),
        ("instance",),
    )
    eps = [1.1 / (samples[(inst,)] - 2) for inst in fleet.instances]
    refs = {ref.name: ref for ref in feature_refs(fleet.baselines["fraud"])}
    for name in ("amount", "country"):
        ref = refs[name]
        numeric = isinstance(ref, NumericReference)
        # numeric bins sort as numbers on the chart: 00, 01, ..., 09, 10
        shown = [f"{int(x):02d}" for x in bin_labels(ref)] if numeric else bin_labels(ref)

        ref_shares, live_shares = (
            values(prom.query(substitute_variables(e, "fraud", feature_name=name)), ("bin",))
            for e in (reference, live)
        )
        assert set(ref_shares) == set(live_shares) == {(b,) for b in shown}
        assert [ref_shares[(b,)] for b in shown] == ref.shares.tolist()
        per_replica = fleet.counts_by_replica("fraud", ref, name)
        union = sum(per_replica)
        assert sum(live_shares.values()) == pytest.approx(1.0, abs=1e-12)
        for i, b in enumerate(shown):

            def share(counts: np.ndarray, i: int = i) -> float:
                return float(counts[i] / counts.sum())

            tol = tolerance(share, per_replica, eps)
            assert abs(live_shares[(b,)] - share(union)) <= tol, (name, b, tol)
