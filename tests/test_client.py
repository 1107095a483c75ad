"""sidecar.client against real Unix socket servers run inside the test."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from harness import wait_for

from sidecar.client import DROP_REASONS, Monitor
from sidecar.errors import ConfigError

pytestmark = pytest.mark.timeout(60)


class NdjsonServer:
    """A Unix socket server that parses NDJSON lines (objects or arrays) and keeps the events."""

    def __init__(self, path: str, read: bool = True) -> None:
        self.path = path
        self.read = read
        self.events: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.lines = 0
        self.connections = 0
        self.frames_refused = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._stopped = False
        # Listed before it starts: stop() takes the first thread for the accept thread, and a
        # client that connects at once would otherwise list its reader thread first.
        t = threading.Thread(target=self._accept, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                self.connections += 1
            if self.read:
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                t.start()
                with self._lock:
                    self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        rest = b""
        first = True
        while True:
            try:
                data = conn.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            if first and data.startswith(b"\xff\xff\xff\xff"):
                # An Arrow stream: refused as a sidecar with frames off does, so the client
                # sends JSON lines (what these tests read); test_client_frames.py covers frames.
                with self._lock:
                    self.frames_refused += 1
                conn.close()
                return
            first = False
            rest += data
            *lines, rest = rest.split(b"\n")
            for line in lines:
                obj = msgspec.json.decode(line)
                items = obj if isinstance(obj, list) else [obj]
                with self._lock:
                    self.lines += 1
                    for item in items:
                        if item.get("kind") == "stats":
                            self.stats.append(item)
                        else:
                            self.events.append(item)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.events)

    def stop(self) -> None:
        """Go away like a crashed sidecar: close the listener and every connection."""
        if self._stopped:
            return
        self._stopped = True
        # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        # Once the accept thread has returned no connection can be added behind our back:
        # one accepted just before the shutdown would otherwise be left open.
        accept_thread = self._threads[0]
        accept_thread.join(5)
        assert not accept_thread.is_alive(), "accept thread did not stop"
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads[1:])
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        for t in threads:
            t.join(5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@pytest.fixture
def sock_path() -> Iterator[str]:
    # AF_UNIX paths are limited to ~108 bytes, so not under pytest's long tmp_path.
    d = Path(f"/tmp/dsc-{os.getpid()}-{time.monotonic_ns()}")
    d.mkdir()
    yield str(d / "events.sock")
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


@pytest.fixture
def server(sock_path: str) -> Iterator[NdjsonServer]:
    srv = NdjsonServer(sock_path)
    yield srv
    srv.stop()


def accounted(m: Monitor) -> int:
    s = m.stats
    return s.sent + s.dropped_total + s.buffered + s.pending


def test_exact_counts_when_nothing_is_dropped(server: NdjsonServer) -> None:
    with Monitor(server.path, model="fraud", version="1.0.0") as m:
        for i in range(3000):
            assert m.record({"amount": float(i), "country": "de"}, prediction=i % 2, id=str(i))
        assert m.record_many([{"features": {"amount": 1.0}, "prediction": 0.5}] * 500) == 500
        assert m.record_batch(predictions=np.arange(700) % 3, latency_s=0.01) == 700
        assert m.flush(10)
        s = m.stats
        assert s.sent == 4200
        assert s.dropped_total == 0
        assert s.buffered == 0
        assert s.pending == 0
        assert s.connected
    wait_for(lambda: server.count == 4200, what="4200 events at the server")
    assert [e["id"] for e in server.events[:3000]] == [str(i) for i in range(3000)]
    assert all(e["model"] == "fraud" and e["version"] == "1.0.0" for e in server.events)
    # Batched: one JSON array per line, many events each (lines end early only when the
    # flusher hands the GIL back mid-line).
    assert server.lines <= 4200 // 16


def test_event_fields_follow_protocol_v1(server: NdjsonServer) -> None:
    tid = 0x0AF7651916CD43DD8448EB211C80319C
    with Monitor(server.path, model="m", batch_size=8) as m:
        m.record(
            {"a": np.float32(1.5), "b": "x", "c": True, "d": None, "e": float("nan"), "f": 3},
            prediction=np.int64(2),
            probabilities=np.array([0.1, 0.2, 0.7]),
            confidence=0.7,
            latency_s=0.012,
            status="error",
            trace_id=tid,  # type: ignore[arg-type]
            id="req-1",
            ts=1700000000.5,
            embedding=[0.1, 0.2],
        )
        m.record(probabilities={"cat": 0.9, "dog": 0.1}, prediction="cat", trace_id="AB" * 16)
        assert m.flush(5)
    wait_for(lambda: server.count == 2)
    first, second = server.events
    assert first == {
        "model": "m",
        "features": {"a": 1.5, "b": "x", "c": True, "d": None, "e": None, "f": 3},
        "prediction": 2,
        "probabilities": [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.7)],
        "confidence": 0.7,
        "latency_s": 0.012,
        "status": "error",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "id": "req-1",
        "embedding": [0.1, 0.2],
        "ts": 1700000000.5,
    }
    assert "version" not in first
    assert second["probabilities"] == {"cat": 0.9, "dog": 0.1}
    assert second["trace_id"] == "ab" * 16
    assert second["prediction"] == "cat"
    assert abs(second["ts"] - time.time()) < 60


def test_record_batch_columns_and_class_names(server: NdjsonServer) -> None:
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    with Monitor(server.path, model="m") as m:
        n = m.record_batch(
            predictions=probs.argmax(axis=1),
            probabilities=probs,
            confidences=probs.max(axis=1),
            features=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
            feature_names=["x", "y"],
            class_names=["no", "yes"],
            latency_s=[0.1, 0.2, 0.3],
            ids=["a", "b", "c"],
        )
        assert n == 3
        assert m.record_batch(predictions=[1, 2], features=[{"x": 1}, {"x": 2}]) == 2
        assert m.flush(5)
    wait_for(lambda: server.count == 5)
    e = server.events
    assert [x["prediction"] for x in e[:3]] == ["yes", "no", "no"]
    assert e[0]["probabilities"] == {"no": 0.2, "yes": 0.8}
    assert e[1]["features"] == {"x": 3.0, "y": 4.0}
    assert [x["latency_s"] for x in e[:3]] == [0.1, 0.2, 0.3]
    assert [x["id"] for x in e[:3]] == ["a", "b", "c"]
    assert e[3]["features"] == {"x": 1}
    assert len({x["ts"] for x in e[:3]}) == 1  # one ts for one batch


def test_wrong_types_are_dropped_counted_and_logged_once(
    server: NdjsonServer, caplog: pytest.LogCaptureFixture
) -> None:
    bad_calls: list[dict[str, Any]] = [
        {"features": {"x": [1, 2]}},
        {"features": [1.0, 2.0]},
        {"features": "x=1"},
        {"features": {1: 2.0}},
        {"features": {"x": float("inf")}},
        {"confidence": float("nan")},
        {"confidence": 1.5},
        {"confidence": "high"},
        {"latency_s": -0.1},
        {"status": "ok"},
        {"trace_id": "not-hex"},
        {"prediction": [1, 2]},
        {"probabilities": "0.5"},
        {"embedding": [1.0, "x"]},
        {"ts": "yesterday"},
        {"id": object()},
        {"features": {"x": object()}},
    ]
    caplog.set_level(logging.WARNING, logger="sidecar.client")
    with Monitor(server.path, model="m") as m:
        for _ in range(3):
            for kwargs in bad_calls:
                assert m.record(**kwargs) is True  # buffered; judged on the flusher thread
        m.record({"x": 1.0}, prediction=1.0)
        assert m.record_batch(predictions=[1, 2, 3], confidences=[0.5, 0.5]) == 0
        assert m.record_batch(features=np.ones((2, 2))) == 0  # 2-D features need names
        assert m.record_many(42) == 0  # type: ignore[arg-type]
        assert m.record_many([{"prediction": 1.0, "colour": "red"}, "nope"]) == 2  # type: ignore[list-item]
        assert m.report_model_memory(-5) is False
        assert m.report_model_memory("lots") is False  # type: ignore[arg-type]
        assert m.flush(5)
        s = m.stats
    wait_for(lambda: server.count == 1)
    assert server.events[0]["features"] == {"x": 1.0}
    n_bad = 3 * len(bad_calls) + 3 + 2 + 1 + 2 + 2
    assert s.dropped["invalid_input"] == n_bad
    assert s.sent == 1
    invalid_logs = [r for r in caplog.records if "dropped an invalid event" in r.getMessage()]
    assert len(invalid_logs) == 1  # rate-limited, not one line per event


def test_sidecar_down_buffers_up_to_the_cap_then_counts_drops(sock_path: str) -> None:
    m = Monitor(sock_path, model="m", buffer_size=100, reconnect_backoff=(0.01, 0.05))
    try:
        wait_for(lambda: m.stats.connect_failures > 0, what="a failed connect")
        results = [m.record(prediction=float(i)) for i in range(250)]
        assert results.count(True) == 100
        s = m.stats
        assert s.dropped["not_connected"] == 150
        assert s.buffered == 100
        assert not s.connected
        assert not m.flush(0.1)
        srv = NdjsonServer(sock_path)
        try:
            assert m.flush(10)
            wait_for(lambda: srv.count == 100, what="the buffered events")
            assert [e["prediction"] for e in srv.events] == [float(i) for i in range(100)]
            s = m.stats
            assert s.sent + s.dropped_total == 250
        finally:
            srv.stop()
    finally:
        m.close(1)


def test_sidecar_restarted_mid_stream(sock_path: str) -> None:
    first = NdjsonServer(sock_path)
    m = Monitor(sock_path, model="m", buffer_size=500, reconnect_backoff=(0.01, 0.1))
    recorded = 0
    try:
        wait_for(lambda: m.stats.connected)
        for _ in range(5):
            for i in range(400):
                recorded += 1
                m.record({"x": float(i)}, prediction=1.0)
            assert m.flush(10)
        wait_for(lambda: first.count == 2000)
    finally:
        first.stop()
    wait_for(lambda: not m.stats.connected, what="the client to notice")
    for i in range(1500):  # more than the buffer holds while nobody listens
        recorded += 1
        m.record({"x": float(i)}, prediction=2.0)
    assert m.stats.dropped["not_connected"] == 1000
    second = NdjsonServer(sock_path)
    try:
        wait_for(lambda: m.stats.connected, what="the reconnect")
        assert m.flush(10)  # the 500 kept while the sidecar was away
        for _ in range(4):
            for i in range(250):
                recorded += 1
                m.record({"x": float(i)}, prediction=3.0)
            assert m.flush(10)
        s = m.stats
        assert s.reconnects == 1
        assert s.sent + s.dropped_total == recorded
        wait_for(lambda: second.count == s.sent - 2000)
        preds = [e["prediction"] for e in second.events]
        assert preds.count(2.0) == 500
        assert preds.count(3.0) == 1000
    finally:
        second.stop()
        m.close(1)


def test_peer_that_goes_away_while_writing(sock_path: str) -> None:
    m = Monitor(
        sock_path,
        model="m",
        buffer_size=2000,
        max_pending_bytes=256 * 1024,
        reconnect_backoff=(0.01, 0.05),
    )
    srv = NdjsonServer(sock_path, read=False)
    payload = {f"f{i}": float(i) for i in range(50)}
    calls = 5000
    try:
        wait_for(lambda: m.stats.connected)
        for _ in range(calls):
            m.record(payload)
        # The kernel buffer is full and the client holds encoded lines it cannot write.
        wait_for(lambda: m.stats.pending_bytes >= 200 * 1024, what="pending lines")
        srv.stop()
        wait_for(lambda: not m.stats.connected, what="the client to notice")
        sent_before = m.stats.sent
    finally:
        srv.stop()
    srv2 = NdjsonServer(sock_path)
    try:
        assert m.flush(10)
        s = m.stats
        assert s.sent + s.dropped_total == calls
        assert s.dropped["buffer_full"] > 0
        # Whole lines not yet started are resent on the new connection; a half-written one
        # cannot be, and its events count as send_failed.
        wait_for(lambda: srv2.count == s.sent - sent_before, what="the resent lines")
        assert srv2.count > 0
        assert s.dropped["send_failed"] <= 256
    finally:
        srv2.stop()
        m.close(1)


def test_record_never_blocks_when_the_reader_stops_reading(sock_path: str) -> None:
    srv = NdjsonServer(sock_path, read=False)
    m = Monitor(sock_path, model="m", buffer_size=5000, max_pending_bytes=256 * 1024)
    feats = {f"f{i}": float(i) for i in range(20)}
    n = 60_000
    durations = np.empty(n)
    clock = time.perf_counter
    try:
        wait_for(lambda: m.stats.connected)
        gc.collect()  # start from a clean heap so collections during the loop stay small
        for i in range(n):
            t0 = clock()
            m.record(feats, prediction=float(i), latency_s=0.001)
            durations[i] = clock() - t0
        s = m.stats
        # Everything the kernel, the pending lines and the buffer can hold, and no more.
        assert s.dropped["buffer_full"] > n // 2
        assert s.buffered <= 5000
        assert s.pending_bytes <= 256 * 1024 + 1_048_576
        assert s.sent + s.dropped_total + s.buffered + s.pending == n
        # A blocked send() would hold one call for as long as the reader stalls (the whole
        # loop); the bound below leaves room for GIL hand-offs to the flusher thread and
        # for the scheduler of a busy 2-core CI machine.
        assert durations.max() < 0.05, f"slowest record() took {durations.max() * 1e3:.1f} ms"
        assert np.median(durations) < 20e-6
        t0 = time.monotonic()
        assert m.close(timeout=0.2) is False
        assert time.monotonic() - t0 < 2.0
        s = m.stats
        assert s.dropped["closed"] > 0
        assert s.sent + s.dropped_total == n
    finally:
        m.close(0)
        srv.stop()


def test_concurrent_threads(server: NdjsonServer) -> None:
    threads_n, per_thread = 8, 4000
    with Monitor(server.path, model="m", buffer_size=threads_n * per_thread) as m:
        barrier = threading.Barrier(threads_n)

        def worker(k: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                m.record(id=f"{k}-{i}", prediction=float(k))

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert m.flush(20)
        assert m.stats.sent == threads_n * per_thread
    wait_for(lambda: server.count == threads_n * per_thread)
    ids = [e["id"] for e in server.events]
    assert len(set(ids)) == threads_n * per_thread
    for k in range(threads_n):  # each thread's events stay in its own order
        mine = [int(i.split("-")[1]) for i in ids if i.startswith(f"{k}-")]
        assert mine == sorted(mine)


def test_usable_from_asyncio(server: NdjsonServer) -> None:
    m = Monitor(server.path, model="m")

    @m.track(features=lambda x: {"x": x}, outcome=lambda y: {"prediction": y})
    async def handler(x: float) -> float:
        await asyncio.sleep(0)
        m.record({"x": x}, prediction=-x)
        return x * 2

    async def main() -> list[float]:
        return await asyncio.gather(*(handler(float(i)) for i in range(200)))

    try:
        assert asyncio.run(main()) == [float(i) * 2 for i in range(200)]
        assert m.flush(5)
    finally:
        m.close(1)
    wait_for(lambda: server.count == 400)
    tracked = [e for e in server.events if e["prediction"] >= 0 and "latency_s" in e]
    assert len(tracked) == 200
    assert {e["prediction"] for e in tracked} == {float(i) * 2 for i in range(200)}


def test_timed_records_latency_and_errors(server: NdjsonServer) -> None:
    with Monitor(server.path, model="m") as m:
        t0 = time.perf_counter()
        with m.timed(features={"x": 1.0}, id="ok") as rec:
            sum(range(20_000))
            rec.prediction = 1
            rec.confidence = 0.75
        outer = time.perf_counter() - t0
        with pytest.raises(ZeroDivisionError), m.timed(features={"x": 2.0}, id="bad") as rec:
            rec.prediction = 1 / 0
        assert rec.latency_s is not None
        assert m.flush(5)
    wait_for(lambda: server.count == 2)
    ok, bad = server.events
    assert ok["id"] == "ok"
    assert ok["prediction"] == 1
    assert ok["confidence"] == 0.75
    assert 0 < ok["latency_s"] <= outer
    assert "status" not in ok  # "success" is the protocol's default
    assert bad["status"] == "error"
    assert bad["features"] == {"x": 2.0}
    assert "prediction" not in bad


def test_track_sync_and_async_record_errors_and_reraise(server: NdjsonServer) -> None:
    m = Monitor(server.path, model="m")

    @m.track(outcome=lambda r: {"prediction": r, "confidence": 0.5})
    def predict(x: float) -> float:
        if x < 0:
            raise ValueError("negative")
        return x + 1

    @m.track(features=lambda x: {"x": x})
    async def apredict(x: float) -> float:
        if x < 0:
            raise KeyError("negative")
        return x

    @m.track(features=lambda x: {"x": 1 / x})
    def fragile(x: float) -> float:
        return x

    try:
        assert predict(1.0) == 2.0
        with pytest.raises(ValueError, match="negative"):
            predict(-1.0)
        assert asyncio.run(apredict(3.0)) == 3.0
        with pytest.raises(KeyError):
            asyncio.run(apredict(-3.0))
        assert fragile(0.0) == 0.0  # the extractor raised; the call still works
        assert predict.__name__ == "predict"
        assert m.flush(5)
        assert m.stats.dropped["invalid_input"] == 1
    finally:
        m.close(1)
    wait_for(lambda: server.count == 4)
    e = server.events
    assert e[0]["prediction"] == 2.0
    assert e[0]["confidence"] == 0.5
    assert e[1]["status"] == "error"
    assert "prediction" not in e[1]
    assert e[2]["features"] == {"x": 3.0}
    assert e[3] == {**e[3], "status": "error", "features": {"x": -3.0}}
    assert all(x["latency_s"] >= 0 for x in e)


def test_trace_id_taken_from_the_current_otel_span(server: NdjsonServer) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with (
        Monitor(server.path, model="m") as m,
        Monitor(server.path, model="quiet", trace_ids=False) as quiet,
    ):
        with tracer.start_as_current_span("predict") as span:
            expected = format(span.get_span_context().trace_id, "032x")
            m.record(id="plain")
            m.record(id="own", trace_id="f" * 32)  # the caller's own id wins
            with m.timed(id="timed"):
                pass
            m.record_batch(ids=["batch-0", "batch-1"])
            m.record_many([{"id": "many"}])
            quiet.record(id="quiet")
        m.record(id="outside")
        assert m.flush(5)
        assert quiet.flush(5)
    wait_for(lambda: server.count == 8)
    by_id = {e["id"]: e.get("trace_id") for e in server.events}
    assert by_id == {
        "plain": expected,
        "own": "f" * 32,
        "timed": expected,
        "batch-0": expected,
        "batch-1": expected,
        "many": expected,
        "quiet": None,
        "outside": None,
    }


def test_model_memory_stats_event_is_sent_and_resent_after_reconnect(sock_path: str) -> None:
    m = Monitor(sock_path, model="m", version="2", reconnect_backoff=(0.01, 0.05))
    first = NdjsonServer(sock_path)
    try:
        assert m.report_model_memory(1024)
        assert m.report_model_memory(np.int64(2048))
        assert m.flush(5)
        wait_for(lambda: len(first.stats) >= 1)
        assert first.stats[-1] == {
            "kind": "stats",
            "model": "m",
            "version": "2",
            "model_memory_bytes": 2048,
        }
    finally:
        first.stop()
    wait_for(lambda: not m.stats.connected)
    second = NdjsonServer(sock_path)
    try:
        wait_for(lambda: len(second.stats) == 1, what="the gauge resent")
        assert second.stats[0]["model_memory_bytes"] == 2048
        assert m.stats.sent == 0  # stats lines are not prediction events
    finally:
        second.stop()
        m.close(1)


def test_oversized_lines_are_split_and_oversized_events_dropped(server: NdjsonServer) -> None:
    with Monitor(server.path, model="m", max_line_bytes=4096, batch_size=256) as m:
        for i in range(100):
            m.record({"x": float(i), "pad": "p" * 100})
        m.record(embedding=[0.5] * 2000)  # one event longer than a line may be
        assert m.flush(5)
        s = m.stats
    assert s.dropped["too_large"] == 1
    assert s.sent == 100
    wait_for(lambda: server.count == 100)
    assert server.lines >= 100 * 120 // 4096


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_worker_gets_its_own_connection_and_sends_only_its_events(
    server: NdjsonServer,
) -> None:
    """Pre-fork servers (gunicorn and friends) create the Monitor, then fork workers."""
    with Monitor(server.path, model="m") as m:
        for i in range(3):
            m.record({"a": 1.0}, id=f"parent-{i}")
        assert m.flush(5)
        for i in range(4):  # still buffered at the fork: the child must not send these again
            m.record({"a": 1.0}, id=f"parent-late-{i}")
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only, never return to pytest
            ok = False
            try:
                for i in range(5):
                    m.record({"a": 2.0}, id=f"child-{i}")
                ok = m.flush(5) and m.stats.sent == 5 and m.stats.dropped_total == 0
                m.close(timeout=5)
            finally:
                os._exit(0 if ok else 1)
        try:
            done = wait_for(
                lambda: (r := os.waitpid(pid, os.WNOHANG))[0] and r,
                30,
                "the forked child to finish",
            )
        except AssertionError:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise
        assert os.waitstatus_to_exitcode(done[1]) == 0, "the child could not send its events"
        assert m.flush(5)
    wait_for(lambda: server.count == 12, what="12 events at the server")
    ids = sorted(e["id"] for e in server.events)
    assert ids == sorted(
        [f"parent-{i}" for i in range(3)]
        + [f"parent-late-{i}" for i in range(4)]
        + [f"child-{i}" for i in range(5)]
    )
    assert server.connections == 2  # the child connected on its own


def test_close_refuses_new_events_and_flush_times_out_without_sidecar(sock_path: str) -> None:
    m = Monitor(sock_path, model="m")
    assert m.record(prediction=1.0)
    t0 = time.monotonic()
    assert m.flush(0.2) is False
    assert time.monotonic() - t0 < 1.0
    assert m.close(0.1) is False
    assert m.record(prediction=2.0) is False
    assert m.record_batch(predictions=[1.0, 2.0]) == 0
    s = m.stats
    assert s.dropped["closed"] == 1 + 1 + 2
    assert s.sent + s.dropped_total == 4
    assert set(s.dropped) == set(DROP_REASONS)
    assert m.close() is True  # idempotent


def test_bad_constructor_arguments_name_the_argument(sock_path: str) -> None:
    with pytest.raises(ConfigError, match="buffer_size"):
        Monitor(sock_path, model="m", buffer_size=0)
    with pytest.raises(ConfigError, match="model"):
        Monitor(sock_path, model="")
    with pytest.raises(ConfigError, match="reconnect_backoff"):
        Monitor(sock_path, model="m", reconnect_backoff=(1.0, 0.5))


def test_memory_stays_bounded_whatever_the_sidecar_does(sock_path: str) -> None:
    srv = NdjsonServer(sock_path, read=False)
    m = Monitor(sock_path, model="m", buffer_size=1000, max_pending_bytes=64 * 1024)
    big = {f"f{i}": "v" * 50 for i in range(40)}
    try:
        for _ in range(20):
            for _ in range(2000):
                m.record(big)
            s = m.stats
            assert s.buffered <= 1000
            assert s.pending_bytes <= 64 * 1024 + 1_048_576
        assert m.stats.dropped["buffer_full"] > 0
        assert math.isfinite(m.stats.bytes_sent)
    finally:
        m.close(0.1)
        srv.stop()
