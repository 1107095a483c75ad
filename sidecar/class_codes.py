"""The `predicted_class` label of events, as codes of a capped vocabulary of class labels."""

from __future__ import annotations

import math
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
        the rows that have no prediction (from their probabilities), in order."""
        vocab = self.vocab
        if pred_vocab is not None:  # categorical: the class is the prediction itself
            pv = pred_vocab
            table = np.array([vocab.code(pv.label(c)) for c in range(pv.cap + 1)], np.int64)
            codes: np.ndarray = table[np.maximum(preds, 0)]
            rest = np.flatnonzero(preds < 0)
        else:
            return self._numeric_codes(preds, fallback)
        if rest.size:  # no prediction: take it from the probabilities, if any
            for i, label in zip(rest.tolist(), fallback(rest), strict=True):
                codes[i] = vocab.code(label)
        return codes

    def _numeric_codes(
        self,
        preds: np.ndarray,
        fallback: Callable[[np.ndarray], list[str]],
    ) -> np.ndarray:
        """Codes of numeric predictions: a class index is its own label, any other number
        "none", and a missing one takes the fallback's label (`predicted_class`). Labels
        new to the vocabulary get their codes in the order their rows come, as event by
        event (which matters once the vocabulary is full: the later ones share the
        overflow code)."""
        vocab = self.vocab
        n = preds.shape[0]
        finite = np.isfinite(preds)
        integral = finite & (np.round(preds) == preds)
        every_index = bool(integral.all())
        codes = np.full(n, -1, dtype=np.int64)
        if every_index:  # the common case: every prediction a class index
            codes = self._index_codes(preds)
            if n and int(codes.min()) >= 0:
                return codes
        elif integral.any():
            codes[integral] = self._index_codes(preds[integral])
        regression = finite & ~integral
        none = vocab.peek("none")
        if none is not None:
            codes[regression] = none
        rest = np.flatnonzero(~finite)
        rest_labels = fallback(rest) if rest.size else []
        for i, label in zip(rest.tolist(), rest_labels, strict=True):
            known = vocab.peek(label)
            if known is not None:
                codes[i] = known
        if int(codes.min(initial=0)) >= 0:
            return codes
        # New labels: each gets its code at its first row, rows in order.
        label_of = dict(zip(rest.tolist(), rest_labels, strict=True))
        first: dict[str, int] = {}
        for i in np.flatnonzero(codes < 0).tolist():
            if integral[i]:
                label = str(int(preds[i]))
            elif regression[i]:
                label = "none"
            else:
                label = label_of[i]
            first.setdefault(label, i)
        for label in sorted(first, key=first.__getitem__):
            vocab.code(label)
        if integral.any():
            self._remember(preds[integral])
            codes[integral] = self._index_codes(preds[integral])
        if regression.any():
            codes[regression] = vocab.code("none")
        for i, label in label_of.items():
            codes[i] = vocab.code(label)
        return codes

    def _index_codes(self, values: np.ndarray) -> np.ndarray:
        """Codes of integral predictions, -1 for an index the vocabulary has no code for
        yet: a lookup in a table by class index (a vocabulary never changes a code)."""
        vocab = self.vocab
        if not values.size:
            return np.zeros(0, dtype=np.int64)
        if values.min() < 0 or values.max() >= _MAX_INDEX_TABLE:
            uniq, inv = np.unique(values, return_inverse=True)
            known = [vocab.peek(str(int(u))) for u in uniq]
            return np.array([-1 if c is None else c for c in known], np.int64)[inv]
        ints = values.astype(np.int64)
        table = self._by_index
        top = int(ints.max())
        if top >= table.size:
            table = np.concatenate([table, np.full(top + 1 - table.size, -1, np.int64)])
            self._by_index = table
        codes: np.ndarray = table[ints]
        if (codes < 0).any():
            for u in np.unique(ints[codes < 0]).tolist():
                c = vocab.peek(str(u))
                if c is not None:
                    table[u] = c
            codes = table[ints]
        return codes

    def _remember(self, values: np.ndarray) -> None:
        """Fill the index table for these class indices, now that their labels have codes."""
        self._index_codes(values)


def predicted_class(ev: Event) -> str:
    """The `predicted_class` label: a string prediction, a class index, "none" for another
    number, or without a prediction the argmax of the probabilities."""
    p = ev.prediction
    if type(p) is str:
        return p
    if isinstance(p, float) and math.isfinite(p):
        # a class index, or a number that is no class (a regression value, a score):
        # one label for all of those, not one per value
        return str(int(p)) if p.is_integer() else "none"
    probs = ev.probabilities
    if probs:
        if isinstance(probs, dict):
            return max(probs, key=probs.__getitem__)
        return str(max(range(len(probs)), key=probs.__getitem__))
    return "none"  # neither a prediction nor probabilities
