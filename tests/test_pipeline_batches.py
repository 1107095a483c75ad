"""However events are grouped into lines and steps, the pipeline ends in the same state.

The same events, good and bad, go to two pipelines: one gets them all in one step (large
batches, the fast paths: struct-packed features, one pass per field), the other one event
per step (batches of one, where one odd value sends only its own event down the general
path). Every series on /metrics, the rejections by reason and the accepted count must be
the same; only sums may differ in their last bits, as float sums do in another order.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.config import parse_config
from sidecar.events import decode_lines
from sidecar.health import Health
from sidecar.label_metrics import LabelCollector
from sidecar.metrics import SidecarCollector
from sidecar.pipeline import Pipeline

CONFIG = {
    "models": [
        {
            "name": "m",
            "version": "1",
            "baseline": {"capture": 10**9},
            "features": [
                {"name": "a"},
                {"name": "b", "buckets": [-1, 0, 1]},
                {"name": "c", "type": "categorical"},
            ],
            "prediction": {"type": "numeric"},
        },
        {
            "name": "k",
            "baseline": {"capture": 10**9},
            "features": [{"name": "x"}, {"name": "y"}],
            "prediction": {"type": "categorical"},
            "max_classes": 10,
            "stages": ["pre", "infer"],
        },
    ],
    "socket": {"max_features_per_event": 4},
}
NOW = 1_000_000.0

dyadic = st.integers(-(2**12), 2**12).map(lambda i: i / 8)  # sums exact in any order
feature_value = st.one_of(
    dyadic,
    dyadic,
    dyadic,
    st.none(),
    st.booleans(),
    st.sampled_from(["1.5", "abc", "", "1e400", "nan", "-inf"]),
    st.sampled_from([1e100, -1e100, 1e300, float("nan"), float("inf")]),
)


@st.composite
def prediction_event(draw: st.DrawFn, i: int, has: dict[str, bool]) -> dict[str, Any]:
    model = draw(st.sampled_from(["m", "m", "k", "k", "ghost"]))
    names = ["a", "b", "c"] if model == "m" else ["x", "y"]
    keys = [n for n in names if draw(st.integers(0, 8))]
    keys += draw(st.lists(st.sampled_from(["zz", "q", "w"]), max_size=3, unique=True))
    ev: dict[str, Any] = {"model": model}
    if draw(st.integers(0, 15)):
        feats = {k: draw(feature_value) for k in draw(st.permutations(keys))}
        if "c" in feats and draw(st.booleans()):
            feats["c"] = draw(st.sampled_from(["red", "green", None]))
        ev["features"] = feats
    if draw(st.integers(0, 5)):
        ev["prediction"] = (
            draw(st.sampled_from(["cat", "dog", "eel", "fox", 1.0]))
            if model == "k"
            else draw(st.sampled_from([0.5, 1.0, 2.0, -0.25, 1e100, "text"]))
        )
    # Some events have a confidence, some probabilities, some both and some neither: an
    # event gives its class a code only where its own fields need one, whatever else its
    # batch holds.
    if draw(st.booleans()):
        ev["confidence"] = draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
    if draw(st.integers(0, 3)) == 0:
        ev["probabilities"] = draw(
            st.sampled_from([{"cat": 0.25, "dog": 0.75}, [0.5, 0.5], [0.125, 0.75, 0.125]])
        )
    if draw(st.integers(0, 5)):
        ev["latency_s"] = draw(st.sampled_from([0.001, 0.02, 0.25, 3.0, 60.0]))
    if draw(st.integers(0, 4)) == 0:
        ev["status"] = "error"
    # Each optional field is in none of a stream's events, or in some: a batch without
    # any takes shortcuts of its own.
    if has["version"] and draw(st.integers(0, 4)) == 0:
        ev["version"] = draw(st.sampled_from(["1", "2", "3"]))
    if has["trace_id"] and draw(st.integers(0, 4)) == 0:
        ev["trace_id"] = f"{i:032x}"
    if has["id"] and draw(st.integers(0, 3)) == 0:
        ev["id"] = f"req-{i}"
    if has["stages"] and draw(st.integers(0, 5)) == 0:
        ev["stages"] = {draw(st.sampled_from(["pre", "infer", "post"])): 0.125}
    if draw(st.integers(0, 10)) == 0:
        ev["latency_s"] = -1  # out_of_range
    return ev


@st.composite
def event_stream(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Predictions and stats events, then labels of some of the predictions. (A label
    before a prediction of the same step is scored after it, one step later it is not:
    that order is the pipeline's rule, the same on every path, and not what this tests.)"""
    out: list[dict[str, Any]] = []
    has = {f: draw(st.booleans()) for f in ("version", "trace_id", "id", "stages")}
    for i in range(draw(st.integers(1, 40))):
        if draw(st.integers(0, 12)) == 0:
            out.append({"model": draw(st.sampled_from(["m", "k"])), "kind": "stats"})
        else:
            out.append(draw(prediction_event(i, has)))
    ids = [e for e in out if "id" in e and e["model"] != "ghost"]
    for pred in draw(st.lists(st.sampled_from(ids), max_size=5)) if ids else []:
        label = draw(st.sampled_from(["cat", "dog"])) if pred["model"] == "k" else 0.5
        out.append({"model": pred["model"], "kind": "label", "id": pred["id"], "label": label})
    return out


