"""Reliability and security of the real daemon: restarts, reload, abuse, limits, permissions.

Every test runs the daemon as a subprocess on a temporary config and talks to it over its
real Unix socket and HTTP endpoint; conditions are polled with deadlines, never slept on.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from harness import DaemonProcess, wait_for

from sidecar.baseline import write_baseline

FEATURES = [
    {"name": "amount", "type": "numeric"},
    {"name": "age", "type": "numeric"},
    {"name": "country", "type": "categorical"},
]


def make_baseline(path: Path, seed: int = 0, shift: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    n = 2_000
    write_baseline(
        path,
        "fraud",
        numeric={"amount": rng.normal(shift, 1, n), "age": rng.normal(40, 5, n)},
        categorical={"country": list(rng.choice(["de", "fr", "it"], n))},
        prediction=rng.random(n),
        prediction_kind="numeric",
    )
    return path


def model(baseline: Path, name: str = "fraud", **drift: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0.0",
        "baseline": {"path": str(baseline)},
        "features": FEATURES,
        "prediction": {"type": "numeric"},
        "drift": {"interval_s": 0.2, "min_samples": 20, "window_size": 100_000, **drift},
    }


def event(i: int, model_name: str = "fraud", **over: Any) -> dict[str, Any]:
    rng = random.Random(i)
    ev: dict[str, Any] = {
        "model": model_name,
        "features": {
            "amount": rng.gauss(0.3, 1),
            "age": rng.gauss(41, 5),
            "country": rng.choice(["de", "fr", "it", "es"]),
        },
        "prediction": rng.random(),
        "latency_s": 0.01,
    }
    ev.update(over)
    return ev


def accepted(d: DaemonProcess, model_name: str = "fraud") -> float:
    return d.scrape().value("drift_sidecar_events_accepted_total", model_name=model_name) or 0


def bins(m: Any) -> dict[Any, float]:
    out = {}
    for name in ("ml_feature_bin_events_total", "ml_prediction_bin_events_total"):
        out.update({(name, lab): v for lab, v in m.series(name).items()})
    return out


def restart(daemon_factory: Any, d: DaemonProcess) -> DaemonProcess:
    """The same config file (same socket, port and state_dir) in a fresh process."""
    return daemon_factory(config_path=d.config_path)  # type: ignore[no-any-return]


def log_records(d: DaemonProcess, name: str) -> list[dict[str, Any]]:
    out = []
    for line in d.logs().splitlines():
        if f'"{name}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# ------------------------------------------------------------------------ restarts
def test_sigterm_restart_restores_exactly_the_acknowledged_events(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "fraud.parquet")
    d = daemon_factory({"models": [model(base)], "state": {"snapshot_interval_s": 3600}})
    n = 1_537
    d.send([[event(i) for i in range(k, min(k + 100, n))] for k in range(0, n, 100)])
    d.wait_metric("drift_sidecar_events_accepted_total", n, model_name="fraud")
    before = wait_for(
        lambda: (r := d.json("/v1/drift")["models"]["fraud"]).get("samples") == n and r,
        15,
        "a drift check over every event",
    )
    m0 = d.scrape()
    assert (
        sum(
            v
            for (name, lab), v in bins(m0).items()
            if name == "ml_feature_bin_events_total" and dict(lab)["feature_name"] == "amount"
        )
        == n
    )
    assert d.stop(signal.SIGTERM) == 0

    d2 = restart(daemon_factory, d)
    (restored,) = log_records(d2, "state_restored")
    assert restored["model"] == "fraud" and restored["rows"] == n
    m1 = d2.scrape()
    assert m1.value("ml_drift_window_samples", model_name="fraud") == n
    assert bins(m1) == bins(m0)  # every per-bin counter, exactly
    assert d2.json("/v1/drift")["models"]["fraud"]["window_samples"] == n
    after = wait_for(
        lambda: (r := d2.json("/v1/drift")["models"]["fraud"]).get("samples") == n and r,
        15,
        "a drift check after the restart",
    )
    # The same window gives the same statistics: the restored rows are the sent rows.
    assert after["features"] == before["features"]


def test_sigterm_mid_stream_loses_no_accepted_event(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "fraud.parquet")
    d = daemon_factory({"models": [model(base)], "state": {"snapshot_interval_s": 3600}})
    stop = threading.Event()

    def pump(seed: int) -> None:
        batch = (json.dumps([event(seed * 1000 + i) for i in range(50)]) + "\n").encode()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.socket_path)
            while not stop.is_set():
                try:
                    s.sendall(batch)
                except OSError:
                    return

    threads = [threading.Thread(target=pump, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        seen = wait_for(lambda: (a := accepted(d)) > 5_000 and a, 15, "traffic")
        assert d.stop(signal.SIGTERM) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    (stopped,) = log_records(d, "stopped")
    acknowledged = stopped["accepted"]  # everything read and folded before the exit
    assert acknowledged >= seen
    assert acknowledged < 100_000  # the window (100k) holds all of them

    d2 = restart(daemon_factory, d)
    assert d2.scrape().value("ml_drift_window_samples", model_name="fraud") == acknowledged


def test_kill_9_loses_at_most_one_snapshot_interval(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "fraud.parquet")
    d = daemon_factory({"models": [model(base)], "state": {"snapshot_interval_s": 0.2}})
    d.send([[event(i) for i in range(300)]])
    d.wait_metric("drift_sidecar_events_accepted_total", 300, model_name="fraud")
    done = d.scrape().value("drift_sidecar_state_snapshots_total", result="success") or 0
    # One full snapshot interval after the events were accepted, they are on disk.
    wait_for(
        lambda: (
            (d.scrape().value("drift_sidecar_state_snapshots_total", result="success") or 0)
            >= done + 2
        ),
        10,
        "two more snapshots",
    )
    d.stop(signal.SIGKILL)
    d2 = restart(daemon_factory, d)
    assert d2.scrape().value("ml_drift_window_samples", model_name="fraud") == 300


def test_changed_baseline_discards_the_snapshot(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "fraud.parquet")
    d = daemon_factory({"models": [model(base)]})
    d.send([[event(i) for i in range(200)]])
    d.wait_metric("drift_sidecar_events_accepted_total", 200, model_name="fraud")
    assert d.stop(signal.SIGTERM) == 0
    make_baseline(base, seed=1, shift=2.0)  # same model, new reference data

    d2 = restart(daemon_factory, d)
    (discarded,) = log_records(d2, "state_discarded")
    assert discarded["model"] == "fraud"
    assert discarded["reason"] == "baseline changed since the snapshot"
    assert not log_records(d2, "state_restored")
    m = d2.scrape()
    assert m.value("ml_drift_window_samples", model_name="fraud") == 0
    assert sum(v for (name, _), v in bins(m).items() if name == "ml_feature_bin_events_total") == 0
    d2.send([event(1)])
    d2.wait_metric("drift_sidecar_events_accepted_total", 1, model_name="fraud")


def _flip_bytes(windows: Path, manifest: dict[str, Any]) -> None:
    npz = windows / manifest["arrays"]
    data = bytearray(npz.read_bytes())
    for i in range(100, len(data), 97):
        data[i] ^= 0xFF
    npz.write_bytes(bytes(data))


def _truncate_manifest(windows: Path, manifest: dict[str, Any]) -> None:
    man = windows / "fraud.json"
    man.write_bytes(man.read_bytes()[:40])


def _wrong_shape_valid_checksum(windows: Path, manifest: dict[str, Any]) -> None:
    import hashlib
    import io

    npz = windows / manifest["arrays"]
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["numeric"] = arrays["numeric"][:, :1]  # one column short of the layout
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    npz.write_bytes(buf.getvalue())
    manifest["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (windows / "fraud.json").write_text(json.dumps(manifest))


def _missing_arrays(windows: Path, manifest: dict[str, Any]) -> None:
    (windows / manifest["arrays"]).unlink()


CORRUPTIONS = {
    "flipped bytes": (_flip_bytes, "checksum mismatch"),
    "truncated manifest": (_truncate_manifest, "unreadable"),
    "wrong shape, valid checksum": (_wrong_shape_valid_checksum, "does not fit the model"),
    "missing arrays file": (_missing_arrays, "unreadable"),
}


def test_corrupted_snapshot_is_discarded_and_the_daemon_starts(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "fraud.parquet")
    d = daemon_factory({"models": [model(base)]})
    d.send([[event(i) for i in range(200)]])
    d.wait_metric("drift_sidecar_events_accepted_total", 200, model_name="fraud")
    assert d.stop(signal.SIGTERM) == 0
    windows = Path(yaml.safe_load(d.config_path.read_text())["state_dir"]) / "windows"
    pristine = {p.name: p.read_bytes() for p in windows.iterdir()}

    for what, (corrupt, reason) in CORRUPTIONS.items():
        for p in windows.iterdir():
            p.unlink()
        for name, data in pristine.items():
            (windows / name).write_bytes(data)
        corrupt(windows, json.loads(pristine["fraud.json"]))
        d2 = restart(daemon_factory, d)
        (discarded,) = log_records(d2, "state_discarded")
        assert reason in discarded["reason"], what
        m = d2.scrape()
        assert m.value("ml_drift_window_samples", model_name="fraud") == 0, what
        assert d2.get("/readyz")[0] == 200, what
        d2.stop(signal.SIGKILL)  # no snapshot of its own: the next round starts from pristine


# ------------------------------------------------------------------------ reload
def _rewrite(d: DaemonProcess, change: Any) -> None:
    cfg = yaml.safe_load(d.config_path.read_text())
    change(cfg)
    tmp = d.config_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg) if isinstance(cfg, dict) else cfg)
    tmp.replace(d.config_path)


def _reloads(d: DaemonProcess, result: str) -> float:
    return d.scrape().value("drift_sidecar_config_reloads_total", result=result) or 0


def test_sighup_reload_refuses_bad_config_and_baseline_and_applies_good(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "fraud.parquet")
    d = daemon_factory({"models": [model(base)]})
    d.send([event(i) for i in range(10)])
    d.wait_metric("drift_sidecar_events_accepted_total", 10, model_name="fraud")
    good = d.config_path.read_text()

    # 1. Not a valid config: refused with the key path, the old one keeps serving.
    _rewrite(d, lambda c: c["models"][0].update(window="big", features="x"))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _reloads(d, "failure") == 1, 10, "refused reload")
    (refused,) = log_records(d, "reload_refused")
    assert "models[0].window: unknown key" in refused["error"]
    assert _reloads(d, "success") == 0
    d.send([event(i) for i in range(10, 15)])
    d.wait_metric("drift_sidecar_events_accepted_total", 15, model_name="fraud")

    # 2. Valid, adding a model: applied; the unchanged model keeps its window.
    churn_base = make_baseline(tmp_path / "churn.parquet", seed=3)
    d.config_path.write_text(good)

    def add_churn(c: dict[str, Any]) -> None:
        c["models"].append(model(churn_base, name="churn"))
        c["socket"]["max_line_bytes"] = 2048  # socket limits follow the reload too

    _rewrite(d, add_churn)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _reloads(d, "success") == 1, 10, "applied reload")
    d.send([event(i, model_name="churn") for i in range(7)])
    m = d.wait_metric("drift_sidecar_events_accepted_total", 7, model_name="churn")
    assert m.value("drift_sidecar_events_accepted_total", model_name="fraud") == 15
    assert m.value("ml_drift_window_samples", model_name="fraud") == 15
    d.send([event(0, id="x" * 3000)])
    d.wait_metric("drift_sidecar_events_rejected_total", 1, reason="line_too_long")

    # 3. A broken baseline file: refused, naming the file; the running models keep serving.
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    _rewrite(d, lambda c: c["models"].append(model(broken, name="ghost")))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _reloads(d, "failure") == 2, 10, "refused baseline")
    refusals = log_records(d, "reload_refused")
    assert len(refusals) == 2 and "broken.parquet" in refusals[1]["error"]
    d.send([event(1, model_name="ghost"), event(8, model_name="churn"), event(16)])
    m = d.wait_metric("drift_sidecar_events_accepted_total", 8, model_name="churn")
    assert m.value("drift_sidecar_events_accepted_total", model_name="fraud") == 16
    assert m.value("drift_sidecar_events_rejected_total", reason="unknown_model") == 1
    assert _reloads(d, "success") == 1
    assert d.proc.poll() is None


# ------------------------------------------------------------------------ abuse
BAD_LINES: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b'{"model": "fraud\xc3\x28"}', "invalid_json"),  # truncated UTF-8 sequence
    (b"[" * 5_000, "invalid_json"),  # deeper than any decoder recurses
    (b"\x00\xff\xfe\x01 binary", "invalid_json"),
    (b'{"features": {"amount": 1}}', "missing_field"),
    (b'{"model": 5}', "wrong_type"),
    (b'{"model": "fraud", "features": [1, 2]}', "wrong_type"),
    (b'{"model": "fraud", "features": {"amount": "abc"}}', "wrong_type"),  # not a number
    (b'{"model": "fraud", "confidence": 7}', "out_of_range"),
    (b'{"model": "fraud", "latency_s": -1}', "out_of_range"),
    (b'{"model": "fraud", "latency_s": 1' + b"0" * 5000 + b"}", "out_of_range"),  # huge number
    (b'{"model": "fraud", "status": "maybe"}', "invalid_value"),
    (b'{"model": "fraud", "trace_id": "not-hex"}', "invalid_value"),
]


def _connection_stream(c: int, n_valid: int) -> tuple[bytes, dict[str, int], int]:
    """One connection's bytes: valid events with every kind of bad line between them."""
    rng = random.Random(c)
    lines: list[bytes] = []
    reasons: dict[str, int] = {}
    valid = 0

    def bad(line: bytes, reason: str, n: int = 1) -> None:
        lines.append(line)
        reasons[reason] = reasons.get(reason, 0) + n

    for line, reason in BAD_LINES:
        bad(line, reason)
    bad(json.dumps({"model": f"ghost-{c}", "features": {"x": 1}}).encode(), "unknown_model")
    bad(json.dumps([event(i) for i in range(51)]).encode(), "batch_too_large")  # limit 50
    bad(
        json.dumps(event(0, features={f"junk_{c}_{k}": k for k in range(17)})).encode(),
        "too_many_features",
    )  # limit 16
    bad(b'{"model": "fraud", "id": "' + b"x" * 20_000 + b'"}', "line_too_long")  # limit 16k
    # A batch with one bad event: the others of the batch still count.
    lines.append(json.dumps([event(1), {"model": f"ghost-{c}-b"}, event(2)]).encode())
    reasons["unknown_model"] += 1
    valid += 2
    # Valid, although odd: junk feature names, NaN/Infinity tokens, duplicate keys.
    lines.append(json.dumps(event(3, features={"amount": 1, f"junk_{c}": 2})).encode())
    lines.append(b'{"model": "fraud", "features": {"amount": NaN, "age": -Infinity}}')
    lines.append(b'{"model": "ghost", "model": "fraud"}')
    valid += 3
    while valid < n_valid:
        k = rng.randint(1, 5)
        lines.append(json.dumps([event(c * 10_000 + valid + i) for i in range(k)]).encode())
        valid += k
    rng.shuffle(lines)
    return b"\n".join(lines) + b"\n", reasons, valid


