"""Labels through the real daemon: the socket, POST /v1/labels, the client, a restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from harness import DaemonProcess, wait_for

from sidecar.client import Monitor

MODEL = {
    "name": "clf",
    "baseline": {"capture": 100_000},
    "prediction": {"type": "categorical"},
}


def label(i: int, value: str, **kw: Any) -> dict[str, Any]:
    return {"kind": "label", "model": "clf", "id": f"r{i}", "label": value, **kw}


def test_socket_and_http_labels_count_exactly(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    d = daemon_factory({"models": [MODEL]})
    d.send([[{"model": "clf", "id": f"r{i}", "prediction": "ab"[i % 3 == 0]} for i in range(30)]])
    d.wait_metric("drift_sidecar_label_pending", 30)
    # over the socket: r0..r9 labeled "b" (right for r0, r3, r6, r9)
    d.send([label(i, "b") for i in range(10)])
    # over HTTP, `kind` implied: r10..r19 labeled "a" (wrong for r12, r15, r18), one unknown
    body = "\n".join(
        json.dumps({"model": "clf", "id": f"r{i}", "label": "a"}) for i in range(10, 20)
    )
    status, reply = d.post(
        "/v1/labels", (body + '\n{"model": "clf", "id": "zz", "label": "a"}').encode()
    )
    assert status == 200 and reply["accepted"] == 11, reply
    status, reply = d.post("/v1/labels", b'{"model": "nope", "id": "x", "label": "a"}')
    assert status == 400 and reply["errors"][0]["reason"] == "unknown_model"
    m = d.wait_metric("ml_label_events_total", 20, model_name="clf", result="joined")
    assert m.value("ml_label_events_total", model_name="clf", result="unmatched") == 1
    assert m.value("ml_labeled_predictions_total", model_name="clf") == 20
    assert m.value("ml_labeled_correct_total", model_name="clf") == 4 + 7
    cells = {
        (dict(k)["predicted_class"], dict(k)["actual_class"]): v
        for k, v in m.series("ml_label_confusion_total").items()
    }
    counted = {k: v for k, v in cells.items() if v}
    assert counted == {("b", "b"): 4, ("a", "b"): 6, ("a", "a"): 7, ("b", "a"): 3}
    # every cell of the classes seen is there from the start (0 until counted)
    assert set(cells) == {(p, a) for p in ("a", "b") for a in ("a", "b")}
    assert m.value("drift_sidecar_label_pending") == 10
    assert m.value("drift_sidecar_events_rejected_total", reason="unknown_model") == 1


def test_waiting_predictions_survive_sigterm(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    d = daemon_factory({"models": [MODEL]})
    d.send([[{"model": "clf", "id": f"r{i}", "prediction": "a"} for i in range(500)]])
    d.wait_metric("drift_sidecar_label_pending", 500)
    d.send([label(i, "a") for i in range(100)])
    d.wait_metric("ml_label_events_total", 100, model_name="clf", result="joined")
    assert d.stop() == 0
    again = daemon_factory(config_path=d.config_path)
    m = again.wait_metric("drift_sidecar_label_pending", 400)
    again.send([label(i, "b") for i in range(500)])
    m = again.wait_metric("ml_label_events_total", 400, model_name="clf", result="joined")
    assert m.value("ml_label_events_total", model_name="clf", result="unmatched") == 100
    assert m.value("ml_labeled_correct_total", model_name="clf") == 0
    assert (
        m.value("ml_label_confusion_total", model_name="clf", predicted_class="a", actual_class="b")
        == 400
    )


def test_the_last_waiting_prediction_labeled_is_not_restored(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """A snapshot leaves the file alone while it and the store are empty, but the one after
    the last waiting prediction is labeled must empty the file, or a restart brings back
    what was already joined."""
    d = daemon_factory({"models": [MODEL]})
    d.send([[{"model": "clf", "id": f"r{i}", "prediction": "a"} for i in range(50)]])
    d.wait_metric("drift_sidecar_label_pending", 50)
    assert d.stop() == 0
    again = daemon_factory(config_path=d.config_path)
    again.wait_metric("drift_sidecar_label_pending", 50)
    again.send([label(i, "a") for i in range(50)])
    m = again.wait_metric("ml_label_events_total", 50, model_name="clf", result="joined")
    assert m.value("drift_sidecar_label_pending") == 0
    assert again.stop() == 0
    third = daemon_factory(config_path=d.config_path, wait_ready=False)
    third.send([label(0, "a")])
    m = third.wait_metric("ml_label_events_total", 1, model_name="clf", result="unmatched")
    assert m.value("ml_label_events_total", model_name="clf", result="joined") in (None, 0)
    assert m.value("drift_sidecar_label_pending") == 0


def test_client_record_label(daemon_factory: Callable[..., DaemonProcess]) -> None:
    d = daemon_factory({"models": [MODEL]})
    with Monitor(d.socket_path, model="clf") as mon:
        for i in range(50):
            assert mon.record({"x": 1.0}, prediction="ab"[i % 2], id=f"c{i}")
        assert mon.flush(5.0)
        for i in range(50):
            assert mon.record_label(f"c{i}", "a")
        assert mon.record_label(None, "b", prediction="b")
        assert mon.record_label(None, "b")  # neither: dropped on the client's side
        assert mon.flush(5.0)
        stats = mon.stats
    m = d.wait_metric("ml_labeled_predictions_total", 51, model_name="clf")
    assert m.value("ml_labeled_correct_total", model_name="clf") == 26
    assert m.value("ml_label_events_total", model_name="clf", result="self_contained") == 1
    assert stats.dropped.get("invalid_input") == 1


def test_labeled_baseline_calibrates_the_estimate(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    n = 4000
    p1 = rng.random(n)
    y = (rng.random(n) < p1).astype(int)
    sharp = 1 / (1 + np.exp(-(np.log(p1 / (1 - p1)) / 0.5)))  # overconfident
    probs = np.stack([1 - sharp, sharp], axis=1)
    base = tmp_path / "base.parquet"
    pq.write_table(
        pa.table({"x": rng.random(n), "label": y, "probabilities": probs.tolist()}), base
    )
    spec = {"name": "clf", "baseline": {"path": str(base)}, "features": [{"name": "x"}]}
    d = daemon_factory({"models": [spec]}, wait_ready=True)
    m = d.scrape()
    base_acc = float(((sharp > 0.5).astype(int) == y).mean())
    assert m.value("ml_label_baseline_accuracy", model_name="clf") == pytest.approx(base_acc)
    d.send(
        [[{"model": "clf", "features": {"x": 0.5}, "probabilities": row} for row in probs.tolist()]]
    )
    m = d.wait_metric("ml_prediction_estimated_total", n, model_name="clf")
    est = m.value("ml_prediction_expected_correct_total", model_name="clf") / n
    raw = float(probs.max(axis=1).mean())
    # calibrated on these very rows: the estimate is their realized accuracy, the raw
    # confidence is not
    assert abs(est - base_acc) < 0.01 < abs(raw - base_acc)


def test_labels_are_refused_while_waiting_is_off(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    d = daemon_factory({"models": [MODEL], "labels": {"enabled": False}})
    d.send([[{"model": "clf", "id": "a", "prediction": "a"}]])
    d.send([label(0, "a", id="a"), label(1, "a", prediction="a")])
    m = wait_for(
        lambda: (
            (s := d.scrape()).value(
                "ml_label_events_total", model_name="clf", result="self_contained"
            )
            == 1
            and s
        ),
        what="the self-contained label",
    )
    assert m.value("ml_label_events_total", model_name="clf", result="unmatched") == 1
    assert m.value("drift_sidecar_label_pending") == 0
