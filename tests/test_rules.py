"""The shipped Prometheus rules: promtool checks, unit tests, coverage, and a live run."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from promtools import (
    ALERTS_FILE,
    PROMETHEUS_CONFIGS,
    RECORDING_FILE,
    REPO,
    RULE_FILES,
    RULE_TESTS_DIR,
    alert_rules,
    base_metric,
    documented_metrics,
    metric_names,
    recording_rules,
    rule_expressions,
    run_promtool,
    start_prometheus,
)

# The monitoring guide's rules, verbatim: copies of the guide must keep working.
GUIDE_EXPRESSIONS = {
    "HighErrorRate": 'sum(rate(ml_prediction_requests_total{status="error"}[5m]))\n'
    "/ sum(rate(ml_prediction_requests_total[5m])) > 0.01",
    "HighLatency": "histogram_quantile(0.99,\n"
    "  rate(ml_prediction_latency_seconds_bucket[5m])\n) > 0.1",
    "LowConfidencePredictions": "histogram_quantile(0.5,\n"
    "  rate(ml_prediction_confidence_bucket[1h])\n) < 0.6",
    "GPUMemoryHigh": "ml_gpu_memory_used_bytes / ml_gpu_memory_total_bytes > 0.9",
}
CUMULATIVE_BINS = 20


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


@pytest.mark.prometheus
def test_rule_files_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.prometheus
def test_example_scrape_config_passes_promtool_check() -> None:
    result = run_promtool("check", "config", PROMETHEUS_CONFIGS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_scrape_example_keeps_the_sidecar_port_and_job() -> None:
    config = yaml.safe_load((PROMETHEUS_CONFIGS / "scrape-kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep and keep[0]["regex"] == "drift-sidecar;metrics"
    assert {"target_label": "job", "replacement": "drift-sidecar"} in job["relabel_configs"]


@pytest.mark.prometheus
def test_promtool_unit_tests_pass() -> None:
    files = rule_test_files()
    assert files
    result = run_promtool("test", "rules", *files, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def test_every_rule_is_unit_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    tested_exprs: list[str] = []
    for path in rule_test_files():
        doc = yaml.safe_load(path.read_text())
        for case in doc["tests"]:
            for alert_test in case.get("alert_rule_test", []):
                (firing if alert_test.get("exp_alerts") else silent).add(alert_test["alertname"])
            tested_exprs += [t["expr"] for t in case.get("promql_expr_test", [])]

    alerts = set(alert_rules())
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown silent"
    records = set(recording_rules())
    untested = {
        name
        for name in records
        if not any(re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", e) for e in tested_exprs)
    }
    assert untested == set(), "recording rules with no promql_expr_test"


def test_guide_alerts_are_kept_verbatim() -> None:
    alerts = alert_rules()
    for name, expr in GUIDE_EXPRESSIONS.items():
        assert alerts[name]["expr"].strip() == expr


def test_every_alert_has_severity_annotations_and_a_runbook_section() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{2,3} (.+)$", runbook, re.MULTILINE)
    }
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbook.md has no section for {name}"


def test_rules_only_use_documented_metrics() -> None:
    known = documented_metrics()
    assert "ml_feature_bin_events_total" in known and len(known) > 40
    records = set(recording_rules())
    for name, expr in rule_expressions().items():
        for metric in metric_names(expr):
            assert metric in records or metric == "up" or base_metric(metric, known), (
                f"{name} uses {metric}, which docs/metrics.md does not define"
            )


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for name in recording_rules():
        level, metric, operations = name.split(":")
        assert level and metric.startswith("ml_") and operations, name


def cumulative_expr(source: str, by: str) -> str:
    """The running sum the KS rules spell out, bin by bin (PromQL has none)."""
    terms = []
    for k in range(CUMULATIVE_BINS):
        bins = "|".join(str(i) for i in range(k + 1))
        terms.append(
            f'label_replace(sum by ({by}) ({source}{{bin=~"{bins}"}}), "bin", "{k}", "", "")'
        )
    return " or ".join(terms)


@pytest.mark.parametrize(
    ("record", "source", "by"),
    [
        (
            "model_name_feature_name_bin:ml_feature_bin_live_cumulative_ratio:increase1h",
            "model_name_feature_name_bin:ml_feature_bin_live_ratio:increase1h",
            "model_name, feature_name",
        ),
        (
            "model_name_feature_name_bin:ml_feature_bin_reference_cumulative_ratio:max",
            "model_name_feature_name_bin:ml_feature_bin_reference_ratio:max",
            "model_name, feature_name",
        ),
        (
            "model_name_bin:ml_prediction_bin_live_cumulative_ratio:increase1h",
            "model_name_bin:ml_prediction_bin_live_ratio:increase1h",
            "model_name",
        ),
        (
            "model_name_bin:ml_prediction_bin_reference_cumulative_ratio:max",
            "model_name_bin:ml_prediction_bin_reference_ratio:max",
            "model_name",
        ),
    ],
)
def test_cumulative_rules_sum_every_prefix_of_bins(record: str, source: str, by: str) -> None:
    expr = " ".join(recording_rules()[record]["expr"].split())
    assert cumulative_expr(source, by) in expr


# --- the rules on a real Prometheus ----------------------------------------------------

# Per scrape, the fake exposition grows each bin's counter by these amounts; shares
# are then exact (every series of one target is extrapolated alike, and counters
# start at zero), so Prometheus must reproduce the PSI computed here.
REFERENCE = {"0": 0.1, "1": 0.2, "2": 0.3, "3": 0.4}
UPPER = {"0": "10", "1": "20", "2": "50", "3": "+Inf"}
STEP = {"0": 1, "1": 2, "2": 6, "3": 16}


def expected_psi() -> float:
    total = sum(STEP.values())
    psi = 0.0
    for b, ref in REFERENCE.items():
        cur = max(STEP[b] / total, 1e-4)
        psi += (cur - max(ref, 1e-4)) * math.log(cur / max(ref, 1e-4))
    return psi


def expected_ks() -> float:
    total = sum(STEP.values())
    live = ref = gap = 0.0
    for b in sorted(REFERENCE, key=int):
        live += STEP[b] / total
        ref += REFERENCE[b]
        gap = max(gap, abs(live - ref))
    return gap


class _Exposition(BaseHTTPRequestHandler):
    scrapes = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            n = type(self).scrapes
            type(self).scrapes += 1
        lines = ["# TYPE ml_feature_bin_events_total counter"]
        lines += [
            f'ml_feature_bin_events_total{{model_name="fraud",feature_name="amount",bin="{b}"}} '
            f"{STEP[b] * n}"
            for b in REFERENCE
        ]
        lines.append("# TYPE ml_feature_bin_reference_ratio gauge")
        labels = 'model_name="fraud",feature_name="amount"'
        lines += [
            f'ml_feature_bin_reference_ratio{{{labels},bin="{b}"}} {r}'
            for b, r in REFERENCE.items()
        ]
        lines.append("# TYPE ml_feature_bin_upper_bound gauge")
        lines += [
            f'ml_feature_bin_upper_bound{{model_name="fraud",feature_name="amount",bin="{b}"}} {u}'
            for b, u in UPPER.items()
        ]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def exposition() -> Iterator[str]:
    _Exposition.scrapes = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.prometheus
@pytest.mark.slow
def test_rules_load_and_compute_fleet_psi_in_prometheus(tmp_path: Path, exposition: str) -> None:
    with start_prometheus(tmp_path, [exposition], [ALERTS_FILE, RECORDING_FILE]) as prom:
        prom.wait_for_targets_up(1, timeout=20)
        psi = prom.wait_for("model_name_feature_name:ml_feature_drift_psi:fleet_1h", timeout=20)
        ks = prom.wait_for(
            "model_name_feature_name:ml_feature_drift_ks_statistic:fleet_1h", timeout=20
        )
        groups = prom.api("rules")["groups"]

    assert [s["metric"] for s in psi] == [
        {
            "__name__": "model_name_feature_name:ml_feature_drift_psi:fleet_1h",
            "model_name": "fraud",
            "feature_name": "amount",
        }
    ]
    assert float(psi[0]["value"][1]) == pytest.approx(expected_psi(), rel=1e-9)
    assert float(ks[0]["value"][1]) == pytest.approx(expected_ks(), rel=1e-9)
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(rule_expressions())
    assert all(rule["health"] in {"ok", "unknown"} for rule in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] == "err"
    ]
