"""Stage latencies: `stages` on events through the real daemon, exact histogram counts,
bounded stage names, bad stages rejected by reason, and the client's stage helpers."""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from harness import DaemonProcess, Metrics, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from test_client import NdjsonServer, server, sock_path  # noqa: F401

from sidecar.client import Monitor
from sidecar.client import _stages as client_stages
from sidecar.client import _timing as client_timing
from sidecar.stages import StageLatency
from sidecar.tracker import LATENCY_BUCKETS

METRIC = "ml_prediction_stage_latency_seconds"
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
LONG = "y" * 40  # longer than limits.max_label_bytes below


def le(b: float) -> str:
    return "+Inf" if math.isinf(b) else repr(float(b))


def assert_histogram(m: Metrics, model: str, stage: str, values: list[float]) -> None:
    """The stage's buckets, count and sum equal those of `values`, counted here by hand."""
    labels = {"model_name": model, "stage": stage}
    for b in [*BUCKETS, math.inf]:
        want = sum(1 for v in values if v <= b)
        got = m.value(f"{METRIC}_bucket", **labels, le=le(b))
        assert got == want, (model, stage, b, got, want)
    assert m.value(f"{METRIC}_count", **labels) == len(values)
    assert m.value(f"{METRIC}_sum", **labels) == pytest.approx(sum(values), rel=1e-12)


@pytest.fixture
def daemon(daemon_factory: Any) -> DaemonProcess:
    cfg = {
        "models": [
            {
                "name": "m",
                "baseline": {"capture": 100_000},
                "features": [{"name": "x"}],
                "stages": ["preprocess", "inference"],
            }
        ],
        "limits": {"max_stages": 2, "max_label_bytes": 32},
        "auto_register": {"enabled": True},
    }
    return daemon_factory(cfg)


def test_stage_histograms_are_exact_and_their_names_bounded(daemon: DaemonProcess) -> None:
    m = daemon.scrape()
    # the configured stages are there from the start, at 0; no other one is
    assert_histogram(m, "m", "preprocess", [])
    assert_histogram(m, "m", "inference", [])
    assert not [k for k in m.series(f"{METRIC}_count") if ("stage", "__other__") in k]

    rng = np.random.default_rng(5)
    # values on the bucket bounds too: a bucket holds (previous bound, its bound]
    pool = [0.0, 0.005, 0.0051, 0.01, 0.1, 1.0, 2.5, 10.0, 10.5, 1e6]
    expected: dict[tuple[str, str], list[float]] = {}
    events = []
    for i in range(300):
        pre, inf, post = (float(x) for x in rng.choice(pool, 3))
        stages = {"preprocess": pre, "inference": inf}
        if i % 3 == 0:
            stages["postprocess"] = post  # not configured: pooled
        if i % 5 == 0:
            stages[""] = 0.02  # no name: pooled
        if i % 7 == 0:
            stages[LONG] = 0.03  # past limits.max_label_bytes: pooled
        events.append({"model": "m", "features": {"x": 1.0}, "stages": stages})
        for name, s in stages.items():
            key = ("m", name if name in ("preprocess", "inference") else "__other__")
            expected.setdefault(key, []).append(s)
    # a model with no `stages:` list keeps the first limits.max_stages names (2) it sees; a
    # name too long to be a label takes no place
    for i in range(40):
        stages = {LONG: 0.2, "a": 0.001 * i, "b": 0.3, "c": 4.0} if i % 2 else {"b": 7.0}
        events.append({"model": "auto", "features": {"x": 1.0}, "stages": stages})
        for name, s in stages.items():
            expected.setdefault(("auto", name if name in "ab" else "__other__"), []).append(s)
    events.append({"model": "m", "features": {"x": 2.0}})  # no stages: counted nowhere
    daemon.send([events[:150], *events[150:]])
    m = daemon.wait_metric("drift_sidecar_events_accepted_total", 301, model_name="m")
    m = wait_for(
        lambda: (
            (s := daemon.scrape()).value("drift_sidecar_events_accepted_total", model_name="auto")
            == 40
            and s
        ),
        15,
        "every event of both models",
    )
    for (model, stage), values in expected.items():
        assert_histogram(m, model, stage, values)
    stages_of = {(dict(k)["model_name"], dict(k)["stage"]) for k in m.series(f"{METRIC}_count")}
    assert (
        stages_of
        == set(expected)
        == {
            ("m", "preprocess"),
            ("m", "inference"),
            ("m", "__other__"),
            ("auto", "b"),
            ("auto", "a"),
            ("auto", "__other__"),
        }
    )
    assert m.value("drift_sidecar_events_rejected_total", reason="wrong_type") == 0


