"""Class codes, vectorized over a batch's predictions, equal `predicted_class` event by
event, in the same vocabulary order, whichever mix of predictions a batch holds."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.class_codes import ClassCodes, predicted_class
from sidecar.events import Event
from sidecar.vocab import Vocab

predictions = st.one_of(
    st.integers(0, 12).map(float),  # class indices, the common case
    st.integers(-3, -1).map(float),
    st.sampled_from([70_000.0, 1e300, -0.0]),
    st.floats(-5, 5, allow_nan=False),  # regression values
    st.just(math.nan),  # no prediction: from the probabilities, if any
)
probabilities = st.one_of(st.none(), st.lists(st.floats(0, 1), min_size=1, max_size=4))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.tuples(predictions, probabilities), max_size=40), min_size=1, max_size=4),
    st.integers(1, 20),
)
def test_batch_codes_equal_event_by_event(
    batches: list[list[tuple[float, list[float] | None]]], cap: int
) -> None:
    fast = ClassCodes(Vocab(cap))
    slow = Vocab(cap)
    for batch in batches:
        events = [
            Event(model="m", prediction=None if math.isnan(p) else p, probabilities=pr)
            for p, pr in batch
        ]
        preds = np.array([p for p, _ in batch], dtype=np.float64)
        got = fast.codes(events, preds, None)
        assert got.tolist() == [slow.code(predicted_class(ev)) for ev in events]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.one_of(st.none(), st.sampled_from("abcdefg")), probabilities),
            max_size=30,
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 8),
    st.integers(1, 8),
)
def test_categorical_batch_codes_equal_event_by_event(
    batches: list[list[tuple[str | None, list[float] | None]]], cap: int, pred_cap: int
) -> None:
    """String predictions, coded first by the model's prediction vocabulary (as the
    tracker does, which may be full), then as classes."""
    fast = ClassCodes(Vocab(cap))
    slow = Vocab(cap)
    pred_vocab = Vocab(pred_cap)
    for batch in batches:
        events = [Event(model="m", prediction=p, probabilities=pr) for p, pr in batch]
        preds = np.array([-1 if p is None else pred_vocab.code(p) for p, _ in batch], np.int32)
        got = fast.codes(events, preds, pred_vocab)
        assert got.tolist() == [slow.code(predicted_class(ev)) for ev in events]
