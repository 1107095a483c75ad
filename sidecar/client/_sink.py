"""What the helpers built on a Monitor (`timed`, `track`, `sidecar.client.torch`) use of it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol


class Sink(Protocol):
    """The part of `Monitor` its helpers use; `Monitor` satisfies it."""

    @property
    def trace_id_source(self) -> Callable[[], int | None] | None:
        """Gives the current trace id; None when trace ids are off."""
        ...

    def record(
        self,
        features: Mapping[str, Any] | None = None,
        *,
        prediction: float | str | None = None,
        probabilities: Sequence[float] | Mapping[str, float] | None = None,
        confidence: float | None = None,
        latency_s: float | None = None,
        status: str = "success",
        trace_id: str | None = None,
        id: str | None = None,
        ts: float | None = None,
        embedding: Sequence[float] | None = None,
        stages: Mapping[str, float] | None = None,
    ) -> bool:
        """Buffer one event."""
        ...

    def record_batch(
        self,
        *,
        predictions: Any = None,
        probabilities: Any = None,
        confidences: Any = None,
        features: Any = None,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        latency_s: Any = None,
        status: Any = "success",
        ids: Any = None,
        embeddings: Any = None,
        trace_id: str | None = None,
        ts: float | None = None,
        stages: Mapping[str, float] | None = None,
    ) -> int:
        """Buffer a batch given as columns."""
        ...

    def report_model_memory(self, nbytes: int) -> bool:
        """Report the model's memory footprint in bytes."""
        ...

    def note_invalid(self, detail: str) -> None:
        """Count one event a helper judged invalid, and log `detail`."""
        ...
