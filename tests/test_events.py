"""Protocol v1 decoding: valid events survive any batching, bad ones are rejected alone."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.events import MAX_ABS_VALUE, MAX_TS, decode_body, decode_lines

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
finite = st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE, width=64)
too_big = st.floats(MAX_ABS_VALUE, allow_infinity=False, exclude_min=True) | st.floats(
    max_value=-MAX_ABS_VALUE, allow_infinity=False, exclude_max=True
)
feature_value = st.one_of(finite, st.integers(-(2**53), 2**53), names, st.booleans(), st.none())
valid_event = st.fixed_dictionaries(
    {"model": names},
    optional={
        "version": names,
        "features": st.dictionaries(names, feature_value, max_size=6),
        "prediction": st.one_of(finite, names),
        "probabilities": st.one_of(
            st.lists(st.floats(0, 1), max_size=4),
            st.dictionaries(names, st.floats(0, 1), max_size=4),
        ),
        "confidence": st.floats(0, 1),
        "latency_s": st.floats(0, 1e6),
        "status": st.sampled_from(["success", "error"]),
        "ts": st.floats(0, MAX_TS),
        "id": names,
        "trace_id": st.from_regex(r"\A[0-9a-f]{32}\Z"),
        "unknown_field": st.integers(),
    },
)
invalid_event = st.one_of(
    st.fixed_dictionaries({"model": st.integers()}),
    st.fixed_dictionaries({"features": st.dictionaries(names, finite, max_size=2)}),
    st.fixed_dictionaries({"model": names, "confidence": st.floats(1.01, 100)}),
    st.fixed_dictionaries({"model": names, "latency_s": st.floats(-100, -0.01)}),
    st.fixed_dictionaries(
        {"model": names, "status": names.filter(lambda s: s not in ("success", "error"))}
    ),
    st.fixed_dictionaries({"model": names, "trace_id": st.just("xyz")}),
    st.fixed_dictionaries({"model": names, "features": st.just({"a": [1, 2]})}),
    st.fixed_dictionaries(
        {"model": names, "features": st.dictionaries(names, too_big, min_size=1, max_size=2)}
    ),
    st.fixed_dictionaries({"model": names, "prediction": too_big}),
    st.fixed_dictionaries(
        {
            "model": names,
            "ts": st.floats(-1e300, -1e-9) | st.floats(MAX_TS, 1e300, exclude_min=True),
        }
    ),
    st.fixed_dictionaries(
        {"model": names, "probabilities": st.lists(st.floats(1.01, 1e6), min_size=1, max_size=3)}
    ),
    st.fixed_dictionaries({"model": names, "latency_s": st.just("0.1")}),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.lists(st.tuples(st.booleans(), valid_event | invalid_event), max_size=5),
        ),
        max_size=8,
    )
)
def test_good_events_are_kept_in_order_and_bad_ones_rejected_alone(lines_spec):
    lines, expected_models, expected_bad = [], [], 0
    for as_batch, items in lines_spec:
        evs = [ev for _, ev in items]
        if as_batch:
            lines.append(json.dumps(evs).encode())
        else:
            lines.extend(json.dumps(ev).encode() for ev in evs)
        for ev in evs:
            if _valid(ev):
                expected_models.append(ev["model"])
            else:
                expected_bad += 1
    out = decode_lines(lines, max_batch_events=100)
    assert [e.model for e in out.events] == expected_models
    assert len(out.rejections) == expected_bad


def _valid(ev: dict) -> bool:
    if not isinstance(ev.get("model"), str):
        return False
    if ev.get("features") == {"a": [1, 2]}:
        return False
    c = ev.get("confidence")
    if c is not None and not 0 <= c <= 1:
        return False
    lat = ev.get("latency_s")
    if lat is not None and (not isinstance(lat, float | int) or lat < 0):
        return False
    if "status" in ev and ev["status"] not in ("success", "error"):
        return False
    ts = ev.get("ts")
    if ts is not None and not 0 <= ts <= MAX_TS:
        return False
    numbers = [
        v
        for v in (ev.get("features") or {}).values()
        if isinstance(v, float) and not isinstance(v, bool)
    ]
    if isinstance(ev.get("prediction"), float):
        numbers.append(ev["prediction"])
    if any(abs(v) > MAX_ABS_VALUE for v in numbers):
        return False
    probs = ev.get("probabilities") or []
    if any(not 0 <= p <= 1 for p in (probs.values() if isinstance(probs, dict) else probs)):
        return False
    return not ("trace_id" in ev and ev["trace_id"] == "xyz")


@given(st.lists(valid_event, min_size=1, max_size=20))
def test_fields_round_trip(evs):
    out = decode_body("\n".join(json.dumps(e) for e in evs).encode(), 100)
    assert not out.rejections
    for got, sent in zip(out.events, evs, strict=True):
        assert got.model == sent["model"]
        assert got.features == sent.get("features")
        assert got.status == sent.get("status", "success")
        assert got.trace_id == sent.get("trace_id")


def test_rejection_reasons():
    lines = [
        b"{nope",
        b'{"features": {}}',
        b'{"model": 1}',
        b'{"model": "m", "confidence": 1.5}',
        b'{"model": "m", "status": "maybe"}',
        b'{"model": "m", "trace_id": "not-hex"}',
        b'[{"model": "m"}, {"model": "m"}, {"model": "m"}]',
    ]
    out = decode_lines(lines, max_batch_events=2)
    assert [r.reason for r in out.rejections] == [
        "invalid_json",
        "missing_field",
        "wrong_type",
        "out_of_range",
        "invalid_value",
        "invalid_value",
        "batch_too_large",
    ]
    assert out.events == []


def test_one_bad_element_of_a_batch_costs_only_itself():
    line = json.dumps(
        [{"model": "a"}, {"model": 3}, {"model": "b", "confidence": 9}, {"model": "c"}]
    ).encode()
    out = decode_lines([line], 100)
    assert [e.model for e in out.events] == ["a", "c"]
    assert [r.reason for r in out.rejections] == ["wrong_type", "out_of_range"]


def test_python_json_nan_and_infinity_tokens_become_missing_values():
    line = json.dumps({"model": "m", "features": {"a": float("nan"), "b": float("inf")}})
    assert "NaN" in line
    out = decode_lines([line.encode(), b'{"model": "m", "features": {"c": 1e999}}'], 10)
    assert out.events[0].features == {"a": None, "b": None}
    # A literal beyond the range of a double is not a token of Python's: out of range.
    assert [r.reason for r in out.rejections] == ["out_of_range"]


def test_blank_lines_and_duplicate_keys():
    out = decode_lines([b"", b"   ", b'{"model": "a", "model": "b"}'], 10)
    assert [e.model for e in out.events] == ["b"]  # last one wins, as in most JSON parsers
    assert not out.rejections
