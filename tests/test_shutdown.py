"""Shutdown loses no acknowledged event: over HTTP, over the socket, during a capture.

An event is acknowledged when POST /v1/events answered 200/202 with it counted in
`accepted`, or (socket) when the daemon counted it as accepted. After SIGTERM and a
restart, every acknowledged event is in the restored state: in the window, or in the
captured baseline.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from harness import DaemonProcess, kill_quietly, wait_for

from sidecar.baseline import write_baseline

DRIFT = {"interval_s": 0.5, "min_samples": 5, "window_size": 1_000_000}


def make_baseline(path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_baseline(
        path,
        "any",
        numeric={"x": rng.normal(0, 1, 500)},
        categorical={},
        prediction=None,
        prediction_kind=None,
    )
    return path


def batch(model: str, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"model": model, "features": {"x": rng.random()}} for _ in range(n)]


def records(log: str, event: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in log.splitlines() if f'"{event}"' in ln]


def window(d: DaemonProcess, model: str) -> float | None:
    return d.scrape().value("ml_drift_window_samples", model_name=model)


def post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url + "/v1/events", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_events_acknowledged_up_to_sigterm_are_all_restored(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "base.parquet")
    d = daemon_factory(
        {
            "models": [
                {
                    "name": "h",
                    "baseline": {"capture": 3_000},
                    "features": [{"name": "x"}],
                    "drift": DRIFT,
                },
                {
                    "name": "s",
                    "baseline": {"path": str(base)},
                    "features": [{"name": "x"}],
                    "drift": DRIFT,
                },
            ],
            "state": {"snapshot_interval_s": 3600},
        }
    )
    acked = {"http": 0, "closed": 0}
    stop = threading.Event()

    def http_sender() -> None:
        seed = 0
        while not stop.is_set():
            seed += 1
            body = "\n".join(json.dumps(e) for e in batch("h", 50, seed)).encode()
            try:
                status, reply = post(d.url, body)
            except OSError:  # the server is gone: nothing more can be acknowledged
                acked["closed"] += 1
                return
            if status in (200, 202):
                acked["http"] += reply["accepted"]
            elif status == 503:
                acked["closed"] += 1
                return
            else:
                raise AssertionError((status, reply))

    def socket_sender() -> None:
        # At most half the window: every event it accepted must still be in the window
        # that is restored, however much faster than HTTP the socket runs on this machine.
        seed, sent = 10**6, 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(d.socket_path)
            while not stop.is_set() and sent < DRIFT["window_size"] // 2:
                seed += 1
                try:
                    s.sendall((json.dumps(batch("s", 50, seed)) + "\n").encode())
                except OSError:
                    return
                sent += 50
            stop.wait()  # the connection stays open until the daemon has stopped

    threads = [threading.Thread(target=http_sender), threading.Thread(target=socket_sender)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: acked["http"] >= 5_000, 60, "traffic on both transports")
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    (stopped,) = records(d.logs(), "stopped")

    d2 = daemon_factory(config_path=d.config_path)
    wait_for(lambda: d2.get("/readyz")[0] == 200, 10, "restored baselines")
    in_h = window(d2, "h") + 3_000  # the captured baseline holds the first 3,000
    in_s = window(d2, "s")
    assert in_h == acked["http"]  # every acknowledged HTTP event, and nothing else
    assert in_h + in_s == stopped["accepted"]  # every accepted event, both transports
    assert in_s > 0


_LAUNCHER = """
import sys, time
from pathlib import Path
import sidecar.baseline
started, release = Path(sys.argv[1]), Path(sys.argv[2])
real = sidecar.baseline.write_baseline
def slow_write(*args, **kwargs):
    started.touch()
    while not release.exists():
        time.sleep(0.01)
    return real(*args, **kwargs)
# sidecar.captures imports write_baseline where a capture completes, so it finds this one
sidecar.baseline.write_baseline = slow_write
from sidecar.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_sigterm_while_a_captured_baseline_is_written_loses_no_window(daemon_factory, tmp_path):
    n = 5_000
    started, release = tmp_path / "write-started", tmp_path / "write-release"
    d = daemon_factory(
        {
            "models": [
                {
                    "name": "c",
                    "baseline": {"capture": n},
                    "features": [{"name": "x"}],
                    "drift": DRIFT,
                }
            ],
            "state": {"snapshot_interval_s": 3600},
        },
        launcher=[sys.executable, "-c", _LAUNCHER, str(started), str(release)],
    )
    config_path = d.config_path
    try:
        body = "\n".join(
            json.dumps(b) for b in [batch("c", 1000, k) for k in range(n // 1000)]
        ).encode()
        assert d.post("/v1/events", body) == (200, {"accepted": n, "rejected": 0, "errors": []})
        wait_for(started.exists, 10, "the capture's write to begin")
        # Events after the capture: they go to the window that the write must not lose.
        status, reply = d.post("/v1/events", json.dumps(batch("c", 700, 99)).encode())
        assert (status, reply["accepted"]) == (200, 700)
        d.proc.send_signal(signal.SIGTERM)
        # Shutdown has begun and waits for the write: HTTP ingest is closed already.
        status, reply = wait_for(
            lambda: (
                (r := d.post("/v1/events", json.dumps(batch("c", 1, 7)).encode()))[0] == 503 and r
            ),
            10,
            "503 while shutting down",
        )
        assert reply == {"error": "shutting down"}
        release.touch()
        assert d.proc.wait(30) == 0
    finally:
        release.touch()
        kill_quietly(d)

    d2 = daemon_factory(config_path=config_path)
    ready = d2.json("/readyz")["models"]["c"]
    assert ready == {"baseline": "ready", "source": "capture"}
    assert window(d2, "c") == 700
    info = d2.scrape().series("drift_sidecar_baseline_info")
    (labels,) = info
    assert dict(labels)["rows"] == str(n)
    root = Path(yaml.safe_load(config_path.read_text())["state_dir"])
    assert (root / "baselines" / "c.parquet").exists()
