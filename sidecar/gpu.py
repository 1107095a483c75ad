"""GPU statistics over NVML, polled off the event loop and exported by a custom collector.

The NVML calls are `sidecar.nvml`'s; this module polls them and turns the readings into
metrics.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sidecar.errors import ConfigError, GpuError
from sidecar.nvml import (
    Device,
    Logger,
    NvmlBackend,
    NvmlCallError,
    ProcessMemory,
    PynvmlBackend,
    XidEvent,
    start_devices,
    translate_nvml_error,
)
from sidecar.ratelimit import LogLimiter

__all__ = [
    "GPU_LABELS",
    "GpuCollector",
    "GpuMonitor",
    "GpuReading",
    "NvmlBackend",
    "NvmlCallError",
    "ProcessMemory",
    "PynvmlBackend",
    "XidEvent",
    "translate_nvml_error",
]

GPU_LABELS: Final = ("gpu_id", "UUID", "modelName")
"""dcgm-exporter's `UUID` and `modelName` label names, so the series join with its own."""

MODEL_MEMORY_FRESH_INTERVALS: Final = 3.0
"""A reported model-memory figure wins while younger than this many `gpu.interval_s`."""

MAX_REPORTED_MODELS: Final = 1024
"""Defensive cap on distinct model names held from stats events."""

MAX_EVENTS_PER_POLL: Final = 64
"""XID events drained per GPU and poll; the rest wait for the next poll, so a storm cannot
pin the worker thread."""

CLOSE_WAIT_S: Final = 5.0
"""How long `close()` waits for a poll in flight before shutting NVML down anyway."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one poll, in base units; None where the GPU does not report the field."""

    index: int
    uuid: str
    name: str
    utilization_percent: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    sm_clock_hertz: float | None = None
    last_xid: float | None = None
    """0 until an XID is seen; None where XID events cannot be registered."""

    def labels(self) -> list[str]:
        """Values for `GPU_LABELS`."""
        return [str(self.index), self.uuid, self.name]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    gpus: tuple[GpuReading, ...] = ()
    nvml_model_memory: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Reported:
    nbytes: int
    ts: float


# (metric name, help, GpuReading attribute)
_GPU_GAUGES: Final = (
    (
        "ml_gpu_utilization_percent",
        "GPU utilization over the last sample period, percent.",
        "utilization_percent",
    ),
    (
        "ml_gpu_memory_used_bytes",
        "GPU memory in use, bytes (driver-reserved memory excluded).",
        "memory_used_bytes",
    ),
    ("ml_gpu_memory_total_bytes", "GPU memory in total, bytes.", "memory_total_bytes"),
    ("ml_gpu_temperature_celsius", "GPU core temperature, degrees Celsius.", "temperature_celsius"),
    ("ml_gpu_power_watts", "GPU board power draw, watts.", "power_watts"),
    ("ml_gpu_sm_clock_hertz", "GPU SM clock, hertz.", "sm_clock_hertz"),
    ("ml_gpu_last_xid", "Last critical XID error seen since start (0 when none).", "last_xid"),
)


