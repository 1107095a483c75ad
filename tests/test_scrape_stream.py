"""/metrics written in chunks over a real connection: length, HEAD, and keep-alive hold."""

from __future__ import annotations

import http.client
import socket
import struct

from harness import parse_metrics

import sidecar.exposition

FEATURES = [f"f{i}" for i in range(1000)]
MODEL = {
    "name": "wide",
    "baseline": {"capture": 50},
    "features": [{"name": f, "type": "numeric"} for f in FEATURES],
    "prediction": {"type": "numeric"},
}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def test_a_body_of_many_chunks_has_its_length_and_head_has_none(daemon_factory):
    d = daemon_factory({"models": [MODEL], "socket": {"max_features_per_event": 1024}})
    d.send(
        [
            {"model": "wide", "features": {f: float(i + j) for j, f in enumerate(FEATURES)}}
            for i in range(20)
        ]
    )
    d.wait_metric("drift_sidecar_events_accepted_total", 20, model_name="wide")
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    try:
        for accept in (None, OPENMETRICS):
            headers = {"Accept": accept} if accept else {}
            conn.request("GET", "/metrics", headers=headers)
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200
            assert r.getheader("Transfer-Encoding") is None
            assert int(r.getheader("Content-Length", "-1")) == len(body)
            # large enough to be written in several chunks
            assert len(body) > 3 * sidecar.exposition.CHUNK_BYTES
            text = body.decode()
            if accept:
                assert text.endswith("# EOF\n")
            else:
                m = parse_metrics(text)
                assert m.value("ml_feature_value_count", model_name="wide", feature_name="f7") == 20
                assert m.value("drift_sidecar_events_accepted_total", model_name="wide") == 20

            conn.request("HEAD", "/metrics", headers=headers)
            h = conn.getresponse()
            assert h.status == 200
            assert h.read() == b""
            assert int(h.getheader("Content-Length", "-1")) > 3 * sidecar.exposition.CHUNK_BYTES
        # the connection is still in step after the HEADs: a last GET parses
        conn.request("GET", "/metrics?name[]=drift_sidecar_events_accepted_total")
        r = conn.getresponse()
        m = parse_metrics(r.read().decode())
        assert m.value("drift_sidecar_events_accepted_total", model_name="wide") == 20
    finally:
        conn.close()


def test_a_scraper_that_leaves_mid_body_costs_no_error(daemon_factory):
    d = daemon_factory({"models": [MODEL], "socket": {"max_features_per_event": 1024}})
    d.send([{"model": "wide", "features": {f: 1.0 for f in FEATURES}}])
    d.wait_metric("drift_sidecar_events_accepted_total", 1, model_name="wide")
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1024).startswith(b"HTTP/1.1 200")
            # leave with most of the body unread: a reset, as a timed-out scraper's can be
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # the daemon still answers, and logged no error for the scrapes it could not finish
    status, body = d.get("/metrics?name[]=drift_sidecar_events_accepted_total")
    assert status == 200 and b"drift_sidecar_events_accepted_total" in body
    logs = d.logs()
    assert "Error handling request" not in logs
    assert "Traceback" not in logs