def test_bad_input_on_20_connections_is_counted_exactly(daemon_factory):
    d = daemon_factory(
        {
            "models": [
                {
                    "name": "fraud",
                    "version": "1.0.0",
                    "baseline": {"capture": 100_000},
                    "features": FEATURES,
                    "prediction": {"type": "numeric"},
                }
            ],
            "socket": {
                "max_line_bytes": 16_384,
                "max_batch_events": 50,
                "max_features_per_event": 16,
            },
        }
    )
    streams = [_connection_stream(c, 200) for c in range(20)]
    barrier = threading.Barrier(len(streams))
    errors: list[BaseException] = []

    def client(c: int) -> None:
        data = streams[c][0]
        rng = random.Random(1000 + c)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(d.socket_path)
                barrier.wait(10)
                pos = 0
                while pos < len(data):  # random write sizes split lines anywhere
                    step = rng.randint(1, 3_000)
                    s.sendall(data[pos : pos + step])
                    pos += step
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors

    total_valid = sum(v for _, _, v in streams)
    expected: dict[str, int] = {}
    for _, reasons, _ in streams:
        for r, n in reasons.items():
            expected[r] = expected.get(r, 0) + n
    m = d.wait_metric("drift_sidecar_events_accepted_total", total_valid, model_name="fraud")
    rejected = {
        dict(lab)["reason"]: v
        for lab, v in m.series("drift_sidecar_events_rejected_total").items()
        if v
    }
    assert rejected == expected
    assert m.value("drift_sidecar_events_received_total", transport="socket") == (
        total_valid + sum(expected.values())
    )
    assert (
        m.value(
            "ml_prediction_requests_total",
            model_name="fraud",
            model_version="1.0.0",
            status="success",
        )
        == total_valid
    )
    assert m.value("drift_sidecar_unknown_features_total", model_name="fraud") == 20
    # No label value came from junk: the whole exposition is free of it.
    assert "junk" not in m.text and "ghost" not in m.text
    assert {dict(lab).get("model_name") for lab in m.series("ml_feature_missing_total")} == {
        "fraud"
    }
    assert {dict(lab)["feature_name"] for lab in m.series("ml_feature_missing_total")} == {
        "amount",
        "age",
        "country",
    }
    # Healthy afterwards.
    assert d.get("/healthz")[0] == 200
    assert d.proc.poll() is None
    d.send([event(99)])
    d.wait_metric("drift_sidecar_events_accepted_total", total_valid + 1, model_name="fraud")
    print(f"\nbarrage: accepted={total_valid} rejected={dict(sorted(expected.items()))}")


