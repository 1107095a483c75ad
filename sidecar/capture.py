"""The first N live events of a model, kept to become its baseline, and the finished capture."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Capture:
    """The first N live events of a model, kept to become its baseline."""

    target: int
    numeric: list[np.ndarray] = field(default_factory=list)
    categorical: list[np.ndarray] = field(default_factory=list)
    predictions: list[np.ndarray] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    @property
    def done(self) -> bool:
        return self.count >= self.target

    def take(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        predictions: np.ndarray,
        embeddings: np.ndarray | None = None,
    ) -> int:
        """Keep what the capture still needs; return how many rows were taken."""
        k = min(self.target - self.count, int(numeric.shape[0]))
        if k > 0:
            self.numeric.append(numeric[:k].copy())
            self.categorical.append(categorical[:k].copy())
            self.predictions.append(predictions[:k].copy())
            if embeddings is not None:
                self.embeddings.append(embeddings[:k].copy())
            self.count += k
        return k


@dataclass(frozen=True)
class CaptureData:
    """A finished capture as columns, ready for `baseline.write_baseline`."""

    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[str | None]]
    prediction: np.ndarray | list[str | None] | None
    embedding: np.ndarray | None = None
    """(rows, dim) float32, NaN rows where an event had none; None without `embedding:`."""
