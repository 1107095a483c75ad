"""The registry's collectors: counted values from the trackers, computed ones from caches.

Nothing here is updated per event: each scrape reads the numpy counters of every tracker
and the latest cached drift result, as client_python's custom collectors intend.
"""

from __future__ import annotations

import math
import platform
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample

from sidecar import __version__
from sidecar.events import REASONS
from sidecar.exposition import Block, CachedFamily
from sidecar.frames import FRAME_ERRORS
from sidecar.health import CHECK_BUCKETS, DROP_REASONS, Health
from sidecar.stages import stage_family
from sidecar.tracker import CONFIDENCE_BUCKETS, LATENCY_BUCKETS, ModelTracker
from sidecar.tracker_labels import TrackerLabels, le_label


def _buckets(
    bounds: np.ndarray,
    counts: np.ndarray,
    exemplars: Mapping[int, tuple[str, float, float]] | None = None,
) -> list[Any]:
    cum = np.cumsum(counts)
    out: list[Any] = []
    for i, le in enumerate([*bounds.tolist(), math.inf]):
        ex = exemplars.get(i) if exemplars else None
        if ex is not None:
            out.append((le_label(le), float(cum[i]), Exemplar({"trace_id": ex[0]}, ex[1], ex[2])))
        else:
            out.append((le_label(le), float(cum[i])))
    return out


