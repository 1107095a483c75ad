"""The Grafana dashboard: structure, variables, and every query valid PromQL on known metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from promtools import (
    GRAFANA_VARIABLE,
    REPO,
    base_metric,
    check_expressions,
    dashboard,
    dashboard_panels,
    dashboard_queries,
    dashboard_raw_queries,
    documented_metrics,
    metric_names,
    recording_rules,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def data_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard_panels() if p["type"] != "row"]


def referenced_metrics(panel: dict[str, Any]) -> set[str]:
    return {m for t in panel.get("targets", []) for m in metric_names(t["expr"])}


def test_dashboard_is_current_schema_with_a_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] == "drift-sidecar"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model_name"]
    assert model["datasource"] == DATASOURCE
    assert model["multi"] and model["includeAll"] and model["allValue"] == ".*"
    assert model["query"]["query"] == "label_values(drift_sidecar_baseline_ready, model_name)"
    assert "drift_sidecar_baseline_ready" in documented_metrics()


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    panels = data_panels()
    assert len({p["id"] for p in dashboard_panels()}) == len(dashboard_panels())
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard_panels():
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area


@pytest.mark.parametrize(
    ("what", "metrics", "types"),
    [
        ("request rate", {"ml_prediction_requests_total"}, {"timeseries"}),
        ("latency", {"ml_prediction_latency_seconds_bucket"}, {"timeseries"}),
        ("confidence distribution", {"ml_prediction_confidence_bucket"}, {"heatmap"}),
        ("PSI per feature", {"ml_feature_drift_psi"}, {"status-history", "heatmap"}),
        (
            "fleet PSI per feature",
            {"model_name_feature_name:ml_feature_drift_psi:fleet_1h"},
            {"status-history", "heatmap"},
        ),
        ("KS p-values", {"ml_feature_drift_ks_pvalue"}, {"timeseries"}),
        ("prediction drift", {"ml_prediction_drift_psi"}, {"timeseries"}),
        ("GPU utilization", {"ml_gpu_utilization_percent"}, {"timeseries"}),
        ("GPU memory", {"ml_gpu_memory_used_bytes", "ml_gpu_memory_total_bytes"}, {"timeseries"}),
        (
            "events in",
            {"drift_sidecar_events_received_total", "drift_sidecar_events_accepted_total"},
            {"timeseries"},
        ),
        (
            "events lost",
            {"drift_sidecar_events_rejected_total", "drift_sidecar_events_dropped_total"},
            {"timeseries"},
        ),
        ("queue depth", {"drift_sidecar_queue_depth"}, {"timeseries"}),
        (
            "drift check duration",
            {"drift_sidecar_drift_check_duration_seconds_bucket"},
            {"timeseries"},
        ),
        (
            "bins: reference vs live",
            {"ml_feature_bin_reference_ratio", "ml_feature_bin_events_total"},
            {"barchart"},
        ),
        (
            "stage latencies",
            {
                "ml_prediction_stage_latency_seconds_sum",
                "ml_prediction_stage_latency_seconds_count",
            },
            {"timeseries"},
        ),
    ],
)
def test_dashboard_has_panel_for(what: str, metrics: set[str], types: set[str]) -> None:
    matching = [p for p in data_panels() if metrics <= referenced_metrics(p)]
    assert matching, f"no panel for {what}"
    assert {p["type"] for p in matching} & types, f"{what} is not shown as {types}"


def test_queries_only_use_documented_metrics_or_recording_rules() -> None:
    known = documented_metrics()
    records = set(recording_rules())
    for expr in dashboard_raw_queries():
        for metric in metric_names(expr):
            assert metric in records or metric == "up" or base_metric(metric, known), (
                f"{metric} (in {expr}) is neither in docs/metrics.md nor a recording rule"
            )


def test_model_labelled_queries_follow_the_model_variable() -> None:
    for expr in dashboard_raw_queries():
        if "model_name" in expr and "model_name=~" not in expr:
            pytest.fail(f"query groups by model_name but ignores $model_name: {expr}")
        if "model_name=~" in expr:
            assert 'model_name=~"$model_name"' in expr


def test_substituted_queries_have_no_grafana_variables() -> None:
    queries = dashboard_queries(model_name="fraud", rate_interval="2m", feature_name="amount")
    assert len(queries) == len(dashboard_raw_queries()) > 30
    assert not [q for q in queries if GRAFANA_VARIABLE.search(q)]
    assert any('feature_name=~"amount"' in q for q in queries)
    assert any('model_name=~"fraud"' in q and "[2m]" in q for q in queries)


@pytest.mark.prometheus
def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    result = check_expressions(dashboard_queries(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_examples_point_at_the_dashboard_and_prometheus() -> None:
    folder = REPO / "configs" / "grafana" / "provisioning"
    providers = yaml.safe_load((folder / "dashboards.yml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]
    sources = yaml.safe_load((folder / "datasources.yml").read_text())["datasources"]
    assert sources[0]["type"] == "prometheus"


def panel_using(*metrics: str) -> dict[str, Any]:
    (panel,) = [p for p in data_panels() if set(metrics) <= referenced_metrics(p)]
    return panel


def test_bins_panel_shows_one_models_feature_reference_beside_live_shares() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    feature = variables["feature_name"]
    # one feature at a time, among those of the selected models that have bins
    assert not feature["multi"] and not feature["includeAll"]
    assert feature["datasource"] == DATASOURCE
    assert feature["query"]["query"] == (
        'label_values(ml_feature_bin_reference_ratio{model_name=~"$model_name"}, feature_name)'
    )
    panel = panel_using("ml_feature_bin_reference_ratio", "ml_feature_bin_events_total")
    assert panel["repeat"] == "model_name"  # one chart per selected model
    reference, live = panel["targets"]
    for target in panel["targets"]:
        assert target["instant"] and target["format"] == "table"
        assert 'feature_name=~"$feature_name"' in target["expr"]
    assert "ml_feature_bin_reference_ratio" in metric_names(reference["expr"])
    # live shares: the fleet's increase per bin over the dashboard's range, over its total
    assert "[$__range]" in live["expr"] and "/ on() group_left()" in live["expr"]
    assert panel["options"]["xField"] == "bin"
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    ids = [t["id"] for t in panel["transformations"]]
    assert ids == ["merge", "organize", "sortBy"]


def test_stage_panel_stacks_each_models_stages() -> None:
    panel = panel_using(
        "ml_prediction_stage_latency_seconds_sum", "ml_prediction_stage_latency_seconds_count"
    )
    assert panel["repeat"] == "model_name"
    assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"
    (target,) = panel["targets"]
    assert "by (model_name, stage)" in target["expr"] and target["legendFormat"] == "{{stage}}"


def test_variable_queries_use_documented_metrics() -> None:
    known = documented_metrics()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        selector, label = variable["query"]["query"].removeprefix("label_values(").rsplit(",", 1)
        assert label.strip().removesuffix(")") == variable["name"]
        metrics = metric_names(selector)
        assert metrics and all(base_metric(m, known) for m in metrics), variable["name"]
