"""The few exceptions the sidecar raises; only the command line turns them into exits."""

from __future__ import annotations

from pathlib import Path


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """A configuration file is unreadable or holds bad keys; the message names each key path."""

    def __init__(self, problems: list[str], source: str = "<config>") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


class BaselineError(SidecarError):
    """A baseline file is missing, unreadable, or lacks or mistypes a configured column."""


class GpuError(SidecarError):
    """The GPU was required (gpu.enabled: true) but NVML or a device is not available."""


class StateError(SidecarError):
    """A state snapshot is corrupt, of another format version, or for another baseline.

    `bad_file` names a file that must not be trusted (tampered, not a regular file, too
    large): it is set aside rather than read again or overwritten.
    """

    def __init__(self, message: str, bad_file: Path | None = None) -> None:
        super().__init__(message)
        self.bad_file = bad_file


class SocketError(SidecarError):
    """The socket path cannot be used: in use by another process, not a socket, or its
    folder cannot be created. The message is one line and names the path."""


class StateDirError(SidecarError):
    """`state_dir` is in use by another running sidecar."""


class DaemonUnreachable(SidecarError):
    """A command that talks to a running daemon (`status`) got no answer from its URL."""
