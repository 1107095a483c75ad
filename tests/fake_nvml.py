"""An in-memory NVML for machines without an NVIDIA driver; implements sidecar.gpu.NvmlBackend.

Each fake GPU holds the values NVML would return, in NVML's units. Tests change them between
polls, mark calls unsupported, lose a GPU, or queue XID events.
"""

from __future__ import annotations

import ctypes
from collections import deque
from dataclasses import dataclass, field

from sidecar.gpu import NvmlCallError, ProcessMemory, XidEvent


def nvml_library_loadable() -> bool:
    """Whether this machine has the NVIDIA driver's NVML library (then the real one is used
    where a test asks for it, and tests that need its absence do not apply)."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


# Which backend method answers for which field, so a test can say "temperature is unsupported".
FIELD_CALLS = {
    "utilization": "nvmlDeviceGetUtilizationRates",
    "memory": "nvmlDeviceGetMemoryInfo",
    "temperature": "nvmlDeviceGetTemperature",
    "power": "nvmlDeviceGetPowerUsage",
    "sm_clock": "nvmlDeviceGetClockInfo",
    "processes": "nvmlDeviceGetComputeRunningProcesses",
    "events": "nvmlDeviceRegisterEvents",
}


def nvml_error(call: str, reason: str) -> NvmlCallError:
    """The error the real backend raises for `reason` (e.g. "gpu_lost", "not_supported")."""
    return NvmlCallError(call, reason, reason.replace("_", " "))


@dataclass
class FakeGpu:
    """One GPU's state, in NVML's units."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    utilization: int = 0
    memory_used: int = 0
    memory_total: int = 80 * 1024**3
    temperature: int = 30
    power_mw: int = 70_000
    sm_clock_mhz: int = 1980
    processes: list[ProcessMemory] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)
    """Field names from FIELD_CALLS that raise NotSupported."""
    failing: dict[str, str] = field(default_factory=dict)
    """Field name to an error reason raised on every call (e.g. "no_permission")."""
    lost: bool = False
    """Every per-device call raises GpuIsLost, as after the GPU fell off the bus."""
    xids: deque[int] = field(default_factory=deque)


class FakeNvml:
    """An `NvmlBackend` over FakeGpu objects; records every call in `calls`."""

    def __init__(self, gpus: list[FakeGpu] | None = None, init_error: str | None = None) -> None:
        self.gpus = gpus if gpus is not None else []
        self.init_error = init_error
        self.event_sets_supported = True
        self.calls: list[str] = []
        self.initialized = False
        self.freed_event_sets: list[object] = []

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if not self.initialized:
            raise nvml_error(call, "uninitialized")

    def _gpu(self, call: str, handle: object, fieldname: str | None = None) -> FakeGpu:
        self._check(call)
        assert isinstance(handle, FakeGpu)
        if handle.lost:
            raise nvml_error(call, "gpu_lost")
        if fieldname is not None:
            if fieldname in handle.unsupported:
                raise nvml_error(call, "not_supported")
            if fieldname in handle.failing:
                raise nvml_error(call, handle.failing[fieldname])
        return handle

    def init(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise nvml_error("nvmlInit", self.init_error)
        self.initialized = True

    def shutdown(self) -> None:
        self._check("nvmlShutdown")
        self.initialized = False

    def device_count(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def handle_by_index(self, index: int) -> object:
        self._check("nvmlDeviceGetHandleByIndex")
        return self.gpus[index]

    def uuid(self, handle: object) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def name(self, handle: object) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def utilization_gpu_percent(self, handle: object) -> int:
        return self._gpu(FIELD_CALLS["utilization"], handle, "utilization").utilization

    def memory_used_total_bytes(self, handle: object) -> tuple[int, int]:
        gpu = self._gpu(FIELD_CALLS["memory"], handle, "memory")
        return gpu.memory_used, gpu.memory_total

    def temperature_gpu_celsius(self, handle: object) -> int:
        return self._gpu(FIELD_CALLS["temperature"], handle, "temperature").temperature

    def power_usage_milliwatts(self, handle: object) -> int:
        return self._gpu(FIELD_CALLS["power"], handle, "power").power_mw

    def sm_clock_mhz(self, handle: object) -> int:
        return self._gpu(FIELD_CALLS["sm_clock"], handle, "sm_clock").sm_clock_mhz

    def compute_processes(self, handle: object) -> list[ProcessMemory]:
        return list(self._gpu(FIELD_CALLS["processes"], handle, "processes").processes)

    def event_set_create(self) -> object:
        self._check("nvmlEventSetCreate")
        if not self.event_sets_supported:
            raise nvml_error("nvmlEventSetCreate", "not_supported")
        return _EventSet()

    def register_xid_events(self, handle: object, event_set: object) -> None:
        gpu = self._gpu(FIELD_CALLS["events"], handle, "events")
        assert isinstance(event_set, _EventSet)
        event_set.gpus.append(gpu)

    def event_set_poll(self, event_set: object) -> XidEvent | None:
        self._check("nvmlEventSetWait")
        assert isinstance(event_set, _EventSet)
        for gpu in event_set.gpus:
            if gpu.lost:
                raise nvml_error("nvmlEventSetWait", "gpu_lost")
            if gpu.xids:
                return XidEvent(gpu.xids.popleft())
        return None

    def event_set_free(self, event_set: object) -> None:
        self._check("nvmlEventSetFree")
        self.freed_event_sets.append(event_set)


class _EventSet:
    def __init__(self) -> None:
        self.gpus: list[FakeGpu] = []
