from __future__ import annotations

import os
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
    yield
    structlog.reset_defaults()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
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


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
