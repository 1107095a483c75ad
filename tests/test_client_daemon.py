"""sidecar.client against the real daemon (`python -m sidecar.cli run`) over a real socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sidecar.client import Monitor

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Daemon:
    """One `drift-sidecar run` process on a config written for the test."""

    def __init__(self, workdir: Path) -> None:
        self.sock = str(workdir / "events.sock")
        self.port = free_port()
        self.config = workdir / "sidecar.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "socket": {"path": self.sock},
                    "http": {"host": "127.0.0.1", "port": self.port},
                    "state_dir": str(workdir / "state"),
                    "models": [
                        {
                            "name": "m",
                            "version": "1",
                            "baseline": {"capture": 100},
                            "features": [{"name": "x", "type": "numeric"}],
                        }
                    ],
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar.cli", "run", "--config", str(self.config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {err}")
            try:
                self.scrape()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            if os.path.exists(self.sock):
                return

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(20) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def requests(self, status: str) -> float:
        key = (
            "ml_prediction_requests_total",
            (("model_name", "m"), ("model_version", "1"), ("status", status)),
        )
        return self.scrape().get(key, 0.0)

    def wait_requests(self, status: str, n: float, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.requests(status)) != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{status} requests: {got}, expected {n}")
            time.sleep(0.05)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(f"/tmp/dscd-{os.getpid()}-{time.monotonic_ns()}")  # short: AF_UNIX path limit
    d.mkdir()
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=True)


@pytest.fixture
def daemon(workdir: Path) -> Iterator[Daemon]:
    d = Daemon(workdir)
    d.start()
    yield d
    d.stop()


def test_counts_match_exactly_when_nothing_is_dropped(daemon: Daemon) -> None:
    with Monitor(daemon.sock, model="m", version="1") as m:
        for i in range(3000):
            m.record({"x": float(i % 100)}, prediction=float(i % 7), latency_s=0.001)
        for _ in range(7):
            m.record({"x": 1.0}, status="error", latency_s=0.002)
        m.record_batch(predictions=[1.0] * 500, features=[{"x": 2.0}] * 500)
        assert m.flush(10)
        s = m.stats
    assert s.sent == 3507
    assert s.dropped_total == 0
    daemon.wait_requests("success", 3500)
    daemon.wait_requests("error", 7)


def test_daemon_restarted_mid_stream(daemon: Daemon) -> None:
    m = Monitor(daemon.sock, model="m", version="1", buffer_size=200, reconnect_backoff=(0.02, 0.2))
    recorded = 0
    try:
        for _ in range(5):
            for i in range(200):
                recorded += 1
                m.record({"x": float(i)}, prediction=1.0)
            assert m.flush(10)
        daemon.wait_requests("success", 1000)
        daemon.stop()  # SIGTERM: the daemon drains what it read, then exits
        deadline = time.monotonic() + 10
        while m.stats.connected:
            assert time.monotonic() < deadline, "client did not notice the daemon leaving"
            time.sleep(0.01)
        sent_before = m.stats.sent
        for i in range(500):  # while nobody listens: 200 buffered, 300 dropped
            recorded += 1
            m.record({"x": float(i)}, prediction=2.0)
        assert m.stats.dropped["not_connected"] == 300
        daemon.start()
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
        daemon.wait_requests("success", 500)  # a new process: its counters start at zero
    finally:
        m.close(1)
