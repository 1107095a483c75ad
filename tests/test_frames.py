"""Columnar frames (Arrow IPC streams) against the real daemon, over real sockets and HTTP.

The equivalence test sends the same events, bad ones included, as JSON lines to one
daemon and as Arrow record batches to another, and requires identical /metrics samples
and identical /v1/drift results.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from harness import DaemonProcess, Metrics, wait_for

from sidecar.frames import CONTENT_TYPE, MARKER

MODELS: list[dict[str, Any]] = [
    {
        "name": "m",
        "version": "v1",
        "features": [
            {"name": "x"},
            {"name": "y"},
            {"name": "c", "type": "categorical"},
        ],
        "prediction": {"type": "categorical"},
        "baseline": {"capture": 300},
        "drift": {"interval_s": 0.2, "min_samples": 50, "window_size": 2000, "max_age_s": 86400},
    },
    {
        "name": "r",
        "features": [{"name": "a"}],
        "prediction": {"type": "numeric"},
        "embedding": {"dim": 8, "device": "numpy", "features": 64},
        "baseline": {"capture": 200},
        "drift": {"interval_s": 0.2, "min_samples": 50, "window_size": 2000, "max_age_s": 86400},
    },
    {
        # numeric predictions that are class indices, scores or absent, with probabilities:
        # each row's class (index, argmax or "none") and the order in which classes take
        # the few codes `max_classes` allows must not depend on the transport
        "name": "s",
        "features": [{"name": "a"}],
        "prediction": {"type": "numeric"},
        "max_classes": 3,
        "baseline": {"capture": 100},
        "drift": {"interval_s": 0.2, "min_samples": 50, "window_size": 2000},
    },
]


def stream(batches: list[pa.RecordBatch], metadata: dict[str, str] | None) -> bytes:
    schema = batches[0].schema.with_metadata(metadata) if metadata else batches[0].schema
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema) as w:
        for b in batches:
            w.write_batch(b.replace_schema_metadata(metadata))
    return sink.getvalue()


def send_bytes(d: DaemonProcess, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(d.socket_path)
        s.sendall(data)


def post(d: DaemonProcess, body: bytes, content_type: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        d.url + "/v1/events", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def counter(m: Metrics, name: str, **labels: str) -> float:
    return m.value(name, **labels) or 0.0


def received(d: DaemonProcess) -> float:
    m = d.scrape()
    return counter(m, "drift_sidecar_events_received_total", transport="socket") + counter(
        m, "drift_sidecar_events_received_total", transport="http"
    )


# ------------------------------------------------------------------ the events


def model_m_columns(rng: np.random.Generator, n: int, bad: bool) -> dict[str, list[Any]]:
    """Columns of events for model m; with `bad`, some rows break one rule each."""
    x: list[Any] = rng.normal(0, 1, n).tolist()
    y: list[Any] = [str(v) for v in rng.normal(5, 2, n).round(3)]  # numeric strings
    c: list[Any] = rng.choice(["red", "green", "blue", "teal"], n).tolist()
    pred: list[Any] = rng.choice(["cat", "dog", "eel"], n).tolist()
    probs: list[Any] = [list(p) for p in rng.dirichlet([1, 1, 1], n).round(4)]
    conf: list[Any] = [None] * n
    lat: list[Any] = rng.exponential(0.05, n).tolist()
    status: list[Any] = rng.choice(["success", "error", None], n, p=[0.8, 0.1, 0.1]).tolist()
    tid: list[Any] = [format(int(v), "032x") for v in rng.integers(1, 2**62, n)]
    ids: list[Any] = [f"req-{i}" for i in range(n)]
    ts: list[Any] = (1.7e9 + np.arange(n)).tolist()
    for i in range(0, n, 17):
        x[i] = None
    for i in range(3, n, 23):
        pred[i] = None
    for i in range(5, n, 29):
        conf[i] = float(rng.uniform())
    if bad:
        conf[1] = 1.5  # out_of_range
        lat[2] = -1.0  # out_of_range
        status[4] = "maybe"  # invalid_value
        tid[6] = "not-hex"  # invalid_value
        y[8] = "abc"  # wrong_type (the tracker's check)
        probs[10] = [0.5, None, 0.5]  # wrong_type
        x[12] = 1e200  # out_of_range
        y[14] = "1e300"  # out_of_range, from a numeric string
        c[16] = None
        probs[18] = []
        x[20] = float("nan")  # missing
    return {
        "x": x,
        "y": y,
        "c": c,
        "prediction": pred,
        "probabilities": probs,
        "confidence": conf,
        "latency_s": lat,
        "status": status,
        "trace_id": tid,
        "id": ids,
        "ts": ts,
    }


def model_m_batch(cols: dict[str, list[Any]]) -> pa.RecordBatch:
    feats = pa.StructArray.from_arrays(
        [
            pa.array(cols["x"], pa.float64()),
            pa.array(cols["y"], pa.string()),
            pa.array(cols["c"], pa.string()),
        ],
        names=["x", "y", "c"],
    )
    return pa.record_batch(
        {
            "features": feats,
            "prediction": pa.array(cols["prediction"], pa.string()),
            "probabilities": pa.array(cols["probabilities"], pa.list_(pa.float64())),
            "confidence": pa.array(cols["confidence"], pa.float64()),
            "latency_s": pa.array(cols["latency_s"], pa.float64()),
            "status": pa.array(cols["status"], pa.string()),
            "trace_id": pa.array(cols["trace_id"], pa.string()),
            "id": pa.array(cols["id"], pa.string()),
            "ts": pa.array(cols["ts"], pa.float64()),
        }
    )


def model_m_json(cols: dict[str, list[Any]], version: str | None = None) -> list[dict[str, Any]]:
    """The same rows as JSON events: a null cell is an absent field, a NaN a null."""
    out = []
    for i in range(len(cols["id"])):
        ev: dict[str, Any] = {"model": "m"}
        if version is not None:
            ev["version"] = version
        ev["features"] = {k: _json_value(cols[k][i]) for k in ("x", "y", "c")}
        for k in ("prediction", "probabilities", "confidence", "latency_s", "status"):
            if cols[k][i] is not None:
                ev[k] = cols[k][i]
        for k in ("trace_id", "id", "ts"):
            if cols[k][i] is not None:
                ev[k] = cols[k][i]
        out.append(ev)
    return out


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def model_r(rng: np.random.Generator, n: int, bad: bool) -> tuple[pa.RecordBatch, list[Any]]:
    a = rng.normal(0, 1, n)
    pred = rng.normal(10, 3, n)
    emb = rng.normal(0, 1, (n, 8)).astype(np.float32)
    if bad:
        emb[3, 2] = np.nan  # invalid_value, as the JSON null that json.dumps's NaN becomes
    arr = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 8)
    feats = pa.StructArray.from_arrays([pa.array(a)], names=["a"])
    batch = pa.record_batch({"features": feats, "prediction": pa.array(pred), "embedding": arr})
    events = []
    for i in range(n):
        ev: dict[str, Any] = {
            "model": "r",
            "features": {"a": float(a[i])},
            "prediction": float(pred[i]),
            "embedding": [float(v) for v in emb[i]],
        }
        events.append(ev)
    return batch, events


def model_s(rng: np.random.Generator, n: int) -> tuple[pa.RecordBatch, list[Any]]:
    a = rng.normal(0, 1, n)
    pred = rng.choice([0.0, 1.0, 2.0, 3.0, 7.0, 0.37, 1.5, math.nan], n)
    probs = rng.dirichlet([1, 1, 1, 1], n).round(4)
    has_probs = rng.random(n) < 0.7
    batch = pa.record_batch(
        {
            "features": pa.StructArray.from_arrays([pa.array(a)], names=["a"]),
            "prediction": pa.array(pred),
            "probabilities": pa.array(
                [list(p) if h else None for p, h in zip(probs, has_probs, strict=True)],
                pa.list_(pa.float64()),
            ),
        }
    )
    events = []
    for i in range(n):
        ev: dict[str, Any] = {"model": "s", "features": {"a": float(a[i])}}
        if not math.isnan(pred[i]):
            ev["prediction"] = float(pred[i])
        if has_probs[i]:
            ev["probabilities"] = [float(v) for v in probs[i]]
        events.append(ev)
    return batch, events


# ------------------------------------------------------------------ tests


def test_frames_and_json_give_identical_metrics_and_drift(daemon_factory):
    as_json = daemon_factory({"models": MODELS})
    as_frames = daemon_factory({"models": MODELS})
    rng = np.random.default_rng(7)
    json_lines: list[bytes] = []
    frame_streams: list[bytes] = []
    for k in range(4):
        cols = model_m_columns(rng, 400, bad=k % 2 == 1)
        json_lines.append(json.dumps(model_m_json(cols, "v1")).encode() + b"\n")
        frame_streams.append(stream([model_m_batch(cols)], {"model": "m", "version": "v1"}))
        batch, events = model_r(rng, 300, bad=k == 2)
        json_lines.append(json.dumps(events).encode() + b"\n")
        frame_streams.append(stream([batch], {"model": "r"}))
        batch, events = model_s(rng, 100)
        json_lines.append(json.dumps(events).encode() + b"\n")
        frame_streams.append(stream([batch], {"model": "s"}))
    # rows of a model nobody configured, rejected alike
    cols = model_m_columns(rng, 10, bad=False)
    other = [dict(ev, model="zzz") for ev in model_m_json(cols)]
    json_lines.append(json.dumps(other).encode() + b"\n")
    frame_streams.append(stream([model_m_batch(cols)], {"model": "zzz"}))

    # One connection each, and each counted before the next: the order of events (which
    # the capture and the vocabularies see) is then the same on both daemons.
    sizes = [400, 300, 100] * 4 + [10]
    total = 0
    for line, data, size in zip(json_lines, frame_streams, sizes, strict=True):
        total += size
        send_bytes(as_json, line)
        send_bytes(as_frames, data)
        for d in (as_json, as_frames):
            wait_for(lambda d=d, t=total: received(d) == t, what=f"{total} events received")
    t_done = time.time()

    def checked_after(d: DaemonProcess) -> bool:
        m = d.scrape()
        return all(
            (m.value("ml_drift_last_check_timestamp_seconds", model_name=name) or 0) > t_done
            for name in ("m", "r", "s")
        )

    wait_for(lambda: checked_after(as_json) and checked_after(as_frames), what="a check after")
    a, b = comparable(as_json.scrape()), comparable(as_frames.scrape())
    assert a.keys() == b.keys()
    diff = {k: (a[k], b[k]) for k in a if not _same(a[k], b[k])}
    assert not diff
    rejected = {
        dict(k[1]).get("reason"): v
        for k, v in a.items()
        if k[0] == "drift_sidecar_events_rejected_total" and v
    }
    assert rejected == {
        "out_of_range": 8,
        "invalid_value": 5,  # 2 x status, 2 x trace_id, 1 x embedding
        "wrong_type": 4,
        "unknown_model": 10,
    }
    assert drift_body(as_json) == drift_body(as_frames)
    classes = {
        dict(k[1])["predicted_class"]
        for k in a
        if k[0] == "ml_prediction_confidence_count" and dict(k[1]).get("model_name") == "s"
    }
    assert "__other__" in classes  # the cap was reached: which classes kept a code mattered


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def comparable(m: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples that depend on the events alone (not on timing or the process)."""
    keep = ("ml_", "drift_sidecar_events_", "drift_sidecar_unknown_features")
    skip = ("ml_drift_last_check_timestamp", "ml_gpu_")
    return {
        (name, labels): v
        for (name, labels), v in m.samples.items()
        if name.startswith(keep)
        and not name.startswith(skip)
        and not name.startswith("drift_sidecar_events_received")
    } | {
        ("received", frozenset()): sum(
            v for (name, _), v in m.samples.items() if name == "drift_sidecar_events_received_total"
        )
    }


