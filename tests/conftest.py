"""Shared fixtures; the helpers themselves are in harness.py.

`scripts/test -m "not slow"` is the quick local run: it leaves out the tests marked
`slow` (bench smoke, demo, Prometheus end to end). CI runs everything.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

sys.path.insert(0, str(Path(__file__).parent))

from harness import DaemonProcess, kill_quietly, start_daemon


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts and ends with structlog's defaults, whatever another configured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons with harness.start_daemon, each in its own folder; killed at the end."""
    started: list[DaemonProcess] = []

    def make(extra: dict[str, Any] | None = None, **kw: Any) -> DaemonProcess:
        sub = tmp_path / f"d{len(started)}"
        sub.mkdir(exist_ok=True)
        d = start_daemon(sub, extra, **kw)
        started.append(d)
        return d

    yield make
    for d in started:
        kill_quietly(d)
