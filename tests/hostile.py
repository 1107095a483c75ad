"""Hostile events: the inputs that once broke `/metrics` or stopped the daemon, and hypothesis
strategies that vary them. Shared by the fuzz properties and the tests of the real daemon.

`render` writes JSON with raw tokens where a `Tok` stands, since `json.dumps` cannot write
`1e400` and writes NaN only one way.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

from sidecar.events import MAX_ABS_VALUE, MAX_TS

TRACE = "ab" * 16


class Tok:
    """A raw JSON token put where a value goes."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return f"Tok({self.raw[:20]!r})"


NON_FINITE = [Tok(b"NaN"), Tok(b"Infinity"), Tok(b"-Infinity")]
"""What Python's json.dumps writes for nan and inf: each reads as null."""
HUGE = [
    Tok(b"1e400"),
    Tok(b"-1e999"),
    Tok(b"1" + b"0" * 400),
    Tok(b"1e308"),
    Tok(b"-1e308"),
    Tok(b"1.7976931348623157e308"),
    Tok(b"1e101"),
]
"""Numbers beyond MAX_ABS_VALUE (or a double): out_of_range where a number is expected."""


def render(obj: Any) -> bytes:
    """JSON of `obj`, each `Tok` written as its raw bytes."""
    toks: list[bytes] = []

    def sub(o: Any) -> Any:
        if isinstance(o, Tok):
            toks.append(o.raw)
            return f"\x00tok{len(toks) - 1}\x00"
        if isinstance(o, dict):
            return {k: sub(v) for k, v in o.items()}
        if isinstance(o, list):
            return [sub(v) for v in o]
        return o

    text = json.dumps(sub(obj)).encode()
    for i, raw in enumerate(toks):
        text = text.replace(json.dumps(f"\x00tok{i}\x00").encode(), raw, 1)
    return text


# ------------------------------------------------------------------ class 1, one by one
def class1_lines(model: str, auto_model: str) -> list[tuple[bytes, str | None]]:
    """(line, expected verdict: a rejection reason, or None when accepted), for a configured
    `model` (features amount, age: numeric; country: categorical; numeric prediction) and a
    model name that auto-registration will take."""
    nan, inf, ninf = NON_FINITE

    def ev(**kw: Any) -> dict[str, Any]:
        return {
            "model": model,
            "features": {"amount": 0.5, "age": 40.0, "country": "de"},
            "prediction": 0.25,
            "latency_s": 0.02,
            **kw,
        }

    out: list[tuple[bytes, str | None]] = [
        # A lone surrogate: invalid whether or not the line also holds NaN.
        (render(ev(id="\udfff")), "invalid_json"),
        (render(ev(id="\udfff", features={"amount": nan})), "invalid_json"),
        (render({"model": "\udfff" + auto_model, "features": {"x": nan}}), "invalid_json"),
        (render(ev(features={"country": "\udfff", "amount": inf})), "invalid_json"),
        (render(ev(prediction="\ud800", latency_s=nan)), "invalid_json"),
        # Exemplar timestamps: a token reads as no `ts` (receive time); a huge one is refused.
        (render(ev(trace_id=TRACE, ts=nan)), None),
        (render(ev(trace_id=TRACE, ts=ninf)), None),
        (render(ev(trace_id=TRACE, ts=inf)), None),
        (render(ev(trace_id=TRACE, ts=Tok(b"1e400"))), "out_of_range"),
        (render(ev(trace_id=TRACE, ts=-5.0)), "out_of_range"),
        (render(ev(trace_id=TRACE, ts=1.7e12)), "out_of_range"),  # milliseconds
        # Magnitudes that would leave a sum at +Inf.
        (render(ev(features={"amount": Tok(b"1e308")})), "out_of_range"),
        (render(ev(features={"amount": Tok(b"-1e308")})), "out_of_range"),
        (render(ev(latency_s=Tok(b"1e308"))), "out_of_range"),
        (render(ev(prediction=Tok(b"-1e308"))), "out_of_range"),
        (render(ev(features={"amount": Tok(b"1e400")})), "out_of_range"),
        # Numeric strings for numeric features: the model, not the decoder, judges them.
        (render(ev(features={"amount": "1e308", "age": "12.5"})), "out_of_range"),
        (render(ev(features={"amount": "-1e101"})), "out_of_range"),
        # Strings where numbers go, with NaN elsewhere on the line or not.
        (render(ev(latency_s="0.5", features={"amount": nan})), "wrong_type"),
        (render(ev(latency_s="0.5")), "wrong_type"),
        (render(ev(confidence="0.5", features={"age": nan})), "wrong_type"),
        (render(ev(ts="1700000000", prediction=nan)), "wrong_type"),
        (
            render([ev(latency_s="0.5"), {"model": model, "features": {"amount": nan}}]),
            "wrong_type",
        ),  # and the second event of the batch is accepted
        # Probabilities outside [0, 1]: no confidence of 7.5 or -2.
        (render(ev(probabilities=[7.5, 0.1])), "out_of_range"),
        (render(ev(probabilities={"a": -2.0, "b": 0.5})), "out_of_range"),
        (render(ev(probabilities=[0.2, nan])), "wrong_type"),
        # Negative values: valid, and they must not make the OpenMetrics output invalid.
        (
            render(ev(features={"amount": -3.0, "age": -1.0, "country": "fr"}, prediction=-2.5)),
            None,
        ),
        # Auto-registration: a feature named like a baseline column, and a NaN value.
        (
            render(
                {
                    "model": auto_model,
                    "version": "1",
                    "features": {
                        "prediction": 1.0,
                        "confidence": 0.5,
                        "": 1.0,
                        "x": 0.5,
                        "y": nan,
                        "c": "k",
                    },
                    "prediction": "yes",
                    "probabilities": {"yes": 0.9, "no": 0.1},
                }
            ),
            None,
        ),
    ]
    return out


