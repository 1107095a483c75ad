"""The current OpenTelemetry trace id, when opentelemetry-api is installed; otherwise nothing."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

_otel_trace: ModuleType | None
try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # optional dependency: without it no trace ids are attached
    _otel_trace = None


def _from_otel() -> int | None:
    # The integer stays an integer here; the flusher formats it as 32 hex digits later,
    # so the caller's thread pays for one context lookup only.
    assert _otel_trace is not None
    try:
        tid: int = _otel_trace.get_current_span().get_span_context().trace_id
    except Exception:
        return None
    return tid or None


current_trace_id: Callable[[], int | None] | None = _from_otel if _otel_trace is not None else None
"""Returns the active span's trace id as an integer (None outside a span); None without otel."""
