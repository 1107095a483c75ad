"""The default socket path: the daemon and the client follow one rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.client import default_socket_path
from sidecar.config import parse_config


def daemon_socket_path() -> str:
    """Where a daemon whose config names no socket listens."""
    return parse_config({"auto_register": {"enabled": True}}).socket_path


@pytest.mark.parametrize("runtime", ["writable", "missing", "unset", "empty"])
def test_client_and_daemon_agree(
    runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("DRIFT_SIDECAR_SOCKET", raising=False)
    if runtime == "writable":
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        expected = tmp_path / "drift-sidecar" / "events.sock"
    elif runtime == "missing":
        # a runtime folder the process cannot write to: both fall back to the working folder
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "absent"))
        expected = work / "drift-sidecar.sock"
    elif runtime == "empty":
        monkeypatch.setenv("XDG_RUNTIME_DIR", "")
        expected = work / "drift-sidecar.sock"
    else:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        expected = work / "drift-sidecar.sock"
    assert daemon_socket_path() == str(expected)
    assert default_socket_path() == str(expected)


def test_client_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("DRIFT_SIDECAR_SOCKET", "/elsewhere/events.sock")
    assert default_socket_path() == "/elsewhere/events.sock"
    assert daemon_socket_path() == str(tmp_path / "drift-sidecar" / "events.sock")