def judged_by_the_model(line: bytes) -> bool:
    """Lines the decoder accepts and the model's tracker rejects (numeric strings)."""
    return b'"amount": "' in line


def class1_expected(lines: list[tuple[bytes, str | None]]) -> tuple[int, dict[str, int]]:
    """Accepted events and rejections by reason that `class1_lines` must give."""
    accepted, rejected = 0, {}
    for line, reason in lines:
        if reason is None:
            accepted += 1
            continue
        rejected[reason] = rejected.get(reason, 0) + 1
        if line.startswith(b"["):
            accepted += 1  # the good neighbour of the batch
    return accepted, rejected


# ------------------------------------------------------------------ strategies
def _text(max_size: int = 8) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size)  # lone surrogates included: json.dumps escapes them


label_like = st.one_of(
    _text(),
    st.sampled_from(
        [
            "a\nb",
            'q"uote',
            "back\\slash",
            "tab\tcr\r",
            "nul\x00",
            "é€😀",
            "__other__",
            "le",
            "prediction",
            "",
        ]
    ),
    st.integers(200, 3_000).map(lambda n: "L" * n),  # longer than max_label_bytes
)
numbers = st.one_of(
    st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE),
    st.integers(-(2**53), 2**53),
    st.floats(-1.0, 1.0),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 5e-324]),
)
hostile_numbers = st.one_of(
    numbers, st.sampled_from(NON_FINITE + HUGE), st.floats(allow_nan=False, allow_infinity=False)
)
numeric_strings = st.one_of(
    st.sampled_from(["1e308", "-1e200", "1e101", "12.5", "-3", "inf", "-inf", "NaN", "1e400"]),
    st.floats(allow_nan=False).map(repr),
)
any_value = st.one_of(
    hostile_numbers,
    label_like,
    st.booleans(),
    st.none(),
    st.lists(hostile_numbers, max_size=3),
    st.dictionaries(label_like, hostile_numbers, max_size=3),
    numbers.map(str),
)


def hostile_event(models: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Events for `models` (or odd names) whose every field may be hostile."""
    model = st.one_of(st.sampled_from(models), label_like)
    feature_values = st.dictionaries(
        st.one_of(
            st.sampled_from(["amount", "age", "country", "x", "c", "prediction"]), label_like
        ),
        st.one_of(hostile_numbers, label_like, st.booleans(), st.none(), numeric_strings),
        max_size=5,
    )
    return st.fixed_dictionaries(
        {"model": model},
        optional={
            "version": st.one_of(label_like, any_value),
            "features": st.one_of(feature_values, any_value),
            "prediction": st.one_of(hostile_numbers, label_like, any_value),
            "probabilities": st.one_of(
                st.lists(st.one_of(st.floats(0, 1), hostile_numbers), max_size=4),
                st.dictionaries(
                    label_like, st.one_of(st.floats(0, 1), hostile_numbers), max_size=4
                ),
                any_value,
            ),
            "confidence": st.one_of(st.floats(0, 1), hostile_numbers, any_value),
            "latency_s": st.one_of(st.floats(0, 10), hostile_numbers, any_value),
            "status": st.sampled_from(["success", "error", "maybe"]),
            "ts": st.one_of(st.floats(0, MAX_TS), hostile_numbers, any_value),
            "trace_id": st.one_of(
                st.just(TRACE),
                st.text("0123456789abcdefABCDEF", min_size=32, max_size=32),
                label_like,
            ),
            "id": label_like,
            "kind": st.sampled_from(["prediction", "stats", "other"]),
            "model_memory_bytes": st.one_of(st.integers(0, 2**70), hostile_numbers),
            "extra": any_value,
        },
    )


def good_event(models: list[str], categorical: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Plain valid events, so that captures complete and drift checks have data."""
    return st.fixed_dictionaries(
        {
            "model": st.sampled_from(models),
            "features": st.fixed_dictionaries(
                {
                    "amount": st.floats(-5, 5),
                    "age": st.floats(18, 90),
                    "country": st.sampled_from(["de", "fr", "it"]),
                    "x": st.floats(-1, 1),
                    "c": st.sampled_from(["k", "l"]),
                }
            ),
            "prediction": st.sampled_from(["yes", "no"]) if categorical else st.floats(-2, 2),
            "latency_s": st.floats(0, 2),
            "trace_id": st.just(TRACE),
            "ts": st.floats(1.6e9, 1.8e9),
        }
    )


def finite_or_none(x: float | None) -> bool:
    return x is None or math.isfinite(x)