TIMING = ("duration_s", "checked_at", "timestamp", "last_check", "time")


def drift_body(d: DaemonProcess) -> Any:
    body = d.json("/v1/drift")

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in TIMING}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(body)


def _auto_daemon(daemon_factory: Any, **socket: Any) -> DaemonProcess:
    return daemon_factory(
        {"auto_register": {"enabled": True}, "socket": socket}
        if socket
        else {"auto_register": {"enabled": True}}
    )


def _numeric_batch(n: int, seed: int = 0) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    feats = pa.StructArray.from_arrays(
        [pa.array(rng.normal(size=n)), pa.array(rng.normal(size=n))], names=["f0", "f1"]
    )
    return pa.record_batch({"features": feats, "prediction": pa.array(rng.normal(size=n))})


def accepted(d: DaemonProcess, model: str) -> float:
    return counter(d.scrape(), "drift_sidecar_events_accepted_total", model_name=model)


def test_frames_and_json_interleaved_on_separate_connections(daemon_factory):
    d = _auto_daemon(daemon_factory)
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.socket_path)
        socks.append(s)
    frames_sock, json_sock = socks
    data = stream([_numeric_batch(100, i) for i in range(3)], {"model": "fm"})
    half = len(data) // 2
    frames_sock.sendall(data[:half])
    json_sock.sendall(
        json.dumps([{"model": "jm", "features": {"f0": 1.0}} for _ in range(50)]).encode() + b"\n"
    )
    frames_sock.sendall(data[half:])
    json_sock.sendall(json.dumps({"model": "jm", "features": {"f0": 2.0}}).encode() + b"\n")
    for s in socks:
        s.close()
    wait_for(lambda: accepted(d, "fm") == 300 and accepted(d, "jm") == 51, what="both counted")
    m = d.scrape()
    assert counter(m, "drift_sidecar_events_rejected_total", reason="invalid_json") == 0
    assert all(
        counter(m, "drift_sidecar_frame_errors_total", reason=r) == 0
        for r in ("malformed", "truncated")
    )