class GpuMonitor:
    """Polls NVML every `interval_s` and holds the latest snapshot for `GpuCollector`.

    Build it with `create()`; run `run()` as an eternal task; `close()` at shutdown.
    """

    def __init__(
        self,
        *,
        backend: NvmlBackend | None,
        interval_s: float,
        logger: Logger,
        devices: list[Device],
        model_pids: Mapping[str, frozenset[int]],
        visible_process_model: str | None,
        pid_visible: Callable[[int], bool],
        wall_clock: Callable[[], float],
        monotonic: Callable[[], float],
        log_every_s: float,
    ) -> None:
        self._backend = backend
        self._interval_s = interval_s
        self._log = logger
        self._devices = devices
        self._model_pids = model_pids
        self._visible_process_model = visible_process_model
        self._pid_visible = pid_visible
        self._wall_clock = wall_clock
        self._limiter = LogLimiter(log_every_s, monotonic)
        self._started = backend is not None
        self._closed = False
        self._poll_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._reported: dict[str, _Reported] = {}
        self._snapshot = _Snapshot()
        self._polled = False
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def create(
        cls,
        enabled: str | bool,
        interval_s: float,
        backend: NvmlBackend | None = None,
        logger: Logger | None = None,
        *,
        model_pids: Mapping[str, Collection[int]] | None = None,
        visible_process_model: str | None = None,
        pid_visible: Callable[[int], bool] | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        log_every_s: float = 60.0,
    ) -> GpuMonitor:
        """Start NVML per `gpu.enabled` (`"auto"`, True or False) and find the GPUs.

        Raises GpuError when `enabled` is True and NVML or a GPU is missing, ConfigError on
        a bad `enabled` or `interval_s`. With "auto" and no GPU, logs `gpu_unavailable` once.
        """
        mode = _parse_enabled(enabled)
        if not (isinstance(interval_s, int | float) and math.isfinite(interval_s)) or (
            interval_s <= 0
        ):
            raise ConfigError([f"gpu.interval_s: must be a finite number > 0, got {interval_s!r}"])
        log: Logger = logger if logger is not None else structlog.get_logger("sidecar.gpu")
        kwargs: dict[str, Any] = {
            "interval_s": float(interval_s),
            "logger": log,
            "model_pids": {m: frozenset(p) for m, p in (model_pids or {}).items()},
            "visible_process_model": visible_process_model,
            "pid_visible": pid_visible or _pid_visible_here,
            "wall_clock": wall_clock,
            "monotonic": monotonic,
            "log_every_s": log_every_s,
        }
        if mode is False:
            return cls(backend=None, devices=[], **kwargs)
        nvml: NvmlBackend = backend if backend is not None else PynvmlBackend()
        try:
            devices = start_devices(nvml, log)
        except NvmlCallError as exc:
            why = f"{exc.detail} ({exc.reason}, in {exc.call})"
            return cls._unavailable(mode, why, log, kwargs)
        if not devices:
            return cls._unavailable(mode, "no NVIDIA GPU visible to NVML", log, kwargs)
        monitor = cls(backend=nvml, devices=devices, **kwargs)
        log.info(
            "gpu_monitoring",
            gpus=[{"gpu_id": d.index, "UUID": d.uuid, "modelName": d.name} for d in devices],
            interval_s=float(interval_s),
            xid_events=any(d.event_set is not None for d in devices),
        )
        return monitor

    @classmethod
    def _unavailable(
        cls, mode: str | bool, why: str, log: Logger, kwargs: dict[str, Any]
    ) -> GpuMonitor:
        if mode is True:
            raise GpuError(
                f"gpu.enabled is true but no GPU can be read: {why}; install the NVIDIA "
                "driver and expose the GPU to this container, or set gpu.enabled to auto"
            )
        log.info("gpu_unavailable", reason=why, enabled="auto", gpu_metrics="absent")
        return cls(backend=None, devices=[], **kwargs)

    @property
    def available(self) -> bool:
        """True while NVML is up and the latest poll (or the start) read at least one GPU."""
        if not self._started or self._closed:
            return False
        return bool(self._snapshot.gpus) or not self._polled

    @property
    def interval_s(self) -> float:
        """Seconds between polls."""
        return self._interval_s

    @property
    def readings(self) -> tuple[GpuReading, ...]:
        """The GPUs read by the latest poll."""
        return self._snapshot.gpus

    def collector(self) -> GpuCollector:
        """A prometheus_client collector over the latest snapshot; register it once."""
        return GpuCollector(self)

    def error_counts(self) -> dict[str, int]:
        """drift_sidecar_gpu_errors_total by reason, as a copy."""
        with self._state_lock:
            return dict(self._errors)

    async def run(self) -> None:
        """Poll every `interval_s` in a worker thread until cancelled; never returns."""
        if not self._started or self._closed:
            # An eternal task that ends reads as a failure to its supervisor; there is
            # nothing to poll, so just wait for cancellation.
            await asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        if self._executor is None:
            # One dedicated thread: NVML calls never queue behind drift work in the default
            # executor, and a stuck driver call never piles up further threads.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvml-poll")
        next_at = loop.time()
        while True:
            try:
                await loop.run_in_executor(self._executor, self.poll_once)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._record_error("unexpected", key="unexpected", error=repr(exc))
            next_at += self._interval_s
            now = loop.time()
            next_at = max(next_at, now)  # after a slow poll, restart the cadence: no catch-up
            await asyncio.sleep(next_at - now)

    def poll_once(self) -> None:
        """Read every GPU once and replace the snapshot; NVML errors are logged and counted."""
        if not self._started:
            return
        with self._poll_lock:
            if self._closed or self._backend is None:
                return
            gpus: list[GpuReading] = []
            for dev in self._devices:
                reading = self._read_device(self._backend, dev)
                if reading is not None:
                    gpus.append(reading)
            nvml_memory = self._read_model_memory(self._backend)
            self._snapshot = _Snapshot(tuple(gpus), nvml_memory)
            self._polled = True

    def report_model_memory(self, model_name: str, nbytes: int, ts: float) -> None:
        """Keep a model's own GPU memory figure (a `stats` event); ts is Unix seconds."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            return
        # A client clock ahead of ours must not keep a figure fresh for longer than it is.
        ts = min(float(ts), self._wall_clock())
        with self._state_lock:
            if model_name not in self._reported and len(self._reported) >= MAX_REPORTED_MODELS:
                full = True
            else:
                full = False
                self._reported[model_name] = _Reported(nbytes, ts)
        if full:
            self._record_log_only(
                "model_memory_dropped", model_name=model_name, limit=MAX_REPORTED_MODELS
            )

    def model_memory(self) -> dict[str, int]:
        """`ml_model_memory_bytes` per model: a fresh reported figure, else NVML's, else none."""
        now = self._wall_clock()
        horizon = MODEL_MEMORY_FRESH_INTERVALS * self._interval_s
        with self._state_lock:
            reported = dict(self._reported)
        result = dict(self._snapshot.nvml_model_memory)
        for model, rep in reported.items():
            if now - rep.ts <= horizon:
                result[model] = rep.nbytes
        return result

    def close(self) -> None:
        """Stop polling and shut NVML down; safe to call twice, never raises."""
        if self._closed:
            return
        got = self._poll_lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            self._closed = True
            backend, self._backend = self._backend, None
            if backend is None:
                return
            for dev in self._devices:
                if dev.event_set is not None:
                    try:
                        backend.event_set_free(dev.event_set)
                    except NvmlCallError as exc:
                        self._log.debug("gpu_event_set_free_failed", error=str(exc))
            try:
                backend.shutdown()
            except NvmlCallError as exc:
                self._log.warning("gpu_shutdown_failed", error=str(exc), reason=exc.reason)
        finally:
            if got:
                self._poll_lock.release()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """`close()` from a thread, so a poll in flight never holds up the event loop."""
        await asyncio.to_thread(self.close)

    # -- polling internals ---------------------------------------------------------------

    def _read_device(self, nvml: NvmlBackend, dev: Device) -> GpuReading | None:
        values: dict[str, float | None] = {}
        try:
            values["utilization_percent"] = self._field(
                dev, "utilization", lambda: float(nvml.utilization_gpu_percent(dev.handle))
            )
            mem = self._field(dev, "memory", lambda: nvml.memory_used_total_bytes(dev.handle))
            if mem is not None:
                values["memory_used_bytes"], values["memory_total_bytes"] = map(float, mem)
            values["temperature_celsius"] = self._field(
                dev, "temperature", lambda: float(nvml.temperature_gpu_celsius(dev.handle))
            )
            values["power_watts"] = self._field(
                dev, "power", lambda: nvml.power_usage_milliwatts(dev.handle) / 1000.0
            )
            values["sm_clock_hertz"] = self._field(
                dev, "sm_clock", lambda: nvml.sm_clock_mhz(dev.handle) * 1e6
            )
            if dev.event_set is not None:
                self._drain_xid(nvml, dev)
        except NvmlCallError as exc:
            # Lost, reset-required or otherwise unreadable as a whole: its series disappear
            # until it answers again, rather than show stale values.
            self._record_error(
                exc.reason,
                key=f"{exc.reason}:{dev.index}",
                gpu_id=dev.index,
                UUID=dev.uuid,
                call=exc.call,
                error=exc.detail,
            )
            return None
        return GpuReading(
            index=dev.index,
            uuid=dev.uuid,
            name=dev.name,
            last_xid=None if dev.event_set is None else float(dev.last_xid),
            **values,
        )

    def _field(self, dev: Device, name: str, read: Callable[[], Any]) -> Any:
        """One field's value; None (and not asked again) where unsupported."""
        if name in dev.unsupported:
            return None
        try:
            return read()
        except NvmlCallError as exc:
            if exc.unsupported:
                dev.unsupported.add(name)
                self._log.debug(
                    "gpu_field_unsupported", gpu_id=dev.index, field=name, call=exc.call
                )
                return None
            if exc.reason in {"gpu_lost", "reset_required", "uninitialized"}:
                raise
            self._record_error(
                exc.reason,
                key=f"{exc.reason}:{dev.index}:{name}",
                gpu_id=dev.index,
                UUID=dev.uuid,
                call=exc.call,
                error=exc.detail,
            )
            return None

    def _drain_xid(self, nvml: NvmlBackend, dev: Device) -> None:
        assert dev.event_set is not None
        for _ in range(MAX_EVENTS_PER_POLL):
            event = nvml.event_set_poll(dev.event_set)
            if event is None:
                return
            dev.last_xid = event.xid
            self._record_error(
                "xid",
                key=f"xid:{dev.index}:{event.xid}",
                gpu_id=dev.index,
                UUID=dev.uuid,
                xid=event.xid,
            )

    def _read_model_memory(self, nvml: NvmlBackend) -> dict[str, int]:
        if not self._model_pids and self._visible_process_model is None:
            return {}
        own = os.getpid()
        totals: dict[str, int] = {}
        for dev in self._devices:
            if "processes" in dev.unsupported:
                continue
            try:
                procs = nvml.compute_processes(dev.handle)
            except NvmlCallError as exc:
                if exc.unsupported:
                    dev.unsupported.add("processes")
                else:
                    self._record_error(
                        exc.reason,
                        key=f"{exc.reason}:{dev.index}:processes",
                        gpu_id=dev.index,
                        call=exc.call,
                        error=exc.detail,
                    )
                continue
            for proc in procs:
                if proc.used_bytes is None:
                    continue
                model = self._model_for_pid(proc.pid, own)
                if model is not None:
                    totals[model] = totals.get(model, 0) + proc.used_bytes
        return totals

    def _model_for_pid(self, pid: int, own: int) -> str | None:
        for model, pids in self._model_pids.items():
            if pid in pids:
                return model
        if self._visible_process_model is not None and pid != own and self._pid_visible(pid):
            return self._visible_process_model
        return None

    def _record_error(self, reason: str, *, key: str, **fields: Any) -> None:
        with self._state_lock:
            self._errors[reason] = self._errors.get(reason, 0) + 1
        self._record_log_only("gpu_error", key=key, reason=reason, **fields)

    def _record_log_only(self, event: str, *, key: str | None = None, **fields: Any) -> None:
        suppressed = self._limiter.admit(key or event)
        if suppressed is not None:
            self._log.warning(event, suppressed=suppressed, **fields)


