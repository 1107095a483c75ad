"""The `predicted_class` label of events, as codes of a capped vocabulary of class labels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sidecar.events import Event
from sidecar.vocab import Vocab

_MAX_INDEX_TABLE = 1 << 16  # class indices below this are looked up in a table


class ClassCodes:
    """`predicted_class` codes by a vocabulary that never changes a code it has given."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._by_index = np.empty(0, dtype=np.int64)  # class code by class index, or -1

    def codes(self, events: list[Event], preds: np.ndarray, pred_vocab: Vocab | None) -> np.ndarray:
        """`predicted_class` codes per event, vectorized over the prediction array; only
        rows without a usable prediction fall back to per-event work (argmax)."""
        return self.codes_of(
            preds, pred_vocab, lambda rows: [predicted_class(events[i]) for i in rows.tolist()]
        )

    def codes_of(
        self,
        preds: np.ndarray,
        pred_vocab: Vocab | None,
        fallback: Callable[[np.ndarray], list[str]],
    ) -> np.ndarray:
        """As `codes`, whatever holds the rows: `fallback(rows)` gives the class labels of
        the rows whose prediction gives no code (from their probabilities), in order."""
        vocab = self.vocab
        n = preds.shape[0]
        if pred_vocab is not None:  # categorical: the class is the prediction itself
            pv = pred_vocab
            table = np.array([vocab.code(pv.label(c)) for c in range(pv.cap + 1)], np.int64)
            codes: np.ndarray = table[np.maximum(preds, 0)]
            rest = np.flatnonzero(preds < 0)
        else:
            codes = np.zeros(n, dtype=np.int64)
            finite = np.isfinite(preds)
            integral = finite & (preds == np.round(preds))
            if integral.any():  # class indices sent as numbers
                codes[integral] = self._index_codes(preds[integral])
            regression = finite & ~integral
            if regression.any():
                codes[regression] = vocab.code("none")
            rest = np.flatnonzero(~finite)
        if rest.size:  # no prediction: take it from the probabilities, if any
            for i, label in zip(rest.tolist(), fallback(rest), strict=True):
                codes[i] = vocab.code(label)
        return codes

    def _index_codes(self, values: np.ndarray) -> np.ndarray:
        """Codes of integral predictions: a lookup in a table by class index, filled as
        new indices appear (a vocabulary never changes a code it has given)."""
        vocab = self.vocab
        if values.min() < 0 or values.max() >= _MAX_INDEX_TABLE:
            uniq, inv = np.unique(values, return_inverse=True)
            return np.array([vocab.code(str(int(u))) for u in uniq], np.int64)[inv]
        ints = values.astype(np.int64)
        table = self._by_index
        top = int(ints.max())
        if top >= table.size:
            table = np.concatenate([table, np.full(top + 1 - table.size, -1, np.int64)])
            self._by_index = table
        codes: np.ndarray = table[ints]
        if (codes < 0).any():
            for u in np.unique(ints[codes < 0]):
                table[u] = vocab.code(str(int(u)))
            codes = table[ints]
        return codes


def predicted_class(ev: Event) -> str:
    """The `predicted_class` label: a string prediction, a class index, or the argmax."""
    p = ev.prediction
    if type(p) is str:
        return p
    if isinstance(p, float) and p.is_integer():
        return str(int(p))
    probs = ev.probabilities
    if probs:
        if isinstance(probs, dict):
            return max(probs, key=probs.__getitem__)
        return str(max(range(len(probs)), key=probs.__getitem__))
    return "none"  # a regression value is not a class: one label, not one per value
