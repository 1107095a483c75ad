"""The real daemon against hostile events and clients: nothing one sends costs the scrape,
the daemon, another model or another event.

Each class of the hardening work has its test here, through the real socket and HTTP
endpoint: invalid or odd values (class 1), long label values (class 2), idle connections and
stalled bodies (class 7), and the answers and logs that operators rely on (class 8).
"""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml
from harness import DaemonProcess, kill_quietly, parse_metrics, wait_for, write_config
from hostile import TRACE, class1_expected, class1_lines
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from promtools import run_promtool

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}
FEATURES = [{"name": "amount"}, {"name": "age"}, {"name": "country", "type": "categorical"}]


def captured_model(name: str = "fraud", capture: int = 20, **drift: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0.0",
        "baseline": {"capture": capture},
        "features": FEATURES,
        "prediction": {"type": "numeric"},
        "drift": {"interval_s": 0.2, "min_samples": 5, **drift},
    }


def good(model: str, i: int) -> dict[str, Any]:
    return {
        "model": model,
        "features": {
            "amount": (i % 7) - 3.0,
            "age": 20.0 + i % 50,
            "country": "de" if i % 2 else "fr",
            "x": i % 3 - 1.0,
            "c": "k",
        },
        "prediction": 0.1 * (i % 9) - 0.4,
        "latency_s": 0.01,
        "trace_id": TRACE,
    }


def valid_scrape(d: DaemonProcess) -> str:
    """/metrics in both formats: 200, both parsers accept it, promtool finds no problem."""
    status, body = d.get("/metrics")
    assert status == 200, body[:500]
    text = body.decode("utf-8")
    parse_metrics(text)
    result = run_promtool("check", "metrics", stdin=text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result.stdout
    status, body = d.get("/metrics", OPENMETRICS)
    assert status == 200, body[:500]
    for family in parse_openmetrics(body.decode("utf-8")):
        for s in family.samples:
            if s.exemplar is not None:
                assert s.exemplar.timestamp is not None and math.isfinite(s.exemplar.timestamp)
    return text


def rejected(text: str) -> dict[str, float]:
    m = parse_metrics(text)
    return {
        dict(lab)["reason"]: v
        for lab, v in m.series("drift_sidecar_events_rejected_total").items()
        if v
    }


def post(d: DaemonProcess, lines: list[bytes]) -> tuple[int, Any]:
    return d.post("/v1/events", b"\n".join(lines))


def launch(tmp_path: Path, extra: dict[str, Any], patch: str) -> DaemonProcess:
    """The daemon with one fault put in by `patch` (Python run before the CLI)."""
    config_path, cfg = write_config(tmp_path, extra)
    log_path = tmp_path / "daemon.log"
    code = (
        f"import sys\n{patch}\nfrom sidecar.cli import main\n"
        f"sys.exit(main(['run', '--config', {str(config_path)!r}]))\n"
    )
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    d = DaemonProcess(proc, config_path, cfg["socket"]["path"], cfg["http"]["port"], log_path)
    wait_for(lambda: proc.poll() is None and d.get("/healthz")[0] == 200, 20, "daemon up")
    return d


def log_records(d: DaemonProcess, event: str) -> list[dict[str, Any]]:
    out = []
    for line in d.logs().splitlines():
        if f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# ------------------------------------------------------------------ class 1
def test_class1_events_leave_metrics_valid_and_the_daemon_running(daemon_factory):
    d = daemon_factory(
        {
            "models": [captured_model()],
            "auto_register": {"enabled": True, "capture": 20},
            "drift": {"interval_s": 0.2, "min_samples": 5},
        }
    )
    lines = class1_lines("fraud", "auto")
    accepted, expected = class1_expected(lines)
    d.send([line for line, _ in lines])
    status, answer = post(d, [line for line, _ in lines])
    assert status == 202 and answer["accepted"] == accepted
    assert answer["rejected"] == sum(expected.values())
    named: dict[str, int] = {}
    for e in answer["errors"]:  # the first 20, each with its reason
        named[e["reason"]] = named.get(e["reason"], 0) + 1
    assert len(answer["errors"]) == 20
    assert all(n <= expected[r] for r, n in named.items())
    m = wait_for(
        lambda: (
            (m := d.scrape()).value("drift_sidecar_events_accepted_total", model_name="auto") == 2
            and m
        ),
        15,
        "accepted",
    )
    assert rejected(m.text) == {r: 2 * n for r, n in expected.items()}
    assert m.value("drift_sidecar_events_accepted_total", model_name="fraud") == 2 * (accepted - 1)
    valid_scrape(d)
    # Captures finish, with a feature named `prediction` offered to auto-registration, and
    # drift checks run; the scrape stays valid through all of it.
    d.send([[good(model, i) for i in range(40)] for model in ("fraud", "auto")])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "both baselines captured")
    wait_for(
        lambda: all(
            d.scrape().value("ml_drift_last_check_timestamp_seconds", model_name=m)
            for m in ("fraud", "auto")
        ),
        20,
        "a drift check of each model",
    )
    text = valid_scrape(d)
    assert 'feature_name="prediction"' not in text
    assert 'ml_feature_value_sum{feature_name="amount",model_name="fraud"}' not in text
    assert d.proc.poll() is None
    assert d.stop() == 0