class SidecarCollector(Collector):
    """Every series of docs/metrics.md except the GPU ones (see sidecar.gpu)."""

    def __init__(
        self,
        trackers: Callable[[], Iterable[ModelTracker]],
        health: Health,
    ) -> None:
        self._trackers = trackers
        self._health = health
        self._labels: weakref.WeakKeyDictionary[ModelTracker, TrackerLabels] = (
            weakref.WeakKeyDictionary()
        )

    def _labels_of(self, t: ModelTracker) -> TrackerLabels:
        labels = self._labels.get(t)
        if labels is None:
            labels = self._labels[t] = TrackerLabels(t)
        return labels

    def collect(self) -> Iterator[Metric]:
        trackers = list(self._trackers())
        yield from self._traffic(trackers)
        yield from self._drift(trackers)
        yield from self._bins(trackers)
        yield stage_family((t.name, t.stages) for t in trackers)
        yield from self._own(trackers)

    # ------------------------------------------------------------ guide metrics
    def _traffic(self, trackers: list[ModelTracker]) -> Iterator[Metric]:
        req = CounterMetricFamily(
            "ml_prediction_requests",
            "Total prediction requests",
            labels=["model_name", "model_version", "status"],
        )
        lat = HistogramMetricFamily(
            "ml_prediction_latency_seconds", "Prediction latency in seconds", labels=["model_name"]
        )
        conf = HistogramMetricFamily(
            "ml_prediction_confidence",
            "Model prediction confidence scores",
            labels=["model_name", "predicted_class"],
        )
        val = SummaryMetricFamily(
            "ml_prediction_value", "Distribution of prediction values", labels=["model_name"]
        )
        fval = CachedFamily("ml_feature_value", "Feature value distribution", "histogram")
        miss = CachedFamily(
            "ml_feature_missing",
            "Count of missing feature values (null, absent, NaN, inf)",
            "counter",
        )
        for t in trackers:
            # The configured version's success and error series exist from the start.
            keys = {*t.requests, (0, "success"), (0, "error")}
            for vcode, status in sorted(keys):
                version = t.version_vocab.label(vcode)
                req.add_metric([t.name, version, status], t.requests[(vcode, status)])
            if t.latency_counts.any() or t.accepted:
                lat.add_metric(
                    [t.name],
                    _buckets(LATENCY_BUCKETS, t.latency_counts, t.latency_exemplars),
                    t.latency_sum,
                )
            for code in np.flatnonzero(t.conf_counts.sum(axis=1)):
                label = t.class_vocab.label(int(code))
                conf.add_metric(
                    [t.name, label],
                    _buckets(CONFIDENCE_BUCKETS, t.conf_counts[code]),
                    float(t.conf_sums[code]),
                )
            # OpenMetrics makes a sum a counter: never negative, never decreasing. Once a
            # negative value is seen the sum stops being exposed; a histogram then keeps
            # only its buckets (its `_count` goes with its `_sum`; `le="+Inf"` is the count).
            if t.pred_count or t.pred_kind == "numeric":
                if t.pred_negative:
                    val.samples.append(
                        Sample("ml_prediction_value_count", {"model_name": t.name}, t.pred_count)
                    )
                else:
                    val.add_metric([t.name], t.pred_count, t.pred_sum)
            tl = self._labels_of(t)
            fval.add(tl.histogram(t, t.feature_negative))
            miss.add(Block(tl.missing, t.missing))
        yield from (req, lat, conf, val, fval, miss)

    # ------------------------------------------------------------ drift results
    def _drift(self, trackers: list[ModelTracker]) -> Iterator[Metric]:
        def g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(
                name, doc + " (cached: refreshed by each drift check)", labels=labels
            )

        def gf(name: str, doc: str) -> CachedFamily:
            return CachedFamily(name, doc + " (cached: refreshed by each drift check)", "gauge")

        psi = gf("ml_feature_drift_psi", "Population stability index vs the baseline")
        ks = gf("ml_feature_drift_ks_statistic", "Two-sample KS statistic vs the baseline")
        ksp = gf("ml_feature_drift_ks_pvalue", "KS p-value (asymptotic), uncorrected")
        chi = gf("ml_feature_drift_chi2_statistic", "Chi-square statistic vs the baseline")
        chip = gf("ml_feature_drift_chi2_pvalue", "Chi-square p-value, uncorrected")
        wmiss = gf("ml_feature_drift_missing_rate", "Missing share in the window")
        bmiss = gf("ml_feature_baseline_missing_rate", "Missing share in the baseline")
        det = gf(
            "ml_feature_drift_detected",
            "1 if drift is detected; false alarms within drift.false_alarm_rate per model per"
            " drift.false_alarm_period_s, over every check",
        )
        adj = gf(
            "ml_feature_drift_adjusted_pvalue",
            "The verdict's p-value on the false-alarm rate's scale (detected when <= the rate)",
        )
        catp = gf(
            "ml_feature_drift_category_pvalue",
            "Exact per-category two-sample test p-value, Bonferroni over categories",
        )
        fn = gf("ml_feature_drift_samples", "Non-missing window values the tests used")
        fref = gf("ml_feature_baseline_samples", "Non-missing baseline values the tests used")
        fpsie = gf(
            "ml_feature_drift_psi_expected",
            "PSI expected with no drift at these sample sizes, (bins - 1) * (1/n + 1/N)",
        )
        per_feature = (psi, ks, ksp, chi, chip, wmiss, bmiss, det, adj, catp, fn, fref, fpsie)
        m = ["model_name"]
        pks = g("ml_prediction_drift_ks_statistic", "KS statistic of predictions", m)
        pksp = g("ml_prediction_drift_ks_pvalue", "KS p-value of predictions", m)
        pshift = g(
            "ml_prediction_drift_mean_shift_ratio",
            "(window mean - baseline mean) / |baseline mean| of predictions",
            m,
        )
        ppsi = g("ml_prediction_drift_psi", "PSI of predictions", m)
        pchi = g("ml_prediction_drift_chi2_statistic", "Chi-square statistic of classes", m)
        pchip = g("ml_prediction_drift_chi2_pvalue", "Chi-square p-value of classes", m)
        pdet = g(
            "ml_prediction_drift_detected",
            "1 if prediction drift is detected (same false-alarm rate, shared with the features)",
            m,
        )
        padj = g(
            "ml_prediction_drift_adjusted_pvalue",
            "The verdict's p-value on the false-alarm rate's scale (detected when <= the rate)",
            m,
        )
        pcatp = g(
            "ml_prediction_drift_category_pvalue",
            "Exact per-class two-sample test p-value, Bonferroni over classes",
            m,
        )
        pn = g("ml_prediction_drift_samples", "Non-missing window predictions the tests used", m)
        pref = g(
            "ml_prediction_baseline_samples", "Non-missing baseline predictions the tests used", m
        )
        ppsie = g(
            "ml_prediction_drift_psi_expected",
            "PSI of predictions expected with no drift at these sample sizes",
            m,
        )
        suff = g("ml_drift_sufficient_data", "1 when the last check met min_samples", m)
        last = g("ml_drift_last_check_timestamp_seconds", "Unix time of the last drift check", m)
        wsize = GaugeMetricFamily("ml_drift_window_samples", "Events in the drift window", labels=m)
        wfill = GaugeMetricFamily(
            "ml_drift_window_fill_ratio", "Window samples / window_size", labels=m
        )
        yield from _embedding(trackers, g)
        for t in trackers:
            n = len(t.window)
            wsize.add_metric([t.name], n)
            wfill.add_metric([t.name], n / t.window.capacity)
            r = t.latest
            if r is None:
                continue
            suff.add_metric([t.name], 1.0 if r.sufficient else 0.0)
            last.add_metric([t.name], r.checked_at)
            if not r.sufficient:
                continue
            blocks = self._labels_of(t).drift(r)
            for family in per_feature:
                block = blocks.get(family.name)
                if block is not None:
                    family.add(block)
            p = r.prediction
            if p is not None and p.sufficient:
                pdet.add_metric([t.name], 1.0 if p.drifted else 0.0)
                pn.add_metric([t.name], p.samples)
                pref.add_metric([t.name], p.reference_samples)
                for fam, v in (
                    (pks, p.ks_statistic),
                    (pksp, p.ks_pvalue),
                    (pshift, p.mean_shift_ratio),
                    (ppsi, p.psi),
                    (pchi, p.chi2_statistic),
                    (pchip, p.chi2_pvalue),
                    (padj, p.alarm_p_adjusted),
                    (ppsie, p.psi_expected),
                    (pcatp, p.test_pvalue if p.kind == "categorical" else None),
                ):
                    if v is not None:
                        fam.add_metric([t.name], float(v))
        yield from (psi, ks, ksp, chi, chip, wmiss, bmiss, det, adj, catp, fn, fref, fpsie)
        yield from (pks, pksp, pshift, ppsi, pchi, pchip, pdet, padj, pcatp, pn, pref, ppsie)
        yield from (suff, last, wsize, wfill)

    # ------------------------------------------------------------ fleet bins
    def _bins(self, trackers: list[ModelTracker]) -> Iterator[Metric]:
        fcount = CachedFamily(
            "ml_feature_bin_events",
            "Live values per baseline bin, for fleet-wide PSI in PromQL",
            "counter",
        )
        fref = CachedFamily("ml_feature_bin_reference_ratio", "Baseline share of each bin", "gauge")
        fupper = CachedFamily(
            "ml_feature_bin_upper_bound", "Upper edge of each numeric bin", "gauge"
        )
        pcount = CounterMetricFamily(
            "ml_prediction_bin_events",
            "Live predictions per baseline bin",
            labels=["model_name", "bin"],
        )
        pref = GaugeMetricFamily(
            "ml_prediction_bin_reference_ratio",
            "Baseline share of each prediction bin",
            labels=["model_name", "bin"],
        )
        for t in trackers:
            b = t.baseline
            if b is None:
                continue
            if b.numeric:
                tl = self._labels_of(t)
                tl.for_baseline(t)
                assert tl.bin_lines and tl.ref_block and tl.upper_block
                fcount.add(Block(tl.bin_lines, np.concatenate(t.num_bins)))
                fref.add(tl.ref_block)
                fupper.add(tl.upper_block)
            counted, shared = [], []
            for j, (name, counts) in enumerate(t.category_bin_counts()):
                shares = b.categorical[j].shares
                for (label, c), share in zip(counts, shares, strict=True):
                    lab = {"model_name": t.name, "feature_name": name, "bin": label}
                    counted.append(Sample("ml_feature_bin_events_total", lab, float(c)))
                    shared.append(Sample("ml_feature_bin_reference_ratio", lab, float(share)))
            fcount.add_samples(counted)
            fref.add_samples(shared)
            if t.pred_bins is not None and b.prediction is not None:
                for (label, c), share in zip(
                    t.prediction_bin_counts(), b.prediction.shares, strict=True
                ):
                    pcount.add_metric([t.name, label], c)
                    pref.add_metric([t.name, label], float(share))
        yield from (fcount, fref, fupper, pcount, pref)

    # ------------------------------------------------------------ own health
    def _own(self, trackers: list[ModelTracker]) -> Iterator[Metric]:
        h = self._health
        build = InfoMetricFamily("drift_sidecar_build", "Build information")
        build.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield build
        rec = CounterMetricFamily(
            "drift_sidecar_events_received", "Events received, valid or not", labels=["transport"]
        )
        for k in ("socket", "http"):
            rec.add_metric([k], h.received[k])
        yield rec
        rej = CounterMetricFamily(
            "drift_sidecar_events_rejected", "Events rejected, by reason", labels=["reason"]
        )
        # Every reason from the start, at 0: rate() then sees the first burst too.
        for k in sorted({*REASONS, *h.rejected}):
            rej.add_metric([k], h.rejected[k])
        yield rej
        drop = CounterMetricFamily(
            "drift_sidecar_events_dropped",
            "Events dropped unprocessed, by reason",
            labels=["reason"],
        )
        for k in sorted({*DROP_REASONS, *h.dropped}):
            drop.add_metric([k], h.dropped[k])
        yield drop
        frames = CounterMetricFamily(
            "drift_sidecar_frame_errors",
            "Arrow IPC streams (columnar frames) cut short, by reason; their rows are not counted",
            labels=["reason"],
        )
        for k in sorted({*FRAME_ERRORS, *h.frame_errors}):
            frames.add_metric([k], h.frame_errors[k])
        yield frames
        acc = CounterMetricFamily(
            "drift_sidecar_events_accepted",
            "Events folded into a model's state",
            labels=["model_name"],
        )
        unk = CounterMetricFamily(
            "drift_sidecar_unknown_features",
            "Feature values ignored: not configured",
            labels=["model_name"],
        )
        ready = GaugeMetricFamily(
            "drift_sidecar_baseline_ready",
            "1 once the baseline is loaded or captured",
            labels=["model_name"],
        )
        prog = GaugeMetricFamily(
            "drift_sidecar_baseline_capture_progress_ratio",
            "Captured events / baseline.capture",
            labels=["model_name"],
        )
        info = InfoMetricFamily(
            "drift_sidecar_baseline", "The baseline in use", labels=["model_name"]
        )
        for t in trackers:
            acc.add_metric([t.name], t.accepted)
            unk.add_metric([t.name], t.unknown_features)
            ready.add_metric([t.name], 0.0 if t.baseline is None else 1.0)
            if t.capture is not None:
                prog.add_metric([t.name], min(1.0, t.capture.count / t.capture.target))
            if t.baseline is not None:
                b = t.baseline
                info.add_metric(
                    [t.name], {"sha256": b.sha256, "source": b.source, "rows": str(b.rows)}
                )
        yield from (acc, unk, ready, prog, info)
        yield GaugeMetricFamily(
            "drift_sidecar_queue_depth",
            "Frames waiting between reader and processor",
            value=h.queue_depth,
        )
        yield GaugeMetricFamily(
            "drift_sidecar_queue_bytes",
            "Bytes waiting between reader and processor",
            value=h.queue_bytes,
        )
        yield GaugeMetricFamily(
            "drift_sidecar_connections", "Open event connections", value=h.connections
        )
        yield CounterMetricFamily(
            "drift_sidecar_connections_refused",
            "Connections over socket.max_connections",
            value=h.connections_refused,
        )
        shed = CounterMetricFamily(
            "drift_sidecar_http_connections_shed",
            "HTTP connections closed over http.max_connections: the oldest idle one, or the "
            "new one when every connection is busy",
            labels=["reason"],
        )
        for k in sorted({"idle_closed", "refused", *h.http_connections_shed}):
            shed.add_metric([k], h.http_connections_shed[k])
        yield shed
        rel = CounterMetricFamily(
            "drift_sidecar_config_reloads", "Config reloads, by result", labels=["result"]
        )
        for k in ("success", "failure"):
            rel.add_metric([k], h.reloads[k])
        yield rel
        dur = HistogramMetricFamily(
            "drift_sidecar_drift_check_duration_seconds",
            "Duration of one model's drift check",
            labels=["model_name"],
        )
        for model, counts in sorted(h.check_counts.items()):
            dur.add_metric([model], _buckets(CHECK_BUCKETS, counts), h.check_sums[model])
        yield dur
        err = CounterMetricFamily(
            "drift_sidecar_drift_check_errors", "Drift checks that raised", labels=["model_name"]
        )
        for model, c in sorted(h.check_errors.items()):
            err.add_metric([model], c)
        yield err
        snaps = CounterMetricFamily(
            "drift_sidecar_state_snapshots",
            "State snapshots written, by result",
            labels=["result"],
        )
        for k in ("success", "failure"):
            snaps.add_metric([k], h.snapshots[k])
        yield snaps
        yield from _state_writes(h)


