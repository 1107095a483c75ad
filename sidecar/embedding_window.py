"""The rolling window of a model's embeddings: a float32 ring buffer, like `RollingWindow`."""

from __future__ import annotations

import numpy as np

from sidecar.windows import RingBuffer


class EmbeddingWindow(RingBuffer):
    """The last `capacity` embeddings (rows of `dim` float32) with their receive times.

    Memory is the float32 rows plus 8 bytes a row for the time; np.zeros leaves pages
    untouched until rows arrive, so a model that sends no embedding costs nothing.
    """

    def __init__(self, capacity: int, dim: int, max_age_s: float | None = None) -> None:
        super().__init__(capacity, max_age_s)
        self.dim = dim
        self._rows = np.zeros((capacity, dim), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return int(self._rows.nbytes + self._received.nbytes)

    def append(self, rows: np.ndarray, received: np.ndarray) -> None:
        self._write([(self._rows, rows), (self._received, received)], int(rows.shape[0]))

    def snapshot(self) -> np.ndarray:
        """The rows in arrival order, (n, dim) float32: a copy, safe for a worker thread."""
        return self._ordered(self._rows)

    def received(self) -> np.ndarray:
        return self._ordered(self._received)

    def restore(self, rows: np.ndarray, received: np.ndarray) -> None:
        """Refill from saved rows (state restore): as if appended in order, so only the
        newest `capacity` stay when the window was made smaller."""
        self._start = 0
        self._size = 0
        self.append(rows, received)
