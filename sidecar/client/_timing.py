"""Latency helpers: a context manager and a decorator that record one event per call."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from time import perf_counter
from types import TracebackType
from typing import Any, Literal, TypeVar

from sidecar.client._sink import Sink
from sidecar.client._stages import Stage, enter_call, leave_call

_F = TypeVar("_F", bound=Callable[..., Any])
_OUTCOME_KEYS = frozenset({"prediction", "probabilities", "confidence", "id", "embedding"})


class Timed:
    """What `Monitor.timed()` yields: set the outcome on it inside the block."""

    __slots__ = (
        "_monitor",
        "_t0",
        "_token",
        "confidence",
        "embedding",
        "features",
        "id",
        "latency_s",
        "prediction",
        "probabilities",
        "stages",
        "trace_id",
    )

    def __init__(
        self,
        monitor: Sink,
        features: Mapping[str, Any] | None,
        id: str | None,
        trace_id: str | int | None,
    ) -> None:
        self._monitor = monitor
        self.features = features
        self.id = id
        self.trace_id = trace_id
        self.prediction: Any = None
        self.probabilities: Any = None
        self.confidence: Any = None
        self.embedding: Any = None
        self.latency_s: float | None = None
        self.stages: dict[str, float] = {}
        self._t0 = 0.0
        self._token: Any = None

    def stage(self, name: str) -> Stage:
        """A context manager timing one stage of this prediction (`stages` of the event)."""
        return Stage(self.stages, name)

    def __enter__(self) -> Timed:
        trace = self._monitor.trace_id_source
        if self.trace_id is None and trace is not None:
            # Taken on entry: the span around the block may have ended by the exit.
            self.trace_id = trace()
        self._token = enter_call(self.stages)
        self._t0 = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.latency_s = perf_counter() - self._t0
        if self._token is not None:
            leave_call(self._token)
            self._token = None
        self._monitor.record(
            features=self.features,
            prediction=self.prediction,
            probabilities=self.probabilities,
            confidence=self.confidence,
            latency_s=self.latency_s,
            status="success" if exc_type is None else "error",
            trace_id=self.trace_id,  # type: ignore[arg-type]
            id=self.id,
            embedding=self.embedding,
            stages=self.stages or None,
        )
        return False


def _safe_features(
    monitor: Sink,
    pick: Callable[..., Mapping[str, Any] | None] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[bool, Mapping[str, Any] | None]:
    if pick is None:
        return True, None
    try:
        return True, pick(*args, **kwargs)
    except Exception as exc:
        monitor.note_invalid(f"track(features=...) raised {type(exc).__name__}: {exc}")
        return False, None


def _emit(
    monitor: Sink,
    *,
    features: Mapping[str, Any] | None,
    outcome: Callable[[Any], Mapping[str, Any] | None] | None,
    result: Any,
    status: str,
    latency_s: float,
    trace_id: int | None,
    stages: dict[str, float] | None = None,
) -> None:
    fields: Mapping[str, Any] = {}
    if outcome is not None and status == "success":
        try:
            fields = outcome(result) or {}
            bad = [k for k in fields if k not in _OUTCOME_KEYS]
            if bad:
                raise KeyError(f"unknown field {bad[0]!r}")
        except Exception as exc:
            monitor.note_invalid(f"track(outcome=...) raised {type(exc).__name__}: {exc}")
            return
    monitor.record(
        features=features,
        latency_s=latency_s,
        status=status,
        trace_id=trace_id,  # type: ignore[arg-type]
        stages=stages or None,
        **fields,
    )


class _Call:
    """One tracked call: what it saw, when it started, and the record at its end."""

    __slots__ = ("feats", "monitor", "ok", "outcome", "stages", "t0", "tid", "token")

    def __init__(
        self,
        monitor: Sink,
        pick: Callable[..., Mapping[str, Any] | None] | None,
        outcome: Callable[[Any], Mapping[str, Any] | None] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.monitor = monitor
        self.outcome = outcome
        self.ok, self.feats = _safe_features(monitor, pick, args, kwargs)
        trace = monitor.trace_id_source
        self.tid = trace() if trace is not None else None
        self.stages: dict[str, float] = {}
        self.token = enter_call(self.stages)  # `Monitor.stage()` adds to this call
        self.t0 = perf_counter()

    def done(self, result: Any = None, *, failed: bool = False) -> None:
        leave_call(self.token)
        if self.ok:
            _emit(
                self.monitor,
                features=self.feats,
                outcome=None if failed else self.outcome,
                result=result,
                status="error" if failed else "success",
                latency_s=perf_counter() - self.t0,
                trace_id=self.tid,
                stages=self.stages,
            )


def track_call(
    monitor: Sink,
    features: Callable[..., Mapping[str, Any] | None] | None,
    outcome: Callable[[Any], Mapping[str, Any] | None] | None,
) -> Callable[[_F], _F]:
    """Build the decorator behind `Monitor.track()`."""

    def decorate(fn: _F) -> _F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                call = _Call(monitor, features, outcome, args, kwargs)
                try:
                    result = await fn(*args, **kwargs)
                except Exception:
                    call.done(failed=True)
                    raise
                call.done(result)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            call = _Call(monitor, features, outcome, args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except Exception:
                call.done(failed=True)
                raise
            call.done(result)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate
