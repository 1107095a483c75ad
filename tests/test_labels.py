"""Label events through the real pipeline and collector: joins, results, exact counters."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from harness import parse_metrics
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.config import parse_config
from sidecar.errors import ConfigError
from sidecar.events import decode_lines
from sidecar.health import Health
from sidecar.label_metrics import LabelCollector
from sidecar.pipeline import Pipeline


def make(extra: dict[str, Any] | None = None, **model: Any) -> tuple[Pipeline, CollectorRegistry]:
    cfg = parse_config(
        {
            "models": [
                {
                    "name": "clf",
                    "baseline": {"capture": 100_000},
                    "prediction": {"type": "categorical"},
                    "max_classes": 3,
                    **model,
                },
                {
                    "name": "reg",
                    "baseline": {"capture": 100_000},
                    "prediction": {"type": "numeric"},
                },
            ],
            **(extra or {}),
        }
    )
    pipe = Pipeline(cfg, Health())
    reg = CollectorRegistry(auto_describe=False)
    reg.register(LabelCollector(lambda: list(pipe.trackers.values()), pipe.labels))
    return pipe, reg


def send(pipe: Pipeline, events: list[dict[str, Any]], now: float = 1000.0) -> int:
    lines = [json.dumps(e).encode() for e in events]
    return pipe.handle(decode_lines(lines, 10_000), "socket", now=now)


def scrape(reg: CollectorRegistry) -> Any:
    return parse_metrics(generate_latest(reg).decode())


def result(m: Any, model: str, r: str) -> float | None:
    return m.value("ml_label_events_total", model_name=model, result=r)


def test_labels_join_their_predictions_and_count_exactly() -> None:
    pipe, reg = make()
    preds = [{"model": "clf", "id": f"r{i}", "prediction": "ab"[i % 2]} for i in range(10)]
    send(pipe, preds)
    # r0..r5 labeled "a": r0, r2, r4 right; r1, r3, r5 wrong; r6 twice; x9 never predicted
    labels = [{"kind": "label", "model": "clf", "id": f"r{i}", "label": "a"} for i in range(7)]
    labels += [
        {"kind": "label", "model": "clf", "id": "r6", "label": "a"},
        {"kind": "label", "model": "clf", "id": "x9", "label": "b"},
        {"kind": "label", "model": "clf", "prediction": "b", "label": "b"},
    ]
    assert send(pipe, labels) == 10
    m = scrape(reg)
    assert result(m, "clf", "joined") == 7
    assert result(m, "clf", "unmatched") == 2  # the repeated r6 and x9
    assert result(m, "clf", "self_contained") == 1
    assert result(m, "clf", "rejected") == 0
    assert m.value("ml_labeled_predictions_total", model_name="clf") == 8
    assert m.value("ml_labeled_correct_total", model_name="clf") == 5  # r0 r2 r4 r6, self
    cell = "ml_label_confusion_total"
    assert m.value(cell, model_name="clf", predicted_class="a", actual_class="a") == 4
    assert m.value(cell, model_name="clf", predicted_class="b", actual_class="a") == 3
    assert m.value(cell, model_name="clf", predicted_class="b", actual_class="b") == 1
    assert m.value("drift_sidecar_label_pending") == 3  # r7 r8 r9


def test_regression_errors_are_sums() -> None:
    pipe, reg = make()
    send(pipe, [{"model": "reg", "id": str(i), "prediction": float(i) + 0.5} for i in range(4)])
    send(pipe, [{"kind": "label", "model": "reg", "id": str(i), "label": 0.0} for i in range(4)])
    send(pipe, [{"kind": "label", "model": "reg", "prediction": 2.0, "label": 5.0}])
    m = scrape(reg)
    errs = [0.5, 1.5, 2.5, 3.5, 3.0]
    assert m.value("ml_label_absolute_error_total", model_name="reg") == pytest.approx(sum(errs))
    assert m.value("ml_label_squared_error_total", model_name="reg") == pytest.approx(
        sum(e * e for e in errs)
    )
    assert m.value("ml_labeled_predictions_total", model_name="reg") == 5


def test_a_label_before_its_prediction_is_unmatched() -> None:
    pipe, reg = make()
    send(pipe, [{"kind": "label", "model": "clf", "id": "early", "label": "a"}])
    send(pipe, [{"model": "clf", "id": "early", "prediction": "a"}])
    m = scrape(reg)
    assert result(m, "clf", "unmatched") == 1
    assert m.value("ml_labeled_predictions_total", model_name="clf") == 0
    assert m.value("drift_sidecar_label_pending") == 1  # still waits for a later label


def test_a_batch_scores_its_labels_after_its_predictions() -> None:
    pipe, reg = make()
    line = [
        {"kind": "label", "model": "clf", "id": "same", "label": "a"},
        {"model": "clf", "id": "same", "prediction": "a"},
    ]
    pipe.handle(decode_lines([json.dumps(line).encode()], 100), "socket", now=5.0)
    assert result(scrape(reg), "clf", "joined") == 1


def test_ttl_expires_predictions() -> None:
    pipe, reg = make({"labels": {"ttl_s": 100}})
    send(pipe, [{"model": "clf", "id": "old", "prediction": "a"}], now=1000.0)
    send(pipe, [{"model": "clf", "id": "older", "prediction": "a", "ts": 500.0}], now=1000.0)
    send(pipe, [{"model": "clf", "id": "new", "prediction": "a"}], now=1080.0)
    # past its ttl and not yet purged: expired, not scored
    send(pipe, [{"kind": "label", "model": "clf", "id": "old", "label": "a"}], now=1150.0)
    assert pipe.labels.expire(1150.0) == 1  # "older" (its own ts); "new" still waits
    send(pipe, [{"kind": "label", "model": "clf", "id": "older", "label": "a"}], now=1150.0)
    send(pipe, [{"kind": "label", "model": "clf", "id": "new", "label": "a"}], now=1150.0)
    m = scrape(reg)
    assert result(m, "clf", "expired") == 1
    assert result(m, "clf", "unmatched") == 1
    assert result(m, "clf", "joined") == 1
    assert m.value("drift_sidecar_label_pending_dropped_total", reason="expired") == 1


def test_max_pending_bounds_the_store() -> None:
    pipe, reg = make({"labels": {"max_pending": 5}})
    send(pipe, [{"model": "clf", "id": str(i), "prediction": "a"} for i in range(8)])
    m = scrape(reg)
    assert m.value("drift_sidecar_label_pending") == 5
    assert m.value("drift_sidecar_label_pending_dropped_total", reason="full") == 3
    send(pipe, [{"kind": "label", "model": "clf", "id": str(i), "label": "a"} for i in range(8)])
    m = scrape(reg)
    assert result(m, "clf", "joined") == 5 and result(m, "clf", "unmatched") == 3


def test_bad_labels_are_rejected_by_reason_and_counted() -> None:
    pipe, reg = make()
    send(pipe, [{"model": "clf", "id": "p", "prediction": "a"}])
    send(pipe, [{"model": "reg", "id": "q", "prediction": 1.0}])
    before = dict(pipe.health.rejected)
    bad = [
        {"kind": "label", "model": "nope", "id": "p", "label": "a"},  # unknown model
        {"kind": "label", "model": "clf", "id": "p"},  # no label
        {"kind": "label", "model": "clf", "label": "a"},  # no id nor prediction
        {"kind": "label", "model": "clf", "prediction": "a", "label": "c"},  # room for c
        {"kind": "label", "model": "clf", "prediction": "a", "label": "d"},  # and for d
        {"kind": "label", "model": "clf", "prediction": "a", "label": "e"},  # no room: a, c, d
        {"kind": "label", "model": "clf", "prediction": "a", "label": 1.5},  # not a class
        {"kind": "label", "model": "reg", "id": "q", "label": "x"},  # a string for a number
        {"kind": "label", "model": "clf", "id": "p", "label": ["a"]},  # not decodable
    ]
    assert send(pipe, bad) == 2
    got = {k: v - before.get(k, 0) for k, v in pipe.health.rejected.items()}
    assert {k: v for k, v in got.items() if v} == {
        "unknown_model": 1,
        "missing_field": 2,
        "unknown_class": 1,
        "wrong_type": 3,
    }
    m = scrape(reg)
    assert result(m, "clf", "rejected") == 4
    assert result(m, "reg", "rejected") == 1
    assert not [k for k in m.series("ml_label_events_total") if ("model_name", "nope") in k]


def test_expected_confusion_sums_probabilities_by_predicted_class() -> None:
    pipe, reg = make(prediction={"type": "numeric"})
    rows = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]]
    send(pipe, [{"model": "clf", "probabilities": p} for p in rows])
    send(pipe, [{"model": "clf", "prediction": 1, "probabilities": {"0": 0.25, "1": 0.75}}])
    m = scrape(reg)
    exp = np.zeros((3, 3))
    for p in rows:
        exp[int(np.argmax(p))] += p
    exp[1, :2] += [0.25, 0.75]
    name = "ml_prediction_expected_confusion_total"
    for i in range(3):
        for j in range(3):
            got = m.value(name, model_name="clf", predicted_class=str(i), actual_class=str(j))
            assert (got or 0.0) == pytest.approx(exp[i, j])
    assert m.value("ml_prediction_estimated_total", model_name="clf") == 5
    assert m.value("ml_prediction_expected_correct_total", model_name="clf") == pytest.approx(
        0.7 + 0.6 + 0.6 + 0.5 + 0.75
    )


def test_a_numeric_classifier_joins_by_class_index() -> None:
    pipe, reg = make(prediction={"type": "numeric"}, task="classification")
    send(pipe, [{"model": "clf", "id": "a", "prediction": 1, "probabilities": [0.2, 0.8]}])
    send(pipe, [{"kind": "label", "model": "clf", "id": "a", "label": 1}])
    m = scrape(reg)
    assert m.value("ml_labeled_correct_total", model_name="clf") == 1
    assert (
        m.value("ml_label_confusion_total", model_name="clf", predicted_class="1", actual_class="1")
        == 1
    )


def test_expected_confusion_of_a_mixed_batch() -> None:
    """Lists of two lengths, a dict and no probabilities at all, in one batch."""
    pipe, reg = make(prediction={"type": "numeric"}, max_classes=6)
    batch = [
        {"model": "clf", "probabilities": [0.9, 0.1]},
        {"model": "clf", "probabilities": [0.2, 0.3, 0.5]},
        {"model": "clf", "confidence": 0.5},
        {"model": "clf", "probabilities": {"1": 0.6, "2": 0.4}},
        {"model": "clf", "probabilities": [0.4, 0.6]},
    ]
    pipe.handle(decode_lines([json.dumps(batch).encode()], 100), "socket", now=1.0)
    m = scrape(reg)
    want = {("0", "0"): 0.9, ("0", "1"): 0.1, ("2", "0"): 0.2, ("2", "1"): 0.3, ("2", "2"): 0.5}
    want |= {("1", "1"): 0.6 + 0.6, ("1", "2"): 0.4, ("1", "0"): 0.4}
    got = {
        (dict(k)["predicted_class"], dict(k)["actual_class"]): v
        for k, v in m.series("ml_prediction_expected_confusion_total").items()
        if v
    }
    assert got == pytest.approx(want)
    assert m.value("ml_prediction_estimated_total", model_name="clf") == 4


@pytest.mark.parametrize(
    ("labels", "path"),
    [
        ({"ttl_s": 0}, "labels.ttl_s"),
        ({"ttl_s": float("inf")}, "labels.ttl_s"),
        ({"max_pending": 0}, "labels.max_pending"),
        ({"max_pending": "many"}, "labels.max_pending"),
        ({"keep": True}, "labels.keep"),
    ],
)
def test_bad_label_settings_name_their_key(labels: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"auto_register": {"enabled": True}, "labels": labels})
    assert path in str(err.value)


def test_a_bad_task_names_its_key() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.task"):
        parse_config({"models": [{"name": "m", "baseline": {"capture": 10}, "task": "ranking"}]})