BAD = [
    (b'{"model":"m","stages":[0.1]}', "wrong_type"),
    (b'{"model":"m","stages":"fast"}', "wrong_type"),
    (b'{"model":"m","stages":{"preprocess":"0.1"}}', "wrong_type"),
    (b'{"model":"m","stages":{"preprocess":-0.001}}', "out_of_range"),
    (b'{"model":"m","stages":{"preprocess":1e400}}', "out_of_range"),
    (b'{"model":"m","stages":{"preprocess":1e101}}', "out_of_range"),
    (b'{"model":"m","stages":{"preprocess":NaN}}', "invalid_value"),
    (b'{"model":"m","stages":{"preprocess":Infinity}}', "invalid_value"),
    (b'{"model":"m","stages":{"preprocess":-Infinity}}', "invalid_value"),
    (b'{"model":"m","stages":{"preprocess":null}}', "invalid_value"),
]


def test_an_event_with_bad_stages_is_rejected_alone_by_reason(daemon: DaemonProcess) -> None:
    good = {"model": "m", "features": {"x": 1.0}, "stages": {"preprocess": 0.02}}
    before = daemon.scrape()
    lines: list[Any] = [line for line, _ in BAD]
    # in a batch, the bad event goes alone: the two beside it are accepted
    lines.append(
        b'[{"model":"m","stages":{"inference":0.5}},' + BAD[3][0] + b"," + BAD[6][0] + b"]"
    )
    lines += [good, good]
    daemon.send(lines)
    m = daemon.wait_metric("drift_sidecar_events_accepted_total", 3, model_name="m")
    want: dict[str, int] = {}
    for _, reason in [*BAD, BAD[3], BAD[6]]:
        want[reason] = want.get(reason, 0) + 1
    for reason, n in want.items():
        got = m.value("drift_sidecar_events_rejected_total", reason=reason)
        assert got == before.value("drift_sidecar_events_rejected_total", reason=reason) + n
    # only the accepted events' stages are counted
    assert_histogram(m, "m", "preprocess", [0.02, 0.02])
    assert_histogram(m, "m", "inference", [0.5])
    # the log says which field
    assert "$.stages" in daemon.logs()


def test_a_reload_keeps_the_counts_of_kept_names_and_pools_the_rest() -> None:
    s = StageLatency(["a", "b"], 16, LATENCY_BUCKETS)
    s.count([_Ev({"a": 0.2, "b": 3.0, "z": 0.001})])
    s.retune(["b", "c"], 16, 128)
    got = {name: (int(c.sum()), total) for name, c, total in s.series()}
    # b keeps its count; c starts at 0; a is pooled with z, so no counter goes down
    assert got == {"b": (1, 3.0), "c": (0, 0.0), "__other__": (2, pytest.approx(0.201))}
    s.retune(None, 1, 128)  # no list: the first name kept (b, which has counts) stays
    got = {name: int(c.sum()) for name, c, _ in s.series()}
    assert got == {"b": 1, "__other__": 2}
    s.count([_Ev({"new": 1.0})])  # the cap of 1 is reached: pooled
    assert {name: int(c.sum()) for name, c, _ in s.series()} == {"b": 1, "__other__": 3}