def _embedding(
    trackers: list[ModelTracker], g: Callable[[str, str, list[str]], GaugeMetricFamily]
) -> Iterator[Metric]:
    """The embedding test's gauges, a few series per model (sidecar.stats.mmd)."""
    m = ["model_name"]
    stat = g(
        "ml_embedding_drift_statistic",
        "Cross-MMD statistic of embeddings, standard normal under no drift",
        m,
    )
    pval = g("ml_embedding_drift_pvalue", "Embedding drift p-value, uncorrected", m)
    det = g("ml_embedding_drift_detected", "1 if embedding drift is detected", m)
    cdist = g(
        "ml_embedding_drift_centroid_distance",
        "Euclidean distance between the window's and the reference's mean embedding",
        m,
    )
    wsize = GaugeMetricFamily(
        "ml_embedding_window_samples", "Embeddings in the drift window", labels=m
    )
    device = InfoMetricFamily(
        "drift_sidecar_embedding_device",
        "Where the embedding test runs: numpy, cpu (torch) or cuda:N (torch)",
        labels=m,
    )
    for t in trackers:
        if t.embedding_window is not None:
            wsize.add_metric([t.name], len(t.embedding_window))
        ref = t.baseline.embedding if t.baseline is not None else None
        if ref is not None:
            device.add_metric([t.name], {"device": ref.backend.device})
        e = t.latest.embedding if t.latest is not None else None
        if e is None or not e.sufficient:
            continue
        det.add_metric([t.name], 1.0 if e.drifted else 0.0)
        for fam, v in ((stat, e.statistic), (pval, e.pvalue), (cdist, e.centroid_distance)):
            if v is not None:
                fam.add_metric([t.name], float(v))
    yield from (stat, pval, det, cdist, wsize, device)


def _state_writes(h: Health) -> Iterator[Metric]:
    """The last reload's outcome; captured baselines written, and captures that failed."""
    yield GaugeMetricFamily(
        "drift_sidecar_config_last_reload_successful",
        "1 unless the last reload was refused (the config running is then the older one)",
        value=1.0 if h.last_reload_ok else 0.0,
    )
    writes = CounterMetricFamily(
        "drift_sidecar_baseline_writes",
        "Captured baselines written to state_dir, by result (failures are retried)",
        labels=["result"],
    )
    for k in ("success", "failure"):
        writes.add_metric([k], h.baseline_writes[k])
    yield writes
    failed = CounterMetricFamily(
        "drift_sidecar_baseline_capture_failures",
        "Captures that could not become a baseline (captured again)",
        labels=["model_name"],
    )
    for model, c in sorted(h.capture_failures.items()):
        failed.add_metric([model], c)
    yield failed


__all__ = ["Health", "SidecarCollector"]
