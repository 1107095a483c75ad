"""The rolling window of a model's embeddings: a float32 ring buffer, like `RollingWindow`."""

from __future__ import annotations

import numpy as np


class EmbeddingWindow:
    """The last `capacity` embeddings (rows of `dim` float32) with their receive times.

    Memory is the float32 rows plus 8 bytes a row for the time; np.zeros leaves pages
    untouched until rows arrive, so a model that sends no embedding costs nothing.
    """

    def __init__(self, capacity: int, dim: int, max_age_s: float | None = None) -> None:
        self.capacity = capacity
        self.dim = dim
        self.max_age_s = max_age_s
        self._rows = np.zeros((capacity, dim), dtype=np.float32)
        self._received = np.zeros(capacity)
        self._start = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return int(self._rows.nbytes + self._received.nbytes)

    def append(self, rows: np.ndarray, received: np.ndarray) -> None:
        n = int(rows.shape[0])
        if n == 0:
            return
        cap = self.capacity
        if n >= cap:
            rows, received, n = rows[-cap:], received[-cap:], cap
        end = (self._start + self._size) % cap
        first = min(n, cap - end)
        self._rows[end : end + first] = rows[:first]
        self._received[end : end + first] = received[:first]
        if first < n:
            self._rows[: n - first] = rows[first:]
            self._received[: n - first] = received[first:]
        overflow = max(0, self._size + n - cap)
        self._start = (self._start + overflow) % cap
        self._size = min(cap, self._size + n)

    def evict_older_than(self, now: float) -> int:
        if self.max_age_s is None or self._size == 0:
            return 0
        received = self._ordered(self._received)
        gone = int(np.searchsorted(received, now - self.max_age_s, side="left"))
        self._start = (self._start + gone) % self.capacity
        self._size -= gone
        return gone

    def _ordered(self, arr: np.ndarray) -> np.ndarray:
        end = self._start + self._size
        if end <= self.capacity:
            return arr[self._start : end].copy()
        return np.concatenate((arr[self._start :], arr[: end - self.capacity]))

    def snapshot(self) -> np.ndarray:
        """The rows in arrival order, (n, dim) float32: a copy, safe for a worker thread."""
        return self._ordered(self._rows)

    def received(self) -> np.ndarray:
        return self._ordered(self._received)
