"""Capped string-to-code vocabularies, and their codes mapped onto a baseline's categories."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sidecar.stats.bins import OTHER
from sidecar.stats.reference import CategoricalReference


class Vocab:
    """A capped string-to-code table; values past the cap share the overflow code, and so
    do values longer than `max_bytes` of UTF-8 (they would become label values)."""

    def __init__(self, cap: int, seed: Sequence[str] = (), max_bytes: int = 128) -> None:
        self.cap = cap
        self.max_bytes = max_bytes
        self.index: dict[str, int] = {}
        self.values: list[str] = []
        for s in seed:
            self.code(s)

    @property
    def overflow(self) -> int:
        return self.cap

    def code(self, value: str) -> int:
        c = self.index.get(value)
        if c is not None:
            return c
        if not self._room_for(value):
            return self.cap
        c = len(self.values)
        self.index[value] = c
        self.values.append(value)
        return c

    def peek(self, value: str) -> int | None:
        """The code `code(value)` would return, when it would not give a new one (None
        when it would)."""
        c = self.index.get(value)
        if c is not None:
            return c
        return None if self._room_for(value) else self.cap

    def _room_for(self, value: str) -> bool:
        """Whether a value not yet coded would get a code of its own: the vocabulary is not
        full and the value is not too long to be a label (never indexed: each sighting of
        such a value pays this check, but only these)."""
        if len(self.values) >= self.cap:
            return False
        return not (len(value) * 4 > self.max_bytes and len(value.encode()) > self.max_bytes)

    def label(self, code: int) -> str:
        return self.values[code] if code < len(self.values) else OTHER


def vocab_to_ref(vocab: Vocab, ref: CategoricalReference) -> np.ndarray:
    """Lookup from vocabulary code (incl. overflow) to the reference's category code."""
    labels = [*vocab.values, OTHER]
    codes = np.asarray(ref.codes(labels), dtype=np.int32)
    table = np.full(vocab.cap + 1, len(ref.categories), dtype=np.int32)
    table[: len(vocab.values)] = codes[:-1]
    return table


def vocab_to_test(vocab: Vocab, ref: CategoricalReference) -> tuple[np.ndarray, tuple[str, ...]]:
    """Lookup from vocabulary code to the code a drift check tests, and the labels of
    the codes past `__other__`.

    As `vocab_to_ref`, except that the reference's tail categories, then each live
    category the reference never saw, get codes of their own after `__other__`
    (len(categories) + 1, + 2, ...): the two-sample tests need them as columns. When
    the reference had more categories than it counts one by one, a live category
    outside them may be one of those, so it stays in `__other__`; so do values past
    the vocabulary's cap."""
    table = vocab_to_ref(vocab, ref)
    other = len(ref.categories)
    tail = {c: i for i, c in enumerate(ref.tail)}
    labels = list(ref.tail)
    for i in np.flatnonzero(table[: len(vocab.values)] == other).tolist():
        t = tail.get(vocab.values[i])
        if t is not None:
            table[i] = other + 1 + t
        elif not ref.overflowed:
            table[i] = other + 1 + len(labels)
            labels.append(vocab.values[i])
    return table, tuple(labels)


def recode(counts: np.ndarray, table: np.ndarray, size: int) -> np.ndarray:
    """Counts per vocabulary code as counts per test code (see `vocab_to_test`)."""
    return np.bincount(table, weights=counts, minlength=size)[:size].astype(np.int64)
