"""Three sidecars scored by labels, scraped by a real Prometheus running the shipped rules:
the fleet's accuracy, precision, recall, MAE and RMSE, realized and estimated, are those of
the union of the events the daemons were sent.

increase() extrapolates each replica's counters by one factor f in [1, 1 + 1.1 / (n - 2)]
(every counter was scraped at 0 first, and the series of one target share their scrape
times: see test_prometheus_e2e). The factors are solved from the recorded counts, must
explain every one of them exactly, and every ratio the rules record must be that of the
union weighted by them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from harness import DaemonProcess, kill_quietly, start_daemon
from promtools import (
    RULE_FILES,
    PrometheusHandle,
    alert_rules,
    dashboard_queries,
    start_prometheus,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

REPLICAS = 3
PREDICTIONS = 400
"""Classifier predictions per daemon; 8 in 10 labeled there, 1 in 10 labeled on the next
daemon (self-contained), 1 in 10 never labeled."""
REGRESSIONS = 200
CLASSES = ("0", "1")
GRID = CLASSES
"""The classes a categorical model's counters know once both classes were predicted (no
`__other__`: no event had a class past the cap)."""
UNMATCHED = 5
REJECTED = 2
BASELINE_ACCURACY = 0.95
ZERO_SAMPLES = 15


@dataclass
class Counts:
    """What one daemon should count."""

    confusion: dict[tuple[str, str], float] = field(default_factory=dict)
    expected: dict[tuple[str, str], float] = field(default_factory=dict)
    expected_correct: float = 0.0
    estimated: int = 0
    labeled: int = 0
    correct: int = 0
    reg_labeled: int = 0
    abs_error: float = 0.0
    sq_error: float = 0.0

    def add_cell(self, which: str, key: tuple[str, str], v: float) -> None:
        cells = getattr(self, which)
        cells[key] = cells.get(key, 0.0) + v


@dataclass
class Fleet:
    prom: PrometheusHandle
    counts: list[Counts]
    scraped_at: float


def baseline(path: Path, rng: np.random.Generator) -> None:
    n = 2000
    pred = rng.choice(CLASSES, n)
    right = np.arange(n) < BASELINE_ACCURACY * n
    label = np.where(right, pred, np.where(pred == "0", "1", "0"))
    pq.write_table(
        pa.table({"x": rng.random(n), "prediction": pred.tolist(), "label": label.tolist()}), path
    )


def config(path: Path) -> dict[str, Any]:
    return {
        "gpu": {"enabled": False},
        "log": {"level": "warning"},
        "models": [
            {
                "name": "clf",
                "baseline": {"path": str(path)},
                "features": [{"name": "x"}],
                "prediction": {"type": "categorical"},
                "max_classes": 2,  # both classes: a label of a third is rejected
            },
            {"name": "reg", "baseline": {"capture": 1_000_000}, "prediction": {"type": "numeric"}},
        ],
    }


def traffic(
    rng: np.random.Generator, counts: list[Counts]
) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Per daemon: its predictions, then its labels; `counts` filled as they must count."""
    out: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = [([], []) for _ in counts]
    for i in range(REPLICAS):
        preds, _ = out[i]
        nxt = out[(i + 1) % REPLICAS][1]
        p = rng.random(PREDICTIONS)
        truth = np.where(rng.random(PREDICTIONS) < p, "1", "0")
        for k in range(PREDICTIONS):
            probs = [1.0 - float(p[k]), float(p[k])]
            pc = "1" if p[k] > 0.5 else "0"
            ident = f"c{i}-{k}"
            preds.append({"model": "clf", "id": ident, "prediction": pc, "probabilities": probs})
            c = counts[i]
            for j, cls in enumerate(CLASSES):
                c.add_cell("expected", (pc, cls), probs[j])
            c.expected_correct += probs[int(pc)]
            c.estimated += 1
            y = str(truth[k])
            if k % 10 < 8:
                out[i][1].append({"kind": "label", "model": "clf", "id": ident, "label": y})
                scorer = counts[i]
            elif k % 10 == 8:
                nxt.append({"kind": "label", "model": "clf", "prediction": pc, "label": y})
                scorer = counts[(i + 1) % REPLICAS]
            else:
                continue
            scorer.labeled += 1
            scorer.correct += pc == y
            scorer.add_cell("confusion", (pc, y), 1.0)
        v = rng.normal(0.0, 1.0, REGRESSIONS)
        y_reg = v + rng.normal(0.0, 0.5, REGRESSIONS)
        for k in range(REGRESSIONS):
            ident = f"r{i}-{k}"
            preds.append({"model": "reg", "id": ident, "prediction": float(v[k])})
            if k % 10 == 9:
                label = {"kind": "label", "model": "reg", "prediction": float(v[k])}
                nxt.append({**label, "label": float(y_reg[k])})
                scorer = counts[(i + 1) % REPLICAS]
            else:
                out[i][1].append(
                    {"kind": "label", "model": "reg", "id": ident, "label": float(y_reg[k])}
                )
                scorer = counts[i]
            err = abs(float(v[k]) - float(y_reg[k]))
            scorer.reg_labeled += 1
            scorer.abs_error += err
            scorer.sq_error += err * err
        out[i][1].extend(
            {"kind": "label", "model": "clf", "id": f"never-{j}", "label": "0"}
            for j in range(UNMATCHED)
        )
        out[i][1].extend(
            {"kind": "label", "model": "clf", "prediction": "0", "label": "7"}
            for _ in range(REJECTED)
        )
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("labels-fleet")
    rng = np.random.default_rng(20_261_130)
    base = tmp / "clf.parquet"
    baseline(base, rng)
    daemons: list[DaemonProcess] = []
    try:
        for i in range(REPLICAS):
            (tmp / f"d{i}").mkdir()
            daemons.append(start_daemon(tmp / f"d{i}", config(base)))
        # both classes predicted once, without id or probabilities (a confidence names the
        # class in ml_prediction_confidence, where the confusion cells take theirs): every cell
        # then exists (at 0), to be scraped at 0 before the first label
        for d in daemons:
            d.send([{"model": "clf", "prediction": c, "confidence": 0.9} for c in CLASSES])
        instances = [f"127.0.0.1:{d.port}" for d in daemons]
        with start_prometheus(tmp, instances, RULE_FILES) as prom:
            prom.wait_for_targets_up(REPLICAS)
            cells = REPLICAS * len(GRID) ** 2
            for name in ("ml_label_confusion_total", "ml_prediction_expected_confusion_total"):
                prom.wait_for(f"count({name} == 0) == {cells}")
            prom.wait_for(
                "min(count_over_time(ml_labeled_predictions_total[1h]))",
                lambda r: bool(r) and float(r[0]["value"][1]) >= ZERO_SAMPLES,
            )
            counts = [Counts() for _ in range(REPLICAS)]
            plan = traffic(rng, counts)
            for d, (preds, _) in zip(daemons, plan, strict=True):
                d.send([preds])
            for d, (_, labels) in zip(daemons, plan, strict=True):
                d.send([labels])
            n_labels = sum(len(labels) for _, labels in plan)
            prom.wait_for(
                "sum(ml_label_events_total)",
                lambda r: bool(r) and float(r[0]["value"][1]) == n_labels,
            )
            scraped_at = prom_time(prom)
            prom.wait_for(
                f"count(timestamp(model_name_class:ml_prediction_expected_recall:ratio1d)"
                f" > {scraped_at}) == {len(CLASSES)}"
            )
            yield Fleet(prom, counts, scraped_at)
    finally:
        for d in daemons:
            kill_quietly(d)


