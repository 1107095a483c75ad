"""The `predicted_class` label of events, as codes of a capped vocabulary of class labels."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from sidecar.events import Event
from sidecar.vocab import Vocab

_MAX_INDEX_TABLE = 1 << 16  # class indices below this are looked up in a table


class ClassCodes:
    """`predicted_class` codes by a vocabulary that never changes a code it has given.

    A batch's codes are lookups, vectorized over its predictions: by class index for
    numbers, by the prediction vocabulary's code for strings. Labels the vocabulary has no
    code for yet get theirs at the rows they first come in, rows in order, as event by
    event: once the vocabulary is full, that order decides which classes keep a code.
    """

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._by_index = np.empty(0, dtype=np.int64)  # class code by class index, or -1
        self._pred_vocab: Vocab | None = None
        self._by_pred = np.empty(0, dtype=np.int64)  # class code by prediction code, or -1

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
        """As `codes`, whatever holds the rows: `preds` are the tracker's prediction array
        (numbers, or codes of `pred_vocab`), and `fallback(rows)` gives the labels of the
        rows whose prediction says no class by itself (none, or a string past the
        prediction vocabulary's cap), in order."""
        n = preds.shape[0]
        if pred_vocab is not None:  # categorical: the class is the prediction itself
            named = (preds >= 0) & (preds < len(pred_vocab.values))
            codes = np.full(n, -1, dtype=np.int64)
            codes[named] = self._pred_table(pred_vocab)[preds[named]]
            rest = np.flatnonzero(~named)

            def label(i: int) -> str:
                return pred_vocab.values[int(preds[i])]

        else:
            finite = np.isfinite(preds)
            integral = finite & (np.round(preds) == preds)
            if bool(integral.all()):  # the common case: every prediction a class index
                codes = self._index_codes(preds)
                if not n or int(codes.min()) >= 0:
                    return codes
            else:
                codes = np.full(n, -1, dtype=np.int64)
                if integral.any():
                    codes[integral] = self._index_codes(preds[integral])
                none = self.vocab.peek("none")
                if none is not None:
                    codes[finite & ~integral] = none
            rest = np.flatnonzero(~finite)

            def label(i: int) -> str:
                v = float(preds[i])
                return str(int(v)) if v.is_integer() else "none"

        fallen = dict(zip(rest.tolist(), fallback(rest), strict=True)) if rest.size else {}
        for i, name in fallen.items():
            known = self.vocab.peek(name)
            if known is not None:
                codes[i] = known
        if n and int(codes.min()) < 0:
            new = codes < 0
            self._new_labels(codes, lambda i: fallen[i] if i in fallen else label(i))
            if pred_vocab is not None:  # remember the classes of these predictions
                rows = new & named
                self._by_pred[preds[rows]] = codes[rows]
        return codes

    def _new_labels(self, codes: np.ndarray, label: Callable[[int], str]) -> None:
        """Give codes to the rows that have none yet, rows in order (event by event)."""
        given: dict[str, int] = {}
        for i in np.flatnonzero(codes < 0).tolist():
            name = label(i)
            c = given.get(name)
            if c is None:
                c = given[name] = self.vocab.code(name)
            codes[i] = c

    def _pred_table(self, pred_vocab: Vocab) -> np.ndarray:
        """Class code by prediction code (-1 where the class has no code yet)."""
        if pred_vocab is not self._pred_vocab:
            self._pred_vocab = pred_vocab
            self._by_pred = np.empty(0, dtype=np.int64)
        table = self._by_pred
        if table.size < len(pred_vocab.values):  # new predictions: their classes, if known
            known = [self.vocab.peek(v) for v in pred_vocab.values[table.size :]]
            more = np.array([-1 if c is None else c for c in known], dtype=np.int64)
            table = self._by_pred = np.concatenate([table, more])
        return table

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