_FAIL_WINDOW = """
from sidecar.tracker import ModelTracker
real = ModelTracker.drift_window
def drift_window(self, snap):
    if self.name == "bad":
        raise RuntimeError("injected: the window copy of model bad fails")
    return real(self, snap)
ModelTracker.drift_window = drift_window
"""


def test_a_failing_drift_check_is_counted_and_the_daemon_keeps_serving(tmp_path):
    d = launch(
        tmp_path, {"models": [captured_model("good", 10), captured_model("bad", 10)]}, _FAIL_WINDOW
    )
    try:
        d.send([[good(m, i) for i in range(30)] for m in ("good", "bad")])

        def checked() -> Any:
            m = d.scrape()
            errors = m.value("drift_sidecar_drift_check_errors_total", model_name="bad")
            good_checked = m.value("ml_drift_last_check_timestamp_seconds", model_name="good")
            return m if errors and errors >= 3 and good_checked else None

        m = wait_for(checked, 20, "three failed checks of model bad, and one of model good")
        first = m.value("ml_drift_last_check_timestamp_seconds", model_name="good")
        assert m.value("ml_drift_last_check_timestamp_seconds", model_name="bad") is None
        wait_for(
            lambda: (
                d.scrape().value("ml_drift_last_check_timestamp_seconds", model_name="good") > first
            ),
            10,
            "good still checked",
        )
        d.send([good("bad", 100)])
        d.wait_metric("drift_sidecar_events_accepted_total", 31, model_name="bad")
        assert log_records(d, "drift_check_failed")[0]["model"] == "bad"
        assert d.get("/healthz")[0] == 200
        assert d.stop() == 0
    finally:
        kill_quietly(d)


_FAIL_INGEST = """
from sidecar.tracker import ModelTracker
real = ModelTracker.ingest
def ingest(self, events, now):
    if self.name == "poison":
        raise RuntimeError("injected: folding events of model poison fails")
    return real(self, events, now)
ModelTracker.ingest = ingest
"""


def test_an_internal_error_costs_only_its_events_and_is_counted_as_dropped(tmp_path):
    d = launch(
        tmp_path,
        {"models": [captured_model("good", 10**6), captured_model("poison", 10**6)]},
        _FAIL_INGEST,
    )
    try:
        d.send([[good("poison", i) for i in range(3)]])
        d.wait_metric("drift_sidecar_events_dropped_total", 3, reason="internal_error")
        status, answer = d.post("/v1/events", json.dumps(good("poison", 4)).encode())
        assert status == 500 and answer["dropped"] == 1
        d.send([[good("good", i) for i in range(5)]])
        m = d.wait_metric("drift_sidecar_events_accepted_total", 5, model_name="good")
        assert m.value("drift_sidecar_events_dropped_total", reason="internal_error") == 4
        assert log_records(d, "events_dropped")[0]["reason"] == "internal_error"
        assert d.stop() == 0
    finally:
        kill_quietly(d)