def prom_time(prom: PrometheusHandle) -> float:
    return float(prom.query("time()")[0]["value"][0])


def by(prom: PrometheusHandle, expr: str, keys: tuple[str, ...], at: float) -> dict[Any, float]:
    return {tuple(s["metric"][k] for k in keys): float(s["value"][1]) for s in prom.query(expr, at)}


def weighted(counts: list[Counts], f: np.ndarray) -> Counts:
    out = Counts()
    for c, w in zip(counts, f, strict=True):
        for which in ("confusion", "expected"):
            for key, v in getattr(c, which).items():
                out.add_cell(which, key, w * v)
        for name in (
            "expected_correct",
            "estimated",
            "labeled",
            "correct",
            "reg_labeled",
            "abs_error",
            "sq_error",
        ):
            setattr(out, name, getattr(out, name) + w * getattr(c, name))
    return out


def test_fleet_performance_rules_equal_the_union_of_events(fleet: Fleet) -> None:
    prom, counts = fleet.prom, fleet.counts
    at = float(
        prom.query("max(timestamp(model_name_class:ml_prediction_expected_recall:ratio1d))")[0][
            "value"
        ][1]
    )
    assert at > fleet.scraped_at
    grid = [(p, a) for p in GRID for a in GRID]
    mpa = ("model_name", "predicted_class", "actual_class")
    rec: dict[str, dict[Any, float]] = {}
    for w in ("1h", "1d"):
        rec[f"conf{w}"] = by(
            prom, f"model_name_predicted_class_actual_class:ml_label_confusion:increase{w}", mpa, at
        )
        rec[f"exp{w}"] = by(
            prom,
            f"model_name_predicted_class_actual_class:ml_prediction_expected_confusion:increase{w}",
            mpa,
            at,
        )
        rec[f"labeled{w}"] = by(
            prom, f"model_name:ml_labeled_predictions:increase{w}", ("model_name",), at
        )
    assert rec["conf1h"] == rec["conf1d"] and rec["exp1h"] == rec["exp1d"]  # all within the hour
    assert set(rec["conf1h"]) == {("clf", p, a) for p, a in grid}

    # one factor per replica explains every recorded count
    rows = [[c.confusion.get(k, 0.0) for c in counts] for k in grid]
    rows += [[c.expected.get(k, 0.0) for c in counts] for k in grid]
    rows += [[float(c.labeled) for c in counts], [float(c.reg_labeled) for c in counts]]
    got = [rec["conf1h"][("clf", *k)] for k in grid] + [rec["exp1h"][("clf", *k)] for k in grid]
    got += [rec["labeled1h"][("clf",)], rec["labeled1h"][("reg",)]]
    design = np.array(rows)
    factors = np.linalg.lstsq(design, np.array(got), rcond=None)[0]
    np.testing.assert_allclose(design @ factors, got, rtol=1e-9, atol=1e-9)
    samples = by(
        prom,
        "min by (instance) (count_over_time(ml_labeled_predictions_total[1h]))",
        ("instance",),
        at,
    )
    eps = 1.1 / (min(samples.values()) - 2)
    assert ((factors >= 1 - 1e-9) & (factors <= 1 + eps)).all(), (factors, eps)

    u = weighted(counts, factors)
    for w in ("1h", "1d"):
        m = ("model_name",)
        acc = by(prom, f"model_name:ml_label_accuracy:ratio{w}", m, at)
        assert acc == {("clf",): pytest.approx(u.correct / u.labeled, rel=1e-9)}
        est = by(prom, f"model_name:ml_prediction_expected_accuracy:ratio{w}", m, at)
        assert est == {("clf",): pytest.approx(u.expected_correct / u.estimated, rel=1e-9)}
        mae = by(prom, f"model_name:ml_label_mae:ratio{w}", m, at)
        assert mae == {("reg",): pytest.approx(u.abs_error / u.reg_labeled, rel=1e-9)}
        rmse = by(prom, f"model_name:ml_label_rmse:ratio{w}", m, at)
        assert rmse == {("reg",): pytest.approx(math.sqrt(u.sq_error / u.reg_labeled), rel=1e-9)}
        for short, cells in (("ml_label", u.confusion), ("ml_prediction_expected", u.expected)):
            for what in ("precision", "recall"):
                want: dict[Any, Any] = {}
                for c in GRID:
                    side = [
                        v for (p, a), v in cells.items() if (p if what == "precision" else a) == c
                    ]
                    if sum(side) > 0:
                        want[("clf", c)] = pytest.approx(
                            cells.get((c, c), 0.0) / sum(side), rel=1e-9
                        )
                got_ratio = by(
                    prom, f"model_name_class:{short}_{what}:ratio{w}", ("model_name", "class"), at
                )
                assert got_ratio == want, (short, what, w)