def test_bad_column_types_are_rejected_not_cast(daemon_factory):
    d = _auto_daemon(daemon_factory)
    n = 10
    good = _numeric_batch(n)
    send_bytes(d, stream([good], {"model": "fm"}))  # registers fm
    wait_for(lambda: accepted(d, "fm") == n, what="registered")
    cases = {
        # a numeric string column where a number is required: not cast
        "confidence": pa.array(["0.5"] * n),
        "latency_s": pa.array([True] * n),
        "status": pa.array([1] * n),
        "id": pa.array([7] * n),
        "prediction": pa.array([True] * n),
        "probabilities": pa.array(["0.1"] * n),
        "embedding": pa.array([1.0] * n),
    }
    for name, arr in cases.items():
        at = good.schema.get_field_index(name)
        b = good.set_column(at, name, arr) if at >= 0 else good.append_column(name, arr)
        send_bytes(d, stream([b], {"model": "fm"}))
    nested = pa.StructArray.from_arrays([pa.array([[1.0]] * n)], names=["f0"])
    send_bytes(d, stream([pa.record_batch({"features": nested})], {"model": "fm"}))
    total = n * (len(cases) + 1)
    wait_for(
        lambda: (
            counter(d.scrape(), "drift_sidecar_events_rejected_total", reason="wrong_type") == total
        ),
        what="every row of every bad column rejected as wrong_type",
    )
    assert accepted(d, "fm") == n


