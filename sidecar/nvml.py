"""The NVML interface: exactly the calls the GPU monitor makes, and opening the GPUs.

The calls sit behind `NvmlBackend`, so the monitor can be tested without a driver;
`PynvmlBackend` is the real one (nvidia-ml-py, imported as `pynvml`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from sidecar.errors import GpuError

# Bounded set of `reason` label values for drift_sidecar_gpu_errors_total.
_REASON_BY_NVML_CODE: Final[dict[int, str]] = {
    1: "uninitialized",
    3: "not_supported",
    4: "no_permission",
    9: "driver_not_loaded",
    10: "timeout",
    12: "library_not_found",
    13: "function_not_found",
    15: "gpu_lost",
    16: "reset_required",
    18: "driver_mismatch",
}
_UNSUPPORTED_REASONS: Final = frozenset({"not_supported", "function_not_found"})
"""An old driver lacks a function the same way a GPU lacks a sensor: the field is omitted."""


class NvmlCallError(GpuError):
    """One NVML call failed; `reason` is a short stable code used as a metric label value."""

    def __init__(self, call: str, reason: str, detail: str) -> None:
        self.call = call
        self.reason = reason
        self.detail = detail
        super().__init__(f"NVML {call} failed: {detail} ({reason})")

    @property
    def unsupported(self) -> bool:
        """True when the GPU or driver does not offer this call (NotSupported, no function)."""
        return self.reason in _UNSUPPORTED_REASONS


@dataclass(frozen=True, slots=True)
class XidEvent:
    """A critical XID error reported by the driver for one GPU."""

    xid: int


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    """One compute process on a GPU; `used_bytes` is None where NVML cannot tell (MIG, WDDM)."""

    pid: int
    used_bytes: int | None


class NvmlBackend(Protocol):
    """Exactly the NVML calls the monitor makes; every failure raises `NvmlCallError`.

    Values keep NVML's own units (mW, MHz); the monitor converts them to base units.
    Handles and event sets are opaque to the monitor.
    """

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def device_count(self) -> int: ...
    def handle_by_index(self, index: int) -> object: ...
    def uuid(self, handle: object) -> str: ...
    def name(self, handle: object) -> str: ...
    def utilization_gpu_percent(self, handle: object) -> int: ...
    def memory_used_total_bytes(self, handle: object) -> tuple[int, int]: ...
    def temperature_gpu_celsius(self, handle: object) -> int: ...
    def power_usage_milliwatts(self, handle: object) -> int: ...
    def sm_clock_mhz(self, handle: object) -> int: ...
    def compute_processes(self, handle: object) -> list[ProcessMemory]: ...
    def event_set_create(self) -> object: ...
    def register_xid_events(self, handle: object, event_set: object) -> None: ...
    def event_set_poll(self, event_set: object) -> XidEvent | None:
        """The next pending event, or None at once when there is none (never blocks)."""
        ...

    def event_set_free(self, event_set: object) -> None: ...


def translate_nvml_error(call: str, exc: BaseException) -> NvmlCallError:
    """Map a pynvml exception to `NvmlCallError` with a bounded `reason`."""
    import pynvml  # noqa: PLC0415 - keeps the import cost off processes that never use NVML

    if isinstance(exc, pynvml.NVMLError):
        code = getattr(exc, "value", None)
        reason = (
            _REASON_BY_NVML_CODE.get(code, "nvml_error")
            if isinstance(code, int)
            else ("nvml_error")
        )
        return NvmlCallError(call, reason, str(exc))
    if isinstance(exc, pynvml.NVMLLibraryMismatchError):
        return NvmlCallError(call, "library_mismatch", str(exc))
    return NvmlCallError(call, "nvml_error", f"{type(exc).__name__}: {exc}")


_NVML_LIBRARY = "libnvidia-ml.so.1"
"""The one library pynvml loads on Linux."""
_NVML_NOT_FOUND = "NVML Shared Library Not Found"
"""pynvml's own words when it cannot load it."""