def test_connections_over_the_cap_are_closed_and_counted(daemon_factory):
    d = daemon_factory(
        {
            "models": [{"name": "fraud", "baseline": {"capture": 1000}, "features": FEATURES}],
            "socket": {"max_connections": 4},
        }
    )
    held = []
    try:
        for i in range(4):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.socket_path)
            s.sendall((json.dumps(event(i)) + "\n").encode())
            held.append(s)
        d.wait_metric("drift_sidecar_events_accepted_total", 4, model_name="fraud")
        assert d.scrape().value("drift_sidecar_connections") == 4
        for _ in range(3):
            with socket.socket(socket.AF_UNIX) as extra:
                extra.connect(d.socket_path)  # the kernel accepts; the daemon closes at once
                extra.settimeout(10)
                with contextlib.suppress(ConnectionResetError):
                    assert extra.recv(1) == b""
        m = d.wait_metric("drift_sidecar_connections_refused_total", 3)
        assert m.value("drift_sidecar_connections") == 4
        for i, s in enumerate(held):  # the admitted ones are untouched
            s.sendall((json.dumps(event(10 + i)) + "\n").encode())
        d.wait_metric("drift_sidecar_events_accepted_total", 8, model_name="fraud")
        held.pop().close()
        d.wait_metric("drift_sidecar_connections", 3)
        d.send([event(20)])  # a freed slot admits a new connection
        d.wait_metric("drift_sidecar_events_accepted_total", 9, model_name="fraud")
        assert d.scrape().value("drift_sidecar_connections_refused_total") == 3
    finally:
        for s in held:
            s.close()


