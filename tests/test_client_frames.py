"""The client's columnar frames against the real daemon: record_batch goes as Arrow frames,
gives the same metrics as JSON lines, and falls back to JSON when the daemon refuses."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from harness import DaemonProcess, wait_for
from test_frames import comparable, counter

from sidecar.client import Monitor

pytestmark = pytest.mark.timeout(120)

MODEL: dict[str, Any] = {
    "name": "fm",
    "version": "3",
    "features": [{"name": f"f{i}"} for i in range(4)],
    "prediction": {"type": "categorical"},
    "embedding": {"dim": 16, "device": "numpy", "features": 64},
    "baseline": {"capture": 200},
    "drift": {"interval_s": 0.2, "min_samples": 50, "window_size": 5000, "max_age_s": 86400},
}
CLASSES = ["ant", "bee", "cow"]


def accepted(d: DaemonProcess) -> float:
    return counter(d.scrape(), "drift_sidecar_events_accepted_total", model_name="fm")


def send_batches(m: Monitor, seed: int, batches: int = 3, n: int = 500) -> int:
    rng = np.random.default_rng(seed)
    sent = 0
    for _ in range(batches):
        probs = rng.dirichlet([1, 1, 1], n)
        sent += m.record_batch(
            predictions=probs.argmax(axis=1),
            probabilities=probs,
            confidences=probs.max(axis=1),
            features=rng.normal(size=(n, 4)),
            feature_names=[f"f{i}" for i in range(4)],
            class_names=CLASSES,
            latency_s=0.02,
            embeddings=rng.normal(size=(n, 16)).astype(np.float32),
            ids=np.arange(n),
            trace_id="0af7651916cd43dd8448eb211c80319c",
            ts=1.7e9,
        )
    return sent


def test_record_batch_sends_frames_and_matches_json(daemon_factory):
    framed = daemon_factory({"models": [MODEL]})
    plain = daemon_factory({"models": [MODEL]})
    with Monitor(framed.socket_path, model="fm", version="3") as a:
        assert send_batches(a, 1) == 1500
        assert a.flush(10)
        assert a.stats.frames
        assert a.stats.dropped_total == 0
    with Monitor(plain.socket_path, model="fm", version="3", arrow=False) as b:
        assert send_batches(b, 1) == 1500
        assert b.flush(10)
        assert not b.stats.frames
    for d in (framed, plain):
        wait_for(lambda d=d: accepted(d) == 1500, what="all events accepted")
    t_done = time.time()
    for d in (framed, plain):
        wait_for(
            lambda d=d: (
                (d.scrape().value("ml_drift_last_check_timestamp_seconds", model_name="fm") or 0)
                > t_done
            ),
            what="a drift check after the last event",
        )
    m = framed.scrape()
    assert counter(m, "drift_sidecar_events_rejected_total", reason="invalid_json") == 0
    assert sum(v for (n, _), v in m.samples.items() if n == "drift_sidecar_frame_errors_total") == 0
    a_samples, b_samples = comparable(m), comparable(plain.scrape())
    assert a_samples.keys() == b_samples.keys()
    # Counts are exact; sums of floats may differ in the last bits, as the two clients
    # cut the events into differently sized batches (which changes the order of addition).
    diff = {
        k: (a_samples[k], b_samples[k])
        for k in a_samples
        if not (
            a_samples[k] == b_samples[k]
            or (math.isnan(a_samples[k]) and math.isnan(b_samples[k]))
            or (k[0].endswith("_sum") and math.isclose(a_samples[k], b_samples[k], rel_tol=1e-12))
        )
    }
    assert not diff


def test_falls_back_to_json_when_frames_are_off(daemon_factory):
    d = daemon_factory({"models": [MODEL], "socket": {"arrow_enabled": False}})
    with Monitor(d.socket_path, model="fm", version="3") as m:
        assert send_batches(m, 2, batches=2) == 1000
        m.record(features={"f0": 1.0}, prediction="ant")  # single events stay JSON
        assert m.flush(10)
        assert not m.stats.frames
        assert m.stats.dropped_total == 0
        assert m.stats.sent == 1001
    wait_for(lambda: accepted(d) == 1001, what="every event accepted as JSON")
    metrics = d.scrape()
    assert counter(metrics, "drift_sidecar_frame_errors_total", reason="refused") == 1


def test_torch_helper_sends_frames(daemon_factory):
    torch = pytest.importorskip("torch")
    from sidecar.client import torch as st

    d = daemon_factory({"models": [MODEL]})
    with Monitor(d.socket_path, model="fm", version="3") as m:
        logits = torch.randn(300, 3)
        n = st.record_batch(
            m,
            logits,
            features=torch.randn(300, 4),
            feature_names=[f"f{i}" for i in range(4)],
            class_names=CLASSES,
            embeddings=torch.randn(300, 16),
            latency_s=0.01,
        )
        assert n == 300
        assert m.flush(10)
        assert m.stats.frames
    wait_for(lambda: accepted(d) == 300, what="the torch batch accepted")


def test_batches_of_other_columns_start_new_streams(daemon_factory):
    d = daemon_factory({"models": [MODEL]})
    rng = np.random.default_rng(3)
    names = [f"f{i}" for i in range(4)]
    with Monitor(d.socket_path, model="fm", version="3") as m:
        for i in range(6):  # the schema changes with every batch
            n = 100 + i
            if i % 2:
                got = m.record_batch(predictions=rng.integers(0, 3, n), class_names=CLASSES)
            else:
                got = m.record_batch(features=rng.normal(size=(n, 4)), feature_names=names)
            assert got == n
        assert m.flush(10)
        assert m.stats.frames and m.stats.dropped_total == 0
        assert m.stats.sent == sum(100 + i for i in range(6))
    wait_for(lambda: accepted(d) == sum(100 + i for i in range(6)), what="every batch accepted")
    metrics = d.scrape()
    assert not any(metrics.series("drift_sidecar_frame_errors_total").values())


def test_batches_with_stages_go_as_json(daemon_factory):
    d = daemon_factory({"models": [MODEL]})
    rng = np.random.default_rng(4)
    with Monitor(d.socket_path, model="fm", version="3") as m:
        n = m.record_batch(
            features=rng.normal(size=(50, 4)),
            feature_names=[f"f{i}" for i in range(4)],
            stages={"preprocess": 0.001, "inference": 0.004},
        )
        assert n == 50
        assert m.flush(10)
        assert not m.stats.frames  # no frames connection was opened for it
        assert m.stats.dropped_total == 0
    wait_for(lambda: accepted(d) == 50, what="the batch accepted as JSON")
    metrics = d.scrape()
    assert (
        metrics.value(
            "ml_prediction_stage_latency_seconds_count", model_name="fm", stage="inference"
        )
        == 50
    )