def test_a_reload_of_the_stage_list_applies_in_place(daemon: DaemonProcess) -> None:
    daemon.send([{"model": "m", "stages": {"preprocess": 0.02, "inference": 0.2}}] * 3)
    daemon.wait_metric(f"{METRIC}_count", 3, model_name="m", stage="inference")
    cfg = yaml.safe_load(daemon.config_path.read_text())
    cfg["models"][0]["stages"] = ["inference", "postprocess"]
    daemon.config_path.write_text(yaml.safe_dump(cfg))
    daemon.proc.send_signal(signal.SIGHUP)
    m = daemon.wait_metric("drift_sidecar_config_reloads_total", 1, result="success")
    # inference keeps its counts; preprocess is pooled (no counter goes down); postprocess
    # is new, at 0; the model kept its state (its accepted events)
    assert_histogram(m, "m", "inference", [0.2] * 3)
    assert_histogram(m, "m", "__other__", [0.02] * 3)
    assert_histogram(m, "m", "postprocess", [])
    assert m.value(f"{METRIC}_count", model_name="m", stage="preprocess") is None
    assert m.value("drift_sidecar_events_accepted_total", model_name="m") == 3


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["a", "b", "c", "d", "", LONG]),
                    st.sampled_from([0.0, 0.005, 0.006, 0.1, 2.5, 10.0, 11.0, 3e9]),
                    max_size=4,
                ),
            ),
            max_size=12,
        ),
        max_size=5,
    ),
    names=st.one_of(st.none(), st.lists(st.sampled_from("abcd"), unique=True, max_size=3)),
    cap=st.integers(0, 3),
)
def test_stage_counts_equal_a_count_by_hand(
    batches: list[list[dict[str, float] | None]], names: list[str] | None, cap: int
) -> None:
    s = StageLatency(names, cap, LATENCY_BUCKETS, max_bytes=32)
    kept: list[str] = list(names) if names is not None else []
    want: dict[str, list[float]] = {}
    for batch in batches:
        s.count([_Ev(x) for x in batch])
        for stages in batch:
            for name, sec in (stages or {}).items():
                new = names is None and name and name != LONG and name not in kept
                if new and len(kept) < cap:
                    kept.append(name)  # the first names seen, up to the cap
                label = name if name in kept else "__other__"
                want.setdefault(label, []).append(sec)
    got = {name: (counts.tolist(), total) for name, counts, total in s.series()}
    edges = [*LATENCY_BUCKETS.tolist(), math.inf]
    for name in [*kept, *(["__other__"] if "__other__" in want else [])]:
        values = want.get(name, [])
        lows = [-1.0, *edges[:-1]]
        by_bucket = [
            sum(1 for v in values if lo < v <= hi) for lo, hi in zip(lows, edges, strict=True)
        ]
        assert got.pop(name) == (by_bucket, pytest.approx(sum(values))), name
    assert got == {}


class _Ev:
    def __init__(self, stages: dict[str, float] | None) -> None:
        self.stages = stages


def test_config_names_a_bad_stage_list(tmp_path: Any) -> None:
    from sidecar.config import parse_config
    from sidecar.errors import ConfigError

    model = {"name": "m", "baseline": {"capture": 10}, "stages": ["a", "a", "", "__other__"]}
    with pytest.raises(ConfigError) as err:
        parse_config({"models": [model], "limits": {"max_stages": -1}})
    text = str(err.value)
    for path in ("models[0].stages[1]", "models[0].stages[2]", "models[0].stages[3]"):
        assert path in text
    assert "models[0].stages[0]" not in text and "limits.max_stages" in text


# ------------------------------------------------------------------ client helpers


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """perf_counter of the client's timing helpers: 0, 1, 2, ... seconds, one per reading."""
    ticks = itertools.count()

    def now() -> float:
        return float(next(ticks))

    monkeypatch.setattr(client_stages, "perf_counter", now)
    monkeypatch.setattr(client_timing, "perf_counter", now)
    yield