def test_null_cells_of_a_bad_column_are_absent_fields(daemon_factory):
    d = _auto_daemon(daemon_factory)
    b = _numeric_batch(4).append_column("confidence", pa.array(["0.5", None, None, "x"]))
    send_bytes(d, stream([b], {"model": "fm"}))
    wait_for(lambda: accepted(d, "fm") == 2, what="the null rows accepted")
    assert counter(d.scrape(), "drift_sidecar_events_rejected_total", reason="wrong_type") == 2


def test_bad_rows_are_rejected_alone_with_the_json_reasons(daemon_factory):
    d = _auto_daemon(daemon_factory)
    n = 8
    b = _numeric_batch(n).append_column(
        "confidence", pa.array([0.1, 1.5, None, 0.2, -0.1, 0.3, float("nan"), 0.4])
    )
    b = b.append_column(
        "status", pa.array(["success", "error", "bogus", None, "success", "x", None, "error"])
    )
    send_bytes(d, stream([b], {"model": "fm"}))
    # rows 1 and 4: out_of_range (confidence); rows 2 and 5: invalid_value (status)
    wait_for(lambda: accepted(d, "fm") == 4, what="the good rows accepted")
    m = d.scrape()
    assert counter(m, "drift_sidecar_events_rejected_total", reason="out_of_range") == 2
    assert counter(m, "drift_sidecar_events_rejected_total", reason="invalid_value") == 2
    assert (
        m.value("ml_prediction_requests_total", model_name="fm", model_version="", status="error")
        == 1
    )


def test_missing_model_metadata_rejects_every_row(daemon_factory):
    d = _auto_daemon(daemon_factory)
    send_bytes(d, stream([_numeric_batch(7), _numeric_batch(5)], None))
    wait_for(
        lambda: (
            counter(d.scrape(), "drift_sidecar_events_rejected_total", reason="missing_field") == 12
        ),
        what="missing_field for every row",
    )
    assert received(d) == 12


