"""Where the daemon listens when its config names no socket: one rule for daemon and client.

A leaf module (standard library only), so the client may import it without pulling in
any of the daemon.
"""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_ENV = "DRIFT_SIDECAR_SOCKET"
"""Tells the client where the daemon's socket is when it is not at the default path."""


def default_socket_path() -> str:
    """`$XDG_RUNTIME_DIR/drift-sidecar/events.sock` when that folder is writable, else
    `./drift-sidecar.sock` in the current working folder."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        return str(Path(runtime) / "drift-sidecar" / "events.sock")
    return str(Path.cwd() / "drift-sidecar.sock")