READ_CHUNK = 256 * 1024  # asyncio's largest single socket read


def test_tiny_queue_pauses_readers_and_loses_nothing(daemon_factory):
    queue_max = 1024
    max_line = 8192
    d = daemon_factory(
        {
            "models": [{"name": "fraud", "baseline": {"capture": 1_000_000}, "features": FEATURES}],
            "socket": {"queue_max_bytes": queue_max, "max_line_bytes": max_line},
        }
    )
    n_conns, per_conn = 4, 25_000
    stop = threading.Event()
    peak = [0.0]

    def sample() -> None:
        while not stop.is_set():
            v = d.scrape().value("drift_sidecar_queue_bytes") or 0
            peak[0] = max(peak[0], v)

    def blast(c: int) -> None:
        data = b"".join(
            (json.dumps([event(c * per_conn + i + k) for k in range(20)]) + "\n").encode()
            for i in range(0, per_conn, 20)
        )
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.socket_path)
            s.sendall(data)

    sampler = threading.Thread(target=sample)
    sampler.start()
    blasters = [threading.Thread(target=blast, args=(c,)) for c in range(n_conns)]
    try:
        for t in blasters:
            t.start()
        for t in blasters:
            t.join(60)
        m = d.wait_metric(
            "drift_sidecar_events_accepted_total",
            n_conns * per_conn,
            timeout=60,
            model_name="fraud",
        )
    finally:
        stop.set()
        sampler.join(10)
    # A reader pauses after the read that fills the queue: each connection can add at
    # most one read (plus a partial line) past the bound, never more.
    print(f"\nqueue peak sampled: {peak[0]:.0f} bytes")
    assert peak[0] <= queue_max + n_conns * (READ_CHUNK + max_line)
    assert m.value("drift_sidecar_events_dropped_total") in (None, 0)
    assert not any(m.series("drift_sidecar_events_rejected_total").values())
    assert m.value("drift_sidecar_queue_bytes") == 0


