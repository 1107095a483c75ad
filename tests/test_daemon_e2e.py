"""The real daemon as a subprocess: real socket, real HTTP, exact counts in /metrics."""

from __future__ import annotations

import json
import random
import signal
import socket
import threading
import time

from harness import free_port, parse_metrics, wait_for

MODEL = {
    "name": "fraud",
    "version": "1.0.0",
    "baseline": {"capture": 100},
    "features": [
        {"name": "amount", "type": "numeric"},
        {"name": "age", "type": "numeric"},
        {"name": "country", "type": "categorical"},
    ],
    "prediction": {"type": "numeric"},
}


def event(i: int, **over: object) -> dict[str, object]:
    ev: dict[str, object] = {
        "model": "fraud",
        "features": {"amount": i * 0.01, "age": 30 + i % 7, "country": "de" if i % 2 else "fr"},
        "prediction": (i % 10) / 10,
        "confidence": 0.5 + (i % 5) / 10,
        "latency_s": 0.02,
    }
    ev.update(over)
    return ev


def test_single_events_batches_and_invalid_ones_are_counted_exactly(daemon_factory):
    d = daemon_factory({"models": [MODEL]})
    singles = [event(i) for i in range(10)]
    batch = [event(i) for i in range(10, 60)]
    mixed = [
        event(60),
        {"features": {}},
        event(61),
        {"model": "fraud", "confidence": 7},
        {"model": 5},
        event(62, status="error"),
        {"model": "ghost"},
    ]
    d.send([*singles, batch, mixed, b"{not json", b'{"model":"fraud","latency_s":-1}'])

    m = d.wait_metric(
        "ml_prediction_requests_total",
        62,
        model_name="fraud",
        model_version="1.0.0",
        status="success",
    )
    assert (
        m.value(
            "ml_prediction_requests_total",
            model_name="fraud",
            model_version="1.0.0",
            status="error",
        )
        == 1
    )
    assert m.value("drift_sidecar_events_rejected_total", reason="missing_field") == 1
    assert m.value("drift_sidecar_events_rejected_total", reason="out_of_range") == 2
    assert m.value("drift_sidecar_events_rejected_total", reason="wrong_type") == 1
    assert m.value("drift_sidecar_events_rejected_total", reason="unknown_model") == 1
    assert m.value("drift_sidecar_events_rejected_total", reason="invalid_json") == 1
    assert m.value("drift_sidecar_events_received_total", transport="socket") == 63 + 6
    assert m.value("drift_sidecar_events_accepted_total", model_name="fraud") == 63
    assert m.value("ml_prediction_latency_seconds_count", model_name="fraud") == 63
    assert m.value("ml_prediction_latency_seconds_bucket", model_name="fraud", le="0.025") == 63
    assert m.value("ml_feature_value_count", model_name="fraud", feature_name="amount") == 63
    # amount = i/100 for i in 0..62: values <= 0.1 are i = 0..10
    assert (
        m.value("ml_feature_value_bucket", model_name="fraud", feature_name="amount", le="0.1")
        == 11
    )
    assert m.value("ml_feature_missing_total", model_name="fraud", feature_name="country") == 0
    assert m.value("ml_prediction_value_count", model_name="fraud") == 63
    # The unknown model never became a series.
    assert all(
        dict(lab).get("model_name") != "ghost" for lab in m.series("ml_prediction_requests_total")
    )


def test_missing_nan_and_unknown_features(daemon_factory):
    d = daemon_factory({"models": [MODEL]})
    d.send(
        [
            {"model": "fraud", "features": {"amount": None, "age": 1, "country": "de"}},
            {"model": "fraud", "features": {"age": 2}},
            b'{"model": "fraud", "features": {"amount": 1e400}}',  # beyond a double: refused
            b'{"model": "fraud", "features": {"amount": NaN, "age": -Infinity}}',  # Python json
            {
                "model": "fraud",
                "features": {"amount": 1, "age": 1, "country": "de", "junk": 3, "junk2": "x"},
            },
            {"model": "fraud", "features": {"amount": "twelve", "age": 1}},  # not a number
        ]
    )
    m = d.wait_metric("drift_sidecar_events_accepted_total", 4, model_name="fraud")
    assert m.value("ml_feature_missing_total", model_name="fraud", feature_name="amount") == 3
    assert m.value("ml_feature_missing_total", model_name="fraud", feature_name="age") == 1
    assert m.value("ml_feature_missing_total", model_name="fraud", feature_name="country") == 2
    assert m.value("drift_sidecar_unknown_features_total", model_name="fraud") == 2
    assert m.value("drift_sidecar_events_rejected_total", reason="wrong_type") == 1
    assert m.value("drift_sidecar_events_rejected_total", reason="out_of_range") == 1
    # Missing values never reach the value histograms.
    assert m.value("ml_feature_value_count", model_name="fraud", feature_name="amount") == 1
    assert not any(
        dict(lab).get("feature_name", "").startswith("junk")
        for lab in m.series("ml_feature_missing_total")
    )