def test_label_results_and_alerts(fleet: Fleet) -> None:
    prom = fleet.prom
    results = by(
        prom,
        "sum by (model_name, result) (ml_label_events_total)",
        ("model_name", "result"),
        prom_time(prom),
    )
    sc = REPLICAS * PREDICTIONS // 10
    assert results == {
        ("clf", "joined"): REPLICAS * PREDICTIONS * 8 // 10,
        ("clf", "self_contained"): sc,
        ("clf", "unmatched"): REPLICAS * UNMATCHED,
        ("clf", "expired"): 0,
        ("clf", "rejected"): REPLICAS * REJECTED,
        ("reg", "joined"): REPLICAS * REGRESSIONS * 9 // 10,
        ("reg", "self_contained"): REPLICAS * REGRESSIONS // 10,
        ("reg", "unmatched"): 0,
        ("reg", "expired"): 0,
        ("reg", "rejected"): 0,
    }
    rejected = prom.query('sum(drift_sidecar_events_rejected_total{reason="unknown_class"})')
    assert float(rejected[0]["value"][1]) == REPLICAS * REJECTED
    # a calibrated model right about 3 times in 4 against a baseline's 0.95: both fire
    rules = alert_rules()
    for name in ("AccuracyDrop", "EstimatedAccuracyDrop"):
        fired = {s["metric"]["model_name"] for s in prom.query(str(rules[name]["expr"]))}
        assert fired == {"clf"}, name


def test_the_dashboard_performance_row_shows_the_labeled_models(fleet: Fleet) -> None:
    mine = ("ml_label", "ml_prediction_expected", "drift_sidecar_label_pending")
    shown = 0
    for model in ("clf", "reg"):
        for expr in dashboard_queries(model_name=model, rate_interval="1m"):
            if not any(m in expr for m in mine):
                continue
            result = fleet.prom.query(expr)
            names = {s["metric"].get("model_name", model) for s in result}
            assert names <= {model}, expr
            # regression figures are the regression model's, the rest the classifier's
            regression = "mae" in expr or "rmse" in expr
            if regression == (model == "reg") or "model_name" not in expr:
                assert result, f"no series for {model}: {expr}"
                shown += 1
    assert shown >= 8