# ------------------------------------------------------------------------ stalled check
# The daemon, unchanged, except that each drift check first waits for a file to appear:
# a check that takes as long as the test wants, without a hook in the product.
_STALL_LAUNCHER = """
import sys, time
from pathlib import Path
import sidecar.daemon
real = sidecar.daemon.check_model
started, release = Path(sys.argv[1]), Path(sys.argv[2])
def stalled(*args, **kwargs):
    started.touch()
    while not release.exists():
        time.sleep(0.01)
    return real(*args, **kwargs)
sidecar.daemon.check_model = stalled
from sidecar.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_a_stalled_drift_check_stalls_neither_ingest_nor_scrapes(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "fraud.parquet")
    started, release = tmp_path / "check-started", tmp_path / "check-release"
    d = daemon_factory(
        {"models": [model(base, interval_s=0.05)]},
        launcher=[sys.executable, "-c", _STALL_LAUNCHER, str(started), str(release)],
    )
    try:
        d.send([[event(i) for i in range(50)]])
        wait_for(started.exists, 10, "a drift check to start")
        t_stall = time.monotonic()
        # While the check hangs: ingest and scrapes go on, and each scrape is quick.
        latencies = []
        for k in range(1, 21):
            d.send([[event(1000 * k + i) for i in range(10)]])
            t0 = time.monotonic()
            m = d.scrape()
            latencies.append(time.monotonic() - t0)
            wait_for(lambda k=k: accepted(d) == 50 + 10 * k, 5, f"batch {k} counted")
        assert max(latencies) < 1.0, latencies
        assert d.get("/healthz")[0] == 200
        assert m.value("drift_sidecar_drift_check_duration_seconds_count", model_name="fraud") in (
            None,
            0,
        )  # the check is still stalled
        assert d.json("/v1/drift")["models"]["fraud"]["window_samples"] == 250
        stalled_for = time.monotonic() - t_stall
        release.touch()
        m = wait_for(
            lambda: (
                (m := d.scrape()).value(
                    "drift_sidecar_drift_check_duration_seconds_count", model_name="fraud"
                )
                and m
            ),
            10,
            "the check to finish",
        )
        assert (
            m.value("drift_sidecar_drift_check_duration_seconds_sum", model_name="fraud")
            >= stalled_for
        )
        assert d.stop(signal.SIGTERM) == 0
    finally:
        release.touch()


# ------------------------------------------------------------------------ permissions
def test_socket_mode_and_parent_directory_permissions(daemon_factory):
    d = daemon_factory({"auto_register": {"enabled": True}})
    st = os.stat(d.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    parent = stat.S_IMODE(os.stat(Path(d.socket_path).parent).st_mode)
    assert parent == 0o750  # exactly, whatever the umask (tests/test_socket_ownership.py)

    d2 = daemon_factory({"socket": {"mode": "0o600"}, "auto_register": {"enabled": True}})
    assert stat.S_IMODE(os.stat(d2.socket_path).st_mode) == 0o600
    assert d2.json("/healthz")["status"] == "ok"
    # HTTP on loopback only unless asked: the default config says so.
    from sidecar.config import Config

    assert Config().http.host == "127.0.0.1"