def test_overlong_line_is_skipped_and_neighbours_kept(daemon_factory):
    d = daemon_factory({"models": [MODEL], "socket": {"max_line_bytes": 2048}})
    big = json.dumps(event(1, id="x" * 5000))
    d.send([event(0), big, event(2)])
    m = d.wait_metric("drift_sidecar_events_accepted_total", 2, model_name="fraud")
    assert m.value("drift_sidecar_events_rejected_total", reason="line_too_long") == 1

    # The same across many small writes, with the newline arriving much later.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(d.socket_path)
        s.sendall((json.dumps(event(3)) + "\n").encode())
        for _ in range(10):
            s.sendall(b"x" * 1000)
        s.sendall(b"\n" + (json.dumps(event(4)) + "\n").encode())
    m = d.wait_metric("drift_sidecar_events_accepted_total", 4, model_name="fraud")
    assert m.value("drift_sidecar_events_rejected_total", reason="line_too_long") == 2


def test_http_ingest_takes_object_array_and_ndjson(daemon_factory):
    d = daemon_factory({"models": [MODEL]})
    assert d.post("/v1/events", json.dumps(event(0)).encode())[0] == 200
    assert d.post("/v1/events", json.dumps([event(1), event(2)]).encode())[0] == 200
    nd = "\n".join(json.dumps(event(i)) for i in range(3, 6)).encode()
    status, body = d.post("/v1/events", nd + b'\n{"model": "fraud", "confidence": 2}')
    assert status == 202
    assert body["accepted"] == 3 and body["rejected"] == 1
    assert body["errors"][0]["reason"] == "out_of_range"
    m = d.wait_metric("drift_sidecar_events_accepted_total", 6, model_name="fraud")
    assert m.value("drift_sidecar_events_received_total", transport="http") == 7


def test_http_ingest_can_be_switched_off_and_has_a_body_limit(daemon_factory):
    d = daemon_factory({"models": [MODEL], "http": {"max_body_bytes": 1000}})
    status, _ = d.post(
        "/v1/events", b"[" + b",".join([json.dumps(event(i)).encode() for i in range(50)]) + b"]"
    )
    assert status == 413
    assert d.scrape().value("drift_sidecar_events_rejected_total", reason="body_too_large") == 1
    off = daemon_factory({"models": [MODEL], "http": {"ingest_enabled": False}})
    assert off.post("/v1/events", json.dumps(event(0)).encode())[0] == 403


def test_openmetrics_exemplar_carries_trace_id(daemon_factory):
    d = daemon_factory({"models": [MODEL]})
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    d.send([event(0, trace_id=trace, latency_s=0.07)])
    d.wait_metric("drift_sidecar_events_accepted_total", 1, model_name="fraud")
    status, body = d.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    text = body.decode()
    assert status == 200
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith('ml_prediction_latency_seconds_bucket{le="0.075"')
    )
    assert f'# {{trace_id="{trace}"}} 0.07' in line
    assert text.rstrip().endswith("# EOF")
    plain = d.get("/metrics")[1].decode()
    assert "trace_id" not in plain  # the classic text format has no exemplars


def test_metrics_name_filter_keeps_only_the_named_samples(daemon_factory):
    d = daemon_factory({"models": [MODEL]})
    d.send([event(i) for i in range(5)])
    d.wait_metric("drift_sidecar_events_accepted_total", 5, model_name="fraud")
    names = "name[]=drift_sidecar_events_accepted_total&name[]=ml_feature_value_count"
    status, body = d.get(f"/metrics?{names}")
    assert status == 200
    m = parse_metrics(body.decode())
    assert m.value("drift_sidecar_events_accepted_total", model_name="fraud") == 5
    assert m.value("ml_feature_value_count", model_name="fraud", feature_name="amount") == 5
    assert {name for name, _ in m.samples} == {
        "drift_sidecar_events_accepted_total",
        "ml_feature_value_count",
    }
    assert (
        m.value("ml_feature_value_bucket", model_name="fraud", feature_name="amount", le="+Inf")
        is None
    )