def test_timed_stages_add_up_and_reach_the_daemon(
    clock: None, daemon_factory: Any, tmp_path: Any
) -> None:
    d = daemon_factory({"models": [{"name": "m", "baseline": {"capture": 1000}}]})
    monitor = Monitor(d.socket_path, model="m", trace_ids=False)
    try:
        for _ in range(3):
            with monitor.timed() as rec:  # reads the clock at 0
                with rec.stage("preprocess"):  # 1 .. 2
                    pass
                with monitor.stage("inference"):  # 3 .. 4: found through the context
                    pass
                with rec.stage("preprocess"):  # 5 .. 6: adds up to 2 s
                    pass
            # exit at 7: latency 7 s
            assert rec.stages == {"preprocess": 2.0, "inference": 1.0} and rec.latency_s == 7.0
        with pytest.raises(ValueError), monitor.timed() as rec, rec.stage("inference"):
            raise ValueError("the model failed")  # the stage's time is still counted
        assert rec.stages == {"inference": 1.0}
        assert client_stages.current() is None  # nothing leaks out of the block
        with monitor.stage("nowhere"):  # outside a call: times nothing, records nothing
            pass
        monitor.flush(5)
        m = d.wait_metric("drift_sidecar_events_accepted_total", 4, model_name="m")
    finally:
        monitor.close()
    assert_histogram(m, "m", "preprocess", [2.0, 2.0, 2.0])
    assert_histogram(m, "m", "inference", [1.0, 1.0, 1.0, 1.0])
    assert m.value(f"{METRIC}_count", model_name="m", stage="nowhere") is None
    assert (
        m.value("ml_prediction_requests_total", model_name="m", model_version="", status="error")
        == 1
    )


def test_track_records_the_stages_of_sync_and_async_calls(
    clock: None,
    server: NdjsonServer,  # noqa: F811
) -> None:
    monitor = Monitor(server.path, model="m", trace_ids=False)

    def helper() -> None:
        with monitor.stage("inference"):
            pass

    @monitor.track()
    def predict() -> str:
        with monitor.stage("preprocess"):
            pass
        helper()
        return "ok"

    @monitor.track()
    async def apredict() -> str:
        with monitor.stage("preprocess"):
            await asyncio.sleep(0)
        return "ok"

    @monitor.track()
    def plain() -> str:
        return "ok"

    try:
        assert predict() == "ok"
        assert asyncio.run(apredict()) == "ok"
        assert plain() == "ok"
        monitor.record_batch(predictions=[0.1, 0.2], stages={"inference": 0.25})
        monitor.record_many([{"prediction": 0.3, "stages": {"postprocess": 0.5}}])
        monitor.flush(5)
        wait_for(lambda: len(server.events) == 6, 10, "six events")
    finally:
        monitor.close()
    got = [ev.get("stages") for ev in server.events]
    assert got == [
        {"preprocess": 1.0, "inference": 1.0},
        {"preprocess": 1.0},
        None,  # no stage entered: the event carries none
        {"inference": 0.25},
        {"inference": 0.25},
        {"postprocess": 0.5},
    ]
    assert client_stages.current() is None


def test_client_drops_an_event_with_bad_stages(server: NdjsonServer) -> None:  # noqa: F811
    monitor = Monitor(server.path, model="m", trace_ids=False)
    try:
        monitor.record(stages={"a": -1.0})
        monitor.record(stages={"a": math.nan})
        monitor.record(stages=[("a", 1.0)])  # type: ignore[arg-type]
        monitor.record(stages={1: 1.0})  # type: ignore[dict-item]
        monitor.record(stages={"a": np.float32(0.5)})
        monitor.flush(5)
        wait_for(lambda: len(server.events) == 1, 10, "the one good event")
        assert monitor.stats.dropped["invalid_input"] == 4
    finally:
        monitor.close()
    assert server.events[0]["stages"] == {"a": 0.5}
