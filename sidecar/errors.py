"""The few exceptions the sidecar raises; only the command line turns them into exits."""


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
    """A state snapshot is corrupt, of another format version, or for another baseline."""