def test_capture_then_drift_check_and_readiness(daemon_factory):
    model = {**MODEL, "drift": {"interval_s": 0.2, "min_samples": 50, "window_size": 500}}
    d = daemon_factory({"models": [model]})
    assert d.get("/readyz")[0] == 503
    body = d.json("/readyz")
    assert body["models"]["fraud"]["baseline"] == "capturing"
    rng = random.Random(1)
    evs = [
        {
            "model": "fraud",
            "features": {
                "amount": rng.gauss(0, 1),
                "age": rng.gauss(40, 5),
                "country": rng.choice("ab"),
            },
            "prediction": rng.random(),
        }
        for _ in range(300)
    ]
    d.send([evs[:150], evs[150:]])
    wait_for(lambda: d.get("/readyz")[0] == 200, 15, "baseline captured")
    report = wait_for(
        lambda: (r := d.json("/v1/drift")["models"]["fraud"]).get("status") == "ok" and r,
        15,
        "first drift check",
    )
    assert report["samples"] == 200
    assert set(report["features"]) == {"amount", "age", "country"}
    m = d.scrape()
    assert m.value("ml_drift_window_samples", model_name="fraud") == 200
    assert m.value("ml_drift_sufficient_data", model_name="fraud") == 1
    assert (
        m.value("ml_feature_drift_ks_statistic", model_name="fraud", feature_name="amount")
        == report["features"]["amount"]["ks_statistic"]
    )
    info = m.series("drift_sidecar_baseline_info")
    (labels,) = info
    assert dict(labels)["source"] == "capture" and len(dict(labels)["sha256"]) == 64
    # Per-bin counters hold every post-capture value, outer bins open-ended.
    bins = m.series("ml_feature_bin_events_total")
    amount = sum(v for lab, v in bins.items() if dict(lab)["feature_name"] == "amount")
    assert amount == 200


def test_sigterm_while_events_flow_drains_and_exits_zero(daemon_factory):
    d = daemon_factory({"models": [{**MODEL, "baseline": {"capture": 10}}]})
    sent = 0
    stop = threading.Event()

    def pump() -> None:
        nonlocal sent
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.socket_path)
            while not stop.is_set():
                try:
                    s.sendall((json.dumps([event(i) for i in range(100)]) + "\n").encode())
                except OSError:
                    return
                sent += 100

    t = threading.Thread(target=pump)
    t.start()
    wait_for(
        lambda: (
            (d.scrape().value("drift_sidecar_events_accepted_total", model_name="fraud") or 0)
            > 1000
        ),
        15,
        "traffic",
    )
    t0 = time.monotonic()
    code = d.stop(signal.SIGTERM)
    elapsed = time.monotonic() - t0
    stop.set()
    t.join(10)
    assert code == 0
    assert elapsed < 5
    logs = d.logs()
    stopped = [json.loads(ln) for ln in logs.splitlines() if '"stopped"' in ln]
    assert stopped and stopped[0]["accepted"] > 1000


def test_bad_event_flood_does_not_flood_the_log(daemon_factory):
    d = daemon_factory({"models": [MODEL]})
    d.send([b"{broken"] * 5000 + [event(0)])
    m = d.wait_metric("drift_sidecar_events_accepted_total", 1, model_name="fraud")
    assert m.value("drift_sidecar_events_rejected_total", reason="invalid_json") == 5000
    warnings = [ln for ln in d.logs().splitlines() if "event_rejected" in ln]
    assert 1 <= len(warnings) <= 3


def test_embedded_defaults_auto_register(tmp_path, daemon_factory):
    # `run` with no file: socket in the working folder, models registered from traffic.
    port = free_port()
    cfg_free = tmp_path / "work"
    cfg_free.mkdir()
    # Only the port must differ from the default to run beside other tests.
    (cfg_free / "only-port.yaml").write_text(
        f"http: {{port: {port}}}\n"
        "auto_register: {enabled: true, capture: 5}\n"
        "gpu: {enabled: auto}\n"
    )
    sock_path = cfg_free / "drift-sidecar.sock"
    # Returns once /healthz answers and the socket is where the defaults say.
    d = daemon_factory(
        config_path=cfg_free / "only-port.yaml",
        cwd=cfg_free,
        env={"XDG_RUNTIME_DIR": ""},
        socket_path=str(sock_path),
    )
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(
            b"".join(
                (
                    json.dumps({"model": "m", "features": {"x": i, "c": "a"}, "prediction": 1.0})
                    + "\n"
                ).encode()
                for i in range(20)
            )
        )

    m = wait_for(
        lambda: (m := d.scrape()).value("drift_sidecar_baseline_ready", model_name="m") == 1 and m,
        15,
        "capture",
    )
    assert m.value("ml_feature_missing_total", model_name="m", feature_name="c") == 0
    assert m.value("drift_sidecar_gpu_available") == 0
    assert (cfg_free / ".state" / "baselines" / "m.parquet").exists()
    assert d.stop(timeout=15) == 0
