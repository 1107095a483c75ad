"""Count- and age-bounded rolling windows of numpy columns, one per model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowSnapshot:
    """The window's rows in arrival order (copies: safe to hand to a worker thread)."""

    numeric: np.ndarray  # (n, n_numeric) float64, NaN = missing; column-major
    categorical: np.ndarray  # (n, n_categorical) int32 vocabulary codes, -1 = missing
    predictions: np.ndarray  # (n,) float64 (numeric) or int32 codes (categorical)
    confidence: np.ndarray  # (n,) float64, NaN = absent
    received: np.ndarray  # (n,) float64 receive time, Unix seconds

    @property
    def size(self) -> int:
        return int(self.received.shape[0])


class RingBuffer:
    """The ring-buffer bookkeeping shared by the windows: the newest `capacity` rows of
    some parallel columns, with their receive times for age-based eviction."""

    def __init__(self, capacity: int, max_age_s: float | None) -> None:
        self.capacity = capacity
        self.max_age_s = max_age_s
        self._received = np.zeros(capacity)
        self._start = 0  # index of the oldest row
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _write(self, columns: list[tuple[np.ndarray, np.ndarray]], n: int) -> None:
        """Append `n` rows: each (destination, source) pair gets the source's rows; only
        the newest `capacity` rows can survive."""
        if n == 0:
            return
        cap = self.capacity
        if n >= cap:
            columns = [(dst, src[-cap:]) for dst, src in columns]
            n = cap
        end = (self._start + self._size) % cap
        first = min(n, cap - end)
        for dst, src in columns:
            dst[end : end + first] = src[:first]
            if first < n:
                dst[: n - first] = src[first:]
        overflow = max(0, self._size + n - cap)
        self._start = (self._start + overflow) % cap
        self._size = min(cap, self._size + n)

    def evict_older_than(self, now: float) -> int:
        """Drop rows received before now - max_age_s; returns how many went."""
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
            return arr[self._start : end].copy(order="K")  # the layout it is kept in
        return np.concatenate((arr[self._start :], arr[: end - self.capacity]))


class RollingWindow(RingBuffer):
    """A ring buffer of the last `capacity` events; appends are vectorized per batch."""

    def __init__(
        self,
        capacity: int,
        n_numeric: int,
        n_categorical: int,
        categorical_prediction: bool = False,
        max_age_s: float | None = None,
    ) -> None:
        super().__init__(capacity, max_age_s)
        # Column-major: a feature's values lie together, as they arrive from Arrow frames
        # (whole columns) and as the drift checks read them; appending a batch is then a
        # copy of each column rather than a transposition.
        self._numeric = np.full((n_numeric, capacity), np.nan).T
        self._categorical = np.full((capacity, n_categorical), -1, dtype=np.int32)
        pred_dtype = np.int32 if categorical_prediction else np.float64
        self._pred = np.full(capacity, -1 if categorical_prediction else np.nan, dtype=pred_dtype)
        self._conf = np.full(capacity, np.nan)

    def append(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        predictions: np.ndarray,
        confidence: np.ndarray,
        received: np.ndarray,
    ) -> None:
        self._write(
            [
                (self._numeric, numeric),
                (self._categorical, categorical),
                (self._pred, predictions),
                (self._conf, confidence),
                (self._received, received),
            ],
            received.shape[0],
        )

    def snapshot(self) -> WindowSnapshot:
        return WindowSnapshot(
            numeric=self._ordered(self._numeric),  # column-major, as kept
            categorical=self._ordered(self._categorical),
            predictions=self._ordered(self._pred),
            confidence=self._ordered(self._conf),
            received=self._ordered(self._received),
        )

    def restore(self, snap: WindowSnapshot) -> None:
        """Refill from a snapshot (state restore): the rows as if appended in order."""
        self._start = 0
        self._size = 0
        self.append(
            snap.numeric, snap.categorical, snap.predictions, snap.confidence, snap.received
        )