def _probe_library() -> None:
    """Raise what nvmlInit would when the NVIDIA driver's library does not load, before
    pynvml is imported: a daemon without a GPU (`gpu.enabled: auto`, the default) then
    never imports it, about 1.4 MiB that would stay in every pod for nothing. Only on
    Linux, where the library pynvml loads is exactly this one."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(_NVML_LIBRARY)
    except OSError:
        raise NvmlCallError("nvmlInit", "library_not_found", _NVML_NOT_FOUND) from None


class PynvmlBackend:
    """`NvmlBackend` over nvidia-ml-py; pynvml exceptions never leave this class."""

    @functools.cached_property
    def _nvml(self) -> Any:
        import pynvml  # noqa: PLC0415 - imported once NVML is used: see _probe_library

        return pynvml

    def _call(self, call: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # every pynvml error, including the non-NVMLError ones
            raise translate_nvml_error(call, exc) from exc

    def init(self) -> None:
        _probe_library()
        self._call("nvmlInit", self._nvml.nvmlInit)

    def shutdown(self) -> None:
        self._call("nvmlShutdown", self._nvml.nvmlShutdown)

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount", self._nvml.nvmlDeviceGetCount))

    def handle_by_index(self, index: int) -> object:
        return self._call(
            "nvmlDeviceGetHandleByIndex", self._nvml.nvmlDeviceGetHandleByIndex, index
        )

    def uuid(self, handle: object) -> str:
        return str(self._call("nvmlDeviceGetUUID", self._nvml.nvmlDeviceGetUUID, handle))

    def name(self, handle: object) -> str:
        return str(self._call("nvmlDeviceGetName", self._nvml.nvmlDeviceGetName, handle))

    def utilization_gpu_percent(self, handle: object) -> int:
        rates = self._call(
            "nvmlDeviceGetUtilizationRates", self._nvml.nvmlDeviceGetUtilizationRates, handle
        )
        return int(rates.gpu)

    def memory_used_total_bytes(self, handle: object) -> tuple[int, int]:
        # v2 leaves driver-reserved memory out of `used`, as nvidia-smi does; v1 counts it
        # (about 500 MiB on an H100), so prefer v2 and fall back on drivers without it.
        try:
            info = self._call(
                "nvmlDeviceGetMemoryInfo",
                self._nvml.nvmlDeviceGetMemoryInfo,
                handle,
                self._nvml.nvmlMemory_v2,
            )
        except NvmlCallError as exc:
            if not exc.unsupported and exc.reason != "nvml_error":
                raise
            info = self._call("nvmlDeviceGetMemoryInfo", self._nvml.nvmlDeviceGetMemoryInfo, handle)
        return int(info.used), int(info.total)

    def temperature_gpu_celsius(self, handle: object) -> int:
        return int(
            self._call(
                "nvmlDeviceGetTemperature",
                self._nvml.nvmlDeviceGetTemperature,
                handle,
                self._nvml.NVML_TEMPERATURE_GPU,
            )
        )

    def power_usage_milliwatts(self, handle: object) -> int:
        return int(
            self._call("nvmlDeviceGetPowerUsage", self._nvml.nvmlDeviceGetPowerUsage, handle)
        )

    def sm_clock_mhz(self, handle: object) -> int:
        return int(
            self._call(
                "nvmlDeviceGetClockInfo",
                self._nvml.nvmlDeviceGetClockInfo,
                handle,
                self._nvml.NVML_CLOCK_SM,
            )
        )

    def compute_processes(self, handle: object) -> list[ProcessMemory]:
        procs = self._call(
            "nvmlDeviceGetComputeRunningProcesses",
            self._nvml.nvmlDeviceGetComputeRunningProcesses,
            handle,
        )
        return [
            ProcessMemory(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
            for p in procs
        ]

    def event_set_create(self) -> object:
        return self._call("nvmlEventSetCreate", self._nvml.nvmlEventSetCreate)

    def register_xid_events(self, handle: object, event_set: object) -> None:
        self._call(
            "nvmlDeviceRegisterEvents",
            self._nvml.nvmlDeviceRegisterEvents,
            handle,
            self._nvml.nvmlEventTypeXidCriticalError,
            event_set,
        )

    def event_set_poll(self, event_set: object) -> XidEvent | None:
        try:
            data = self._call("nvmlEventSetWait", self._nvml.nvmlEventSetWait, event_set, 0)
        except NvmlCallError as exc:
            if exc.reason == "timeout":
                return None
            raise
        if int(data.eventType) & int(self._nvml.nvmlEventTypeXidCriticalError):
            return XidEvent(int(data.eventData))
        return None

    def event_set_free(self, event_set: object) -> None:
        self._call("nvmlEventSetFree", self._nvml.nvmlEventSetFree, event_set)


class Logger(Protocol):
    """The structlog calls made here and by the monitor."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...


@dataclass(slots=True)
class Device:
    """One GPU the monitor polls."""

    index: int
    handle: object
    uuid: str
    name: str
    event_set: object | None = None
    last_xid: int = 0
    unsupported: set[str] = field(default_factory=set)


def start_devices(nvml: NvmlBackend, log: Logger) -> list[Device]:
    """Init NVML and describe each GPU; shuts NVML down again when none can be used."""
    nvml.init()
    try:
        devices: list[Device] = []
        for index in range(nvml.device_count()):
            try:
                handle = nvml.handle_by_index(index)
                dev = Device(index, handle, nvml.uuid(handle), nvml.name(handle))
            except NvmlCallError as exc:
                # e.g. a GPU the container may not open: skip it, keep the others.
                log.warning("gpu_skipped", gpu_id=index, reason=exc.reason, error=exc.detail)
                continue
            dev.event_set = _xid_event_set(nvml, dev, log)
            devices.append(dev)
    except NvmlCallError:
        quiet_shutdown(nvml)
        raise
    if not devices:
        quiet_shutdown(nvml)
    return devices


def _xid_event_set(nvml: NvmlBackend, dev: Device, log: Logger) -> object | None:
    """One event set per GPU, so an event needs no handle comparison to find its GPU."""
    try:
        event_set = nvml.event_set_create()
    except NvmlCallError as exc:
        log.debug("gpu_xid_unavailable", gpu_id=dev.index, reason=exc.reason)
        return None
    try:
        nvml.register_xid_events(dev.handle, event_set)
    except NvmlCallError as exc:
        log.debug("gpu_xid_unavailable", gpu_id=dev.index, reason=exc.reason)
        with contextlib.suppress(NvmlCallError):
            nvml.event_set_free(event_set)
        return None
    return event_set


def quiet_shutdown(nvml: NvmlBackend) -> None:
    with contextlib.suppress(NvmlCallError):
        nvml.shutdown()
