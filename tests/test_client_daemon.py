"""sidecar.client against the real daemon (`python -m sidecar.cli run`) over a real socket."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from harness import DaemonProcess, wait_for

from sidecar.client import Monitor

pytestmark = pytest.mark.timeout(90)

MODEL = {
    "name": "m",
    "version": "1",
    "baseline": {"capture": 100},
    "features": [{"name": "x", "type": "numeric"}],
}


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    return daemon_factory({"models": [MODEL]})


def wait_requests(d: DaemonProcess, status: str, n: float) -> None:
    d.wait_metric(
        "ml_prediction_requests_total",
        n,
        timeout=20,
        model_name="m",
        model_version="1",
        status=status,
    )


def test_counts_match_exactly_when_nothing_is_dropped(daemon: DaemonProcess) -> None:
    with Monitor(daemon.socket_path, model="m", version="1") as m:
        for i in range(3000):
            m.record({"x": float(i % 100)}, prediction=float(i % 7), latency_s=0.001)
        for _ in range(7):
            m.record({"x": 1.0}, status="error", latency_s=0.002)
        m.record_batch(predictions=[1.0] * 500, features=[{"x": 2.0}] * 500)
        assert m.flush(10)
        s = m.stats
    assert s.sent == 3507
    assert s.dropped_total == 0
    wait_requests(daemon, "success", 3500)
    wait_requests(daemon, "error", 7)
    assert daemon.stop(timeout=20) == 0


def test_daemon_restarted_mid_stream(
    daemon: DaemonProcess, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    m = Monitor(
        daemon.socket_path, model="m", version="1", buffer_size=200, reconnect_backoff=(0.02, 0.2)
    )
    recorded = 0
    try:
        for _ in range(5):
            for i in range(200):
                recorded += 1
                m.record({"x": float(i)}, prediction=1.0)
            assert m.flush(10)
        wait_requests(daemon, "success", 1000)
        # SIGTERM: the daemon drains what it read, then exits
        assert daemon.stop(timeout=20) == 0
        wait_for(lambda: not m.stats.connected, 10, "the client to notice the daemon leaving")
        sent_before = m.stats.sent
        for i in range(500):  # while nobody listens: 200 buffered, 300 dropped
            recorded += 1
            m.record({"x": float(i)}, prediction=2.0)
        assert m.stats.dropped["not_connected"] == 300
        daemon = daemon_factory(config_path=daemon.config_path)  # the same socket
        assert m.flush(15)
        for _ in range(3):
            for i in range(100):
                recorded += 1
                m.record({"x": float(i)}, prediction=3.0)
            assert m.flush(10)
        s = m.stats
        assert s.reconnects >= 1
        assert s.sent + s.dropped_total == recorded
        assert s.sent - sent_before == 500
        wait_requests(daemon, "success", 500)  # a new process: its counters start at zero
    finally:
        m.close(1)
    assert daemon.stop(timeout=20) == 0