# ------------------------------------------------------------------ class 2
def test_long_label_values_leave_the_scrape_small(daemon_factory):
    d = daemon_factory(
        {
            "models": [
                {
                    "name": "churn",
                    "version": "3",
                    "baseline": {"capture": 10**6},
                    "features": [{"name": "plan", "type": "categorical"}],
                    "prediction": {"type": "categorical"},
                }
            ],
            "auto_register": {"enabled": True},
        }
    )
    before = len(d.get("/metrics")[1])
    huge_model, klass = "M" * 400_000, "C" * 100_000
    d.send(
        [
            {"model": huge_model, "features": {"x": 1}},
            *[
                {
                    "model": "churn",
                    "version": f"{i}" + klass,
                    "features": {"plan": f"{i}" + klass},
                    "prediction": f"{i}" + klass,
                    "probabilities": {f"{i}" + klass: 0.9},
                }
                for i in range(12)
            ],
            {
                "model": "auto",
                "version": klass,
                "features": {klass: 1.0, "x": 2.0},
                "prediction": klass,
            },
        ]
    )
    m = d.wait_metric("drift_sidecar_events_accepted_total", 12, model_name="churn")
    d.wait_metric("drift_sidecar_events_accepted_total", 1, model_name="auto")
    text = valid_scrape(d)
    assert m.value("drift_sidecar_events_rejected_total", reason="label_too_long") == 1
    assert len(text) < before + 16_000, len(text) - before
    assert "CCCCCCCCCC" not in text and "MMMMMMMMMM" not in text
    assert (
        m.value(
            "ml_prediction_requests_total",
            model_name="churn",
            model_version="__other__",
            status="success",
        )
        == 12
    )
    assert 'predicted_class="__other__"' in text


# ------------------------------------------------------------------ class 7
def test_idle_connections_cannot_lock_out_probes(daemon_factory):
    d = daemon_factory({"models": [captured_model()], "http": {"max_connections": 16}})
    idle = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            idle.append(s)
        for _ in range(10):
            assert d.get("/healthz")[0] == 200
        m = d.scrape()
        closed = m.value("drift_sidecar_http_connections_shed_total", reason="idle_closed")
        assert closed is not None and closed >= 200 - 16
        assert m.value("drift_sidecar_http_connections_shed_total", reason="refused") == 0

        def server_closed(s: socket.socket) -> bool:
            s.settimeout(10)
            try:
                return s.recv(1) == b""
            except OSError:
                return True

        assert sum(server_closed(s) for s in idle[:150]) == 150  # the oldest went first
    finally:
        for s in idle:
            s.close()
    assert d.proc.poll() is None