class GpuCollector:
    """prometheus_client collector: GPU gauges from the latest snapshot, never a live call."""

    def __init__(self, monitor: GpuMonitor) -> None:
        self._monitor = monitor

    def describe(self) -> Iterator[Metric]:
        """The names this collector owns, so a registry can refuse clashes."""
        for name, doc, _ in _GPU_GAUGES:
            yield GaugeMetricFamily(name, doc, labels=GPU_LABELS)
        yield from self._own_families()[:2]
        yield GaugeMetricFamily("ml_model_memory_bytes", "", labels=("model_name",))

    def collect(self) -> Iterator[Metric]:
        """Every GPU family that has a sample; drift_sidecar_gpu_available always."""
        mon = self._monitor
        gpus = mon.readings if mon.available else ()
        for name, doc, attr in _GPU_GAUGES:
            fam = GaugeMetricFamily(name, doc, labels=GPU_LABELS)
            for reading in gpus:
                value = getattr(reading, attr)
                if value is not None:
                    fam.add_metric(reading.labels(), value)
            if fam.samples:
                yield fam
        available, errors = self._own_families()
        available.add_metric([], 1.0 if mon.available else 0.0)
        yield available
        for reason, count in sorted(mon.error_counts().items()):
            errors.add_metric([reason], count)
        if errors.samples:
            yield errors
        memory = GaugeMetricFamily(
            "ml_model_memory_bytes",
            "GPU memory held by the model server, bytes: its own recent report, else NVML's "
            "per-process figure.",
            labels=("model_name",),
        )
        for model, nbytes in sorted(mon.model_memory().items()):
            memory.add_metric([model], nbytes)
        if memory.samples:
            yield memory

    @staticmethod
    def _own_families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                "drift_sidecar_gpu_available",
                "1 while NVML is up and the latest poll read at least one GPU.",
            ),
            CounterMetricFamily(
                "drift_sidecar_gpu_errors",
                "NVML errors while polling (gpu_lost, xid, ...), by reason.",
                labels=("reason",),
            ),
        )


def _parse_enabled(enabled: str | bool) -> str | bool:
    if isinstance(enabled, bool):
        return enabled
    if isinstance(enabled, str):
        word = enabled.strip().lower()
        if word == "auto":
            return "auto"
        if word in {"true", "false"}:
            return word == "true"
    raise ConfigError([f"gpu.enabled: expected auto, true or false, got {enabled!r}"])


def _pid_visible_here(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