def _lines(events: list[dict[str, Any]], cuts: list[int]) -> list[bytes]:
    """The events as lines: a batch between each two cuts, a lone object for a cut of one."""
    lines, start = [], 0
    for end in [*sorted(set(cuts)), len(events)]:
        group = events[start:end]
        if len(group) == 1:
            lines.append(json.dumps(group[0]).encode())
        elif group:
            lines.append(json.dumps(group).encode())
        start = max(start, end)
    return lines


def _pipeline() -> tuple[Pipeline, CollectorRegistry]:
    pipe = Pipeline(parse_config(CONFIG), Health())
    reg = CollectorRegistry(auto_describe=False)
    trackers = lambda: list(pipe.trackers.values())  # noqa: E731
    reg.register(SidecarCollector(trackers, pipe.health))
    reg.register(LabelCollector(trackers, pipe.labels))
    return pipe, reg


def _samples(reg: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = (s.value, s.exemplar)
    return out


@settings(max_examples=150, deadline=None)
@given(event_stream(), st.lists(st.integers(0, 40), max_size=6))
def test_one_step_of_batches_equals_one_event_per_step(
    events: list[dict[str, Any]], cuts: list[int]
) -> None:
    batched, reg_b = _pipeline()
    accepted_b = batched.handle(decode_lines(_lines(events, cuts), 1000), "socket", now=NOW)

    single, reg_s = _pipeline()
    accepted_s = 0
    for ev in events:
        accepted_s += single.handle(
            decode_lines([json.dumps(ev).encode()], 1000), "socket", now=NOW
        )

    assert accepted_b == accepted_s
    assert batched.health.rejected == single.health.rejected
    assert batched.health.received == single.health.received
    got, want = _samples(reg_b), _samples(reg_s)
    assert got.keys() == want.keys()
    for key, (value, exemplar) in want.items():
        if key[0].endswith("_sum"):
            assert math.isclose(got[key][0], value, rel_tol=1e-12, abs_tol=1e-300), key
        else:
            assert got[key][0] == value or (math.isnan(value) and math.isnan(got[key][0])), key
        assert got[key][1] == exemplar, key
    for name in ("m", "k"):
        tb, ts = batched.trackers[name], single.trackers[name]
        assert tb.accepted == ts.accepted
        assert tb.unknown_features == ts.unknown_features
        a, b = tb.window.snapshot(), ts.window.snapshot()
        assert (a.numeric.tobytes(), a.categorical.tobytes(), a.predictions.tobytes()) == (
            b.numeric.tobytes(),
            b.categorical.tobytes(),
            b.predictions.tobytes(),
        )
