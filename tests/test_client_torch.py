"""sidecar.client.torch on the CPU, against a real Unix socket server."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from harness import wait_for
from test_client import NdjsonServer

from sidecar.client import Monitor
from sidecar.client._encode import Batch
from sidecar.client.torch import (
    CudaMemoryReporter,
    module_memory_bytes,
    record_batch,
    report_cuda_memory,
    report_module_memory,
)

pytestmark = [pytest.mark.torch, pytest.mark.timeout(60)]


@pytest.fixture
def server() -> Iterator[NdjsonServer]:
    d = Path(f"/tmp/dsct-{os.getpid()}-{time.monotonic_ns()}")
    d.mkdir()
    srv = NdjsonServer(str(d / "events.sock"))
    yield srv
    srv.stop()
    d.rmdir()


def test_logits_become_class_confidence_and_probabilities(server: NdjsonServer) -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.5], [0.1, 0.2, 4.0]])
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    expected = torch.softmax(logits, dim=1)
    with Monitor(server.path, model="m") as m:
        n = record_batch(
            m,
            logits,
            features=x,
            feature_names=["a", "b"],
            class_names=["cat", "dog", "owl"],
            latency_s=0.02,
        )
        x.zero_()  # the caller may reuse its buffers at once
        assert n == 3
        assert m.flush(5)
    wait_for(lambda: server.count == 3)
    events = server.events
    assert [e["prediction"] for e in events] == ["cat", "dog", "owl"]
    for row, e in enumerate(events):
        assert e["confidence"] == pytest.approx(expected[row].max().item(), rel=1e-6)
        assert list(e["probabilities"]) == ["cat", "dog", "owl"]
        assert sum(e["probabilities"].values()) == pytest.approx(1.0, rel=1e-6)
        assert e["features"] == {"a": float(row + 1), "b": float(10 * (row + 1))}
        assert e["latency_s"] == 0.02


def test_probabilities_without_class_names_and_dict_features(server: NdjsonServer) -> None:
    probs = torch.tensor([[0.25, 0.75], [0.9, 0.1]], dtype=torch.float64)
    with Monitor(server.path, model="m") as m:
        n = record_batch(
            m,
            probs,
            from_logits=False,
            features=[{"x": 1.0}, {"x": 2.0}],
            ids=["r1", "r2"],
            latency_s=[0.1, 0.2],
        )
        assert n == 2
        assert m.flush(5)
    wait_for(lambda: server.count == 2)
    a, b = server.events
    assert (a["prediction"], a["confidence"], a["probabilities"]) == (1, 0.75, [0.25, 0.75])
    assert b["prediction"] == 0
    assert b["confidence"] == pytest.approx(0.9)
    assert (a["id"], b["latency_s"], b["features"]) == ("r1", 0.2, {"x": 2.0})


def test_binary_outputs_and_numpy_features(server: NdjsonServer) -> None:
    logit = torch.tensor([0.0, 2.0, -2.0])
    with Monitor(server.path, model="m") as m:
        assert (
            record_batch(m, logit, features=np.arange(6.0).reshape(3, 2), feature_names=["p", "q"])
            == 3
        )
        assert m.flush(5)
    wait_for(lambda: server.count == 3)
    e = server.events
    assert [x["prediction"] for x in e] == [0, 1, 0]  # ties go to the first class
    assert e[1]["confidence"] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    assert e[2]["features"] == {"p": 4.0, "q": 5.0}


def test_bad_shapes_are_counted_not_raised(server: NdjsonServer) -> None:
    with Monitor(server.path, model="m") as m:
        assert record_batch(m, torch.zeros(2, 3, 4)) == 0
        assert (
            record_batch(m, torch.zeros(2, 3), features=torch.zeros(5, 2), feature_names=["a", "b"])
            == 0
        )
        assert record_batch(m, torch.zeros(2, 3), class_names=["only-one"]) == 2  # judged later
        assert record_batch(m, "not a tensor") == 0  # type: ignore[arg-type]
        assert m.flush(5)
        s = m.stats
    assert s.sent == 0
    assert s.dropped["invalid_input"] == 1 + 2 + 2 + 1


def test_rows_become_events_on_the_flusher_thread_not_the_callers(
    server: NdjsonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """record_batch does the tensor math, then hands the batch over whole: the per-row
    conversion (256 rows, about 2 us each) runs on the flusher thread."""
    expanded_on: list[int] = []
    expand = Batch.expand

    def spy(self: Batch) -> Iterator[Any]:
        expanded_on.append(threading.get_ident())
        return expand(self)

    monkeypatch.setattr(Batch, "expand", spy)
    logits = torch.randn(256, 10)
    with Monitor(server.path, model="m") as m:
        for _ in range(3):
            assert (
                record_batch(
                    m, logits, features=torch.randn(256, 4), feature_names=["a", "b", "c", "d"]
                )
                == 256
            )
            assert threading.get_ident() not in expanded_on
        assert m.flush(5)
    wait_for(lambda: server.count == 3 * 256)
    assert len(expanded_on) == 3  # each batch converted once, none on the caller's thread
    assert threading.get_ident() not in expanded_on


def test_memory_reports(server: NdjsonServer) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
    expected = (4 * 8 + 8 + 8 + 8) * 4 + (8 + 8) * 4 + 8  # params, running stats, counter
    assert module_memory_bytes(model) == expected
    with Monitor(server.path, model="m") as m:
        assert report_module_memory(m, model)
        assert report_cuda_memory(m) is torch.cuda.is_available()
        reporter = CudaMemoryReporter(m, interval_s=0.01)
        assert reporter.active is torch.cuda.is_available()
        reporter.stop()
        assert m.flush(5)
    wait_for(lambda: len(server.stats) >= 1)
    assert server.stats[0]["model_memory_bytes"] == expected
    if torch.cuda.is_available():
        assert server.stats[-1]["model_memory_bytes"] == torch.cuda.memory_allocated()
    else:
        assert len(server.stats) == 1


def test_embeddings_from_tensors_and_arrays(server: NdjsonServer) -> None:
    emb = torch.arange(6, dtype=torch.float64).reshape(3, 2) / 4
    arr = np.array([[0.5, -1.0]], dtype=np.float32)
    with Monitor(server.path, model="m") as m:
        assert record_batch(m, torch.zeros(3, 2), embeddings=emb) == 3
        emb.zero_()  # copied: the caller may reuse its buffer at once
        assert m.record(prediction=1.0, embedding=arr[0])
        assert m.record(prediction=1.0, embedding=[1.0, float("nan")])  # refused on encode
        assert m.flush(5)
    wait_for(lambda: server.count == 4)
    embs = [e["embedding"] for e in server.events]
    assert embs == [[0.0, 0.25], [0.5, 0.75], [1.0, 1.25], [0.5, -1.0]]
    assert m.stats.dropped.get("invalid_input") == 1