def test_unknown_columns_reject_their_rows(daemon_factory):
    d = _auto_daemon(daemon_factory)
    b = _numeric_batch(3).append_column("stages", pa.array([1.0, 2.0, 3.0]))
    send_bytes(d, stream([b], {"model": "fm"}))
    wait_for(
        lambda: (
            counter(d.scrape(), "drift_sidecar_events_rejected_total", reason="invalid_value") == 3
        ),
        what="invalid_value for the rows",
    )


def test_a_stream_cut_mid_batch_loses_only_that_batch(daemon_factory):
    d = _auto_daemon(daemon_factory)
    data = stream([_numeric_batch(10, i) for i in range(3)], {"model": "fm"})
    cut = len(data) - 8 - 40  # inside the third batch (before the end-of-stream marker)
    send_bytes(d, data[:cut])
    wait_for(
        lambda: counter(d.scrape(), "drift_sidecar_frame_errors_total", reason="truncated") == 1,
        what="the truncated stream counted",
    )
    assert accepted(d, "fm") == 20
    # the daemon goes on: another connection is read as before
    send_bytes(d, data)
    wait_for(lambda: accepted(d, "fm") == 50, what="the next stream read")


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (MARKER + b"\x10\x00\x00\x00" + b"\x00" * 16, "malformed"),
        (MARKER + b"\xff\xff\xff\x7f", "too_large"),
        (MARKER + b"\x08\x00\x00\x00" + b"\xff" * 8, "malformed"),
    ],
)
def test_malformed_streams_close_only_their_connection(daemon_factory, garbage, reason):
    d = _auto_daemon(daemon_factory)
    good = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    good.connect(d.socket_path)
    good.sendall(json.dumps({"model": "jm", "features": {"f": 1.0}}).encode() + b"\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
        bad.connect(d.socket_path)
        bad.sendall(garbage)
        bad.settimeout(10)
        assert bad.recv(10) == b""  # closed by the daemon
    good.sendall(json.dumps({"model": "jm", "features": {"f": 2.0}}).encode() + b"\n")
    good.close()
    wait_for(lambda: accepted(d, "jm") == 2, what="the other connection unaffected")
    assert counter(d.scrape(), "drift_sidecar_frame_errors_total", reason=reason) == 1


def test_a_second_schema_closes_the_stream(daemon_factory):
    d = _auto_daemon(daemon_factory)
    first = stream([_numeric_batch(5)], {"model": "fm"})
    second = stream([_numeric_batch(6)], {"model": "fm"})
    send_bytes(d, first[:-8] + second)  # no end-of-stream marker, then a new schema
    wait_for(
        lambda: (
            counter(d.scrape(), "drift_sidecar_frame_errors_total", reason="schema_change") == 1
        ),
        what="schema_change counted",
    )
    assert accepted(d, "fm") == 5


def test_frames_refused_when_switched_off(daemon_factory):
    d = _auto_daemon(daemon_factory, arrow_enabled=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(d.socket_path)
        s.sendall(stream([_numeric_batch(5)], {"model": "fm"}))
        s.settimeout(10)
        with contextlib.suppress(ConnectionResetError):  # closed, either way
            assert s.recv(10) == b""
    wait_for(
        lambda: counter(d.scrape(), "drift_sidecar_frame_errors_total", reason="refused") == 1,
        what="refused counted",
    )
    assert received(d) == 0
    status, body = post(d, stream([_numeric_batch(5)], {"model": "fm"}), CONTENT_TYPE)
    assert status == 415, body


def test_post_events_takes_an_arrow_stream(daemon_factory):
    d = _auto_daemon(daemon_factory)
    b = _numeric_batch(6).append_column("confidence", pa.array([0.1, 2.0, 0.3, 0.4, 0.5, 0.6]))
    status, body = post(d, stream([b, b], {"model": "fm"}), CONTENT_TYPE)
    assert status == 202, body
    assert body["accepted"] == 10 and body["rejected"] == 2
    assert {e["reason"] for e in body["errors"]} == {"out_of_range"}
    m = d.scrape()
    assert counter(m, "drift_sidecar_events_received_total", transport="http") == 12
    status, body = post(d, stream([b], {"model": "fm"})[:-30], CONTENT_TYPE)
    assert status == 400 and body["stream_error"]["reason"] == "truncated", body
    status, body = post(d, MARKER + b"\x08\x00\x00\x00" + b"\xff" * 8, CONTENT_TYPE)
    assert status == 400 and body["stream_error"]["reason"] == "malformed", body
    assert accepted(d, "fm") == 10
    # labels are JSON only: an Arrow body on /v1/labels is refused, and nothing is counted
    req = urllib.request.Request(
        d.url + "/v1/labels",
        data=stream([b], {"model": "fm"}),
        method="POST",
        headers={"Content-Type": CONTENT_TYPE},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 415
    assert "JSON" in json.loads(refused.value.read())["error"]
    assert accepted(d, "fm") == 10


READ_CHUNK = 256 * 1024  # asyncio's largest single socket read


def test_frames_share_the_bounded_queue_and_lose_nothing(daemon_factory):
    queue_max = 4096
    d = daemon_factory(
        {"auto_register": {"enabled": True}, "socket": {"queue_max_bytes": queue_max}}
    )
    n_conns, batches, rows = 3, 60, 500
    one = stream([_numeric_batch(rows)], {"model": "fm"})
    message = len(one)  # more than one message's bytes: a bound on each of them
    stop = threading.Event()
    peak = [0.0]

    def sample() -> None:
        while not stop.is_set():
            v = d.scrape().value("drift_sidecar_queue_bytes") or 0
            peak[0] = max(peak[0], v)

    def blast(c: int) -> None:
        send_bytes(
            d, stream([_numeric_batch(rows, c * 1000 + i) for i in range(batches)], {"model": "fm"})
        )

    sampler = threading.Thread(target=sample)
    sampler.start()
    blasters = [threading.Thread(target=blast, args=(c,)) for c in range(n_conns)]
    try:
        for t in blasters:
            t.start()
        for t in blasters:
            t.join(60)
        total = n_conns * batches * rows
        wait_for(lambda: accepted(d, "fm") == total, 60, what="every row accepted")
    finally:
        stop.set()
        sampler.join(10)
    # A reader pauses after the read that fills the queue: each connection adds at most
    # the messages one read completes (one read, plus the message it finishes) past it.
    assert 0 < peak[0] <= queue_max + n_conns * (READ_CHUNK + message)
    m = d.scrape()
    assert m.value("drift_sidecar_queue_bytes") == 0
    assert not any(m.series("drift_sidecar_frame_errors_total").values())


def test_a_plain_pyarrow_writer_on_the_socket(daemon_factory):
    """The example of docs/operations.md: any Arrow IPC writer, no client library."""
    d = _auto_daemon(daemon_factory)
    batch = _numeric_batch(40)
    schema = batch.schema.with_metadata({"model": "fraud", "version": "1.0.0"})
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(d.socket_path)
        with s.makefile("wb") as f, pa.ipc.new_stream(f, schema) as w:
            w.write_batch(batch)
            w.write_batch(batch)
    wait_for(lambda: accepted(d, "fraud") == 80, what="both batches accepted")
    m = d.scrape()
    assert (
        m.value(
            "ml_prediction_requests_total",
            model_name="fraud",
            model_version="1.0.0",
            status="success",
        )
        == 80
    )


def test_dictionary_encoded_columns_are_rejected_not_decoded(daemon_factory):
    d = _auto_daemon(daemon_factory)
    b = _numeric_batch(4)
    pred = pa.array(["a", None, "b", None]).dictionary_encode()
    b = b.set_column(b.schema.get_field_index("prediction"), "prediction", pred)
    feats = pa.StructArray.from_arrays(
        [pa.array([1.0, 2.0, 3.0, 4.0]), pa.array(["x", "y", None, None]).dictionary_encode()],
        names=["f0", "c"],
    )
    b = b.set_column(b.schema.get_field_index("features"), "features", feats)
    send_bytes(d, stream([b, b], {"model": "fm"}))
    # rows 0 and 2 have a prediction, rows 0 and 1 a category: rows 0, 1, 2 are rejected
    wait_for(lambda: accepted(d, "fm") == 2, what="the rows without encoded values")
    m = d.scrape()
    assert counter(m, "drift_sidecar_events_rejected_total", reason="wrong_type") == 6
    assert not any(m.series("drift_sidecar_frame_errors_total").values())