def test_an_idle_connection_is_closed_after_the_idle_timeout(daemon_factory):
    d = daemon_factory({"models": [captured_model()], "http": {"idle_timeout_s": 0.5}})
    with socket.create_connection(("127.0.0.1", d.port), timeout=20) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"ok" not in got:
            got += s.recv(4096)
        assert got.startswith(b"HTTP/1.1 200")
        # Kept alive, then closed by the server once idle for idle_timeout_s.
        while chunk := s.recv(4096):
            got += chunk
    with socket.create_connection(("127.0.0.1", d.port), timeout=20) as s:
        assert s.recv(1) == b""  # never sent a request: closed too


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_stalled_bodies_hold_bounded_memory_and_get_a_clear_answer(daemon_factory):
    mib = 1 << 20
    d = daemon_factory(
        {
            "models": [captured_model()],
            "http": {
                "max_body_bytes": 8 * mib,
                "max_inflight_body_bytes": 32 * mib,
                "body_timeout_s": 4,
            },
        }
    )
    rss_before = _rss_bytes(d.proc.pid)
    n = 60
    answers: list[bytes] = [b""] * n
    sent = threading.Barrier(n + 1)

    def stalled(i: int) -> None:
        with socket.create_connection(("127.0.0.1", d.port), timeout=60) as s:
            s.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\n\r\n" % (8 * mib)
            )
            s.sendall(b" " * mib)  # an eighth of the body, then nothing
            sent.wait(60)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            answers[i] = got

    threads = [threading.Thread(target=stalled, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    sent.wait(60)
    busy = wait_for(
        lambda: (
            (v := d.scrape().value("drift_sidecar_events_dropped_total", reason="http_busy"))
            == n - 4
            and v
        ),
        30,
        "all but four bodies refused at once",
    )
    assert busy == n - 4  # 32 MiB of budget holds four declared 8 MiB bodies
    assert d.get("/healthz")[0] == 200
    assert _rss_bytes(d.proc.pid) - rss_before < 64 * mib
    for t in threads:
        t.join(60)
    codes = sorted(a.split(b" ", 2)[1] for a in answers)
    assert codes == [b"408"] * 4 + [b"503"] * (n - 4)
    m = d.scrape()
    assert m.value("drift_sidecar_events_dropped_total", reason="http_timeout") == 4
    # The budget came back: a plain body goes through.
    status, answer = d.post("/v1/events", json.dumps(good("fraud", 1)).encode())
    assert (status, answer["accepted"]) == (200, 1)


# ------------------------------------------------------------------ class 8
def test_answers_and_logs_name_what_was_refused_and_why(daemon_factory):
    d = daemon_factory(
        {"models": [captured_model()], "auto_register": {"enabled": True, "max_models": 1}}
    )
    body = b"\n".join(
        [
            json.dumps({"model": "ghost-1", "features": {"a": 1}}).encode(),
            json.dumps({"model": "ghost-2", "features": {"a": 1}}).encode(),
            json.dumps({"model": "fraud", "features": {"amount": "twelve"}}).encode(),
            json.dumps({"model": "fraud", "features": {"amout": 1.0, "age": 30}}).encode(),
        ]
    )
    status, answer = d.post("/v1/events", body)
    assert status == 202
    assert answer["accepted"] == 2  # ghost-1 (auto-registered) and the misspelt one
    assert [e["reason"] for e in answer["errors"]] == ["unknown_model", "wrong_type"]
    assert "auto_register.max_models" in answer["errors"][0]["detail"]
    m = d.wait_metric("drift_sidecar_unknown_features_total", 1, model_name="fraud")
    assert m.value("drift_sidecar_events_rejected_total", reason="unknown_model") == 1
    wait_for(lambda: log_records(d, "unknown_features"), 10, "the unknown feature logged")
    assert log_records(d, "unknown_features")[0]["features"] == ["amout"]
    cap = log_records(d, "auto_register_cap_reached")
    assert cap and cap[0]["model"] == "ghost-2" and cap[0]["max_models"] == 1
    assert d.stop(signal.SIGTERM) == 0


def test_restored_auto_registered_models_obey_the_label_limit(daemon_factory, tmp_path):
    """Models saved by an earlier run come back only if auto-registration would take them
    now: a smaller limits.max_label_bytes leaves a longer name out."""
    long_name = "m" * 60
    auto = {"auto_register": {"enabled": True, "capture": 5}, "state_dir": str(tmp_path / "s")}
    d = daemon_factory(auto)
    d.send([[good(name, i) for i in range(10)] for name in (long_name, "short")])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "both captured")
    assert d.stop() == 0
    d2 = daemon_factory({**auto, "limits": {"max_label_bytes": 32}})
    wait_for(lambda: log_records(d2, "auto_registered_skipped"), 10, "the skip logged")
    assert log_records(d2, "auto_registered_skipped")[0]["models"] == [long_name]
    ready = d2.json("/readyz")["models"]
    assert set(ready) == {"short"} and ready["short"]["baseline"] == "ready"
    assert long_name not in valid_scrape(d2)


def test_a_reload_applies_http_limits_and_refuses_a_new_idle_timeout(daemon_factory):
    d = daemon_factory({"models": [captured_model()], "http": {"max_connections": 64}})
    cfg = yaml.safe_load(d.config_path.read_text())
    cfg["http"]["idle_timeout_s"] = 5
    d.config_path.write_text(yaml.safe_dump(cfg))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: d.scrape().value("drift_sidecar_config_reloads_total", result="failure"),
        10,
        "the reload refused",
    )
    assert "http.idle_timeout_s: cannot change" in log_records(d, "reload_refused")[0]["error"]
    del cfg["http"]["idle_timeout_s"]
    cfg["http"]["max_connections"] = 4
    d.config_path.write_text(yaml.safe_dump(cfg))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: d.scrape().value("drift_sidecar_config_reloads_total", result="success"),
        10,
        "the reload applied",
    )
    idle = [socket.create_connection(("127.0.0.1", d.port), timeout=10) for _ in range(12)]
    try:
        assert d.get("/healthz")[0] == 200
        closed = d.scrape().value("drift_sidecar_http_connections_shed_total", reason="idle_closed")
        assert closed is not None and closed >= 12 - 4
    finally:
        for s in idle:
            s.close()
