"""Stage timing inside `Monitor.timed()` and `Monitor.track()`: `stages: {name: seconds}`.

The call being recorded keeps its stages in a dict, published in a context variable while
the call runs, so `monitor.stage("inference")` finds it from anywhere inside the call (a
helper function, a coroutine awaited by it) without being handed the record object.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar, Token
from time import perf_counter
from types import TracebackType
from typing import Literal

_current: ContextVar[dict[str, float] | None] = ContextVar("drift_sidecar_stages", default=None)


def enter_call(stages: dict[str, float]) -> Token[dict[str, float] | None]:
    """Make `stages` the dict that `Monitor.stage()` adds to, until `leave_call`."""
    return _current.set(stages)


def leave_call(token: Token[dict[str, float] | None]) -> None:
    # left in another context than entered (another thread): nothing to restore there
    with contextlib.suppress(ValueError, RuntimeError):
        _current.reset(token)


def current() -> dict[str, float] | None:
    """The stages of the timed or tracked call running here; None outside one."""
    return _current.get()


class Stage:
    """A context manager that adds the seconds its block takes to one stage of a call.

    A stage entered twice in a call adds up; with no call to add to, it times nothing.
    An exception in the block still counts the time, and propagates unchanged.
    """

    __slots__ = ("_into", "_name", "_t0")

    def __init__(self, into: dict[str, float] | None, name: str) -> None:
        self._into = into
        self._name = name
        self._t0 = 0.0

    def __enter__(self) -> Stage:
        self._t0 = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if self._into is not None:
            elapsed = perf_counter() - self._t0
            self._into[self._name] = self._into.get(self._name, 0.0) + elapsed
        return False
