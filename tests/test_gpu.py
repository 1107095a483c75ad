"""GPU monitor: every metric and every error path over a fake NVML, plus the real library here."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pynvml
import pytest
from fake_nvml import FakeGpu, FakeNvml, nvml_library_loadable
from harness import DaemonProcess, wait_for
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

import sidecar.gpu as gpu_mod
from sidecar.errors import ConfigError, GpuError
from sidecar.gpu import (
    GpuMonitor,
    NvmlCallError,
    ProcessMemory,
    PynvmlBackend,
    translate_nvml_error,
)

ROOT = Path(__file__).resolve().parent.parent
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-000000000000"
L0 = {"gpu_id": "0", "UUID": UUID0, "modelName": "NVIDIA H100 80GB HBM3"}
L1 = {"gpu_id": "1", "UUID": UUID1, "modelName": "NVIDIA A10G"}
GPU_METRICS = (
    "ml_gpu_utilization_percent",
    "ml_gpu_memory_used_bytes",
    "ml_gpu_memory_total_bytes",
    "ml_gpu_temperature_celsius",
    "ml_gpu_power_watts",
    "ml_gpu_sm_clock_hertz",
    "ml_gpu_last_xid",
)


class Clock:
    """A hand-moved clock for log rate limits and report freshness."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def two_gpus() -> tuple[FakeGpu, FakeGpu]:
    return (
        FakeGpu(
            UUID0,
            utilization=87,
            memory_used=12 * 1024**3,
            memory_total=80 * 1024**3,
            temperature=61,
            power_mw=312_500,
            sm_clock_mhz=1755,
        ),
        FakeGpu(
            UUID1,
            name="NVIDIA A10G",
            utilization=3,
            memory_used=512 * 1024**2,
            memory_total=24 * 1024**3,
            temperature=40,
            power_mw=58_000,
            sm_clock_mhz=210,
        ),
    )


def registry_for(monitor: GpuMonitor) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    return registry


def errors(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("drift_sidecar_gpu_errors_total", {"reason": reason})


def gpu_lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "ml_gpu_" in line]


# -- metrics -------------------------------------------------------------------------------


def test_every_gpu_metric_in_base_units_with_dcgm_labels() -> None:
    g0, g1 = two_gpus()
    monitor = GpuMonitor.create("auto", 5, backend=FakeNvml([g0, g1]))
    registry = registry_for(monitor)
    monitor.poll_once()

    get = registry.get_sample_value
    assert monitor.available
    assert get("drift_sidecar_gpu_available") == 1
    assert get("ml_gpu_utilization_percent", L0) == 87
    assert get("ml_gpu_memory_used_bytes", L0) == 12 * 1024**3
    assert get("ml_gpu_memory_total_bytes", L0) == 80 * 1024**3
    assert get("ml_gpu_temperature_celsius", L0) == 61
    assert get("ml_gpu_power_watts", L0) == 312.5
    assert get("ml_gpu_sm_clock_hertz", L0) == 1755e6
    assert get("ml_gpu_last_xid", L0) == 0
    assert get("ml_gpu_utilization_percent", L1) == 3
    assert get("ml_gpu_memory_total_bytes", L1) == 24 * 1024**3
    assert get("ml_gpu_sm_clock_hertz", L1) == 210e6
    assert get("drift_sidecar_gpu_errors_total", {"reason": "gpu_lost"}) is None

    g0.utilization, g0.memory_used = 5, 1024**3
    monitor.poll_once()
    assert get("ml_gpu_utilization_percent", L0) == 5
    assert get("ml_gpu_memory_used_bytes", L0) == 1024**3


def test_collect_reads_the_cached_snapshot_not_nvml() -> None:
    (g0,) = two_gpus()[:1]
    nvml = FakeNvml([g0])
    monitor = GpuMonitor.create("auto", 5, backend=nvml)
    registry = registry_for(monitor)
    monitor.poll_once()
    calls = len(nvml.calls)
    generate_latest(registry)
    generate_latest(registry)
    assert len(nvml.calls) == calls


def test_collector_describes_its_names_so_clashes_are_refused() -> None:
    monitor = GpuMonitor.create(False, 5)
    registry = CollectorRegistry()
    Gauge("drift_sidecar_gpu_available", "owned elsewhere", registry=registry)
    with pytest.raises(ValueError, match="drift_sidecar_gpu_available"):
        registry.register(monitor.collector())


# -- no GPU, enabled modes -----------------------------------------------------------------


def test_auto_without_driver_logs_once_and_exports_no_gpu_series() -> None:
    nvml = FakeNvml([FakeGpu(UUID0)], init_error="library_not_found")
    with capture_logs() as logs:
        monitor = GpuMonitor.create("auto", 5, backend=nvml)
        registry = registry_for(monitor)
        monitor.poll_once()
        asyncio.run(_run_briefly(monitor))
        generate_latest(registry)

    assert [e["event"] for e in logs] == ["gpu_unavailable"]
    assert "library not found" in logs[0]["reason"]
    assert logs[0]["log_level"] == "info"
    assert not monitor.available
    assert registry.get_sample_value("drift_sidecar_gpu_available") == 0
    assert gpu_lines(registry) == []
    assert nvml.calls == ["nvmlInit"]


def test_auto_with_zero_gpus_is_unavailable_and_shuts_nvml_down() -> None:
    nvml = FakeNvml([])
    with capture_logs() as logs:
        monitor = GpuMonitor.create("auto", 5, backend=nvml)
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("gpu_unavailable", "no NVIDIA GPU visible to NVML")
    ]
    assert not monitor.available
    assert nvml.calls[-1] == "nvmlShutdown"
    assert not nvml.initialized


@pytest.mark.parametrize("gpus", [[], [FakeGpu(UUID0)]])
def test_enabled_true_without_gpu_refuses_to_start(gpus: list[FakeGpu]) -> None:
    init_error = "driver_not_loaded" if gpus else None
    with pytest.raises(GpuError, match=r"gpu\.enabled is true") as info:
        GpuMonitor.create(True, 5, backend=FakeNvml(gpus, init_error=init_error))
    assert ("driver not loaded" if gpus else "no NVIDIA GPU") in str(info.value)


def test_disabled_never_touches_nvml_and_still_says_unavailable() -> None:
    nvml = FakeNvml([FakeGpu(UUID0)])
    with capture_logs() as logs:
        monitor = GpuMonitor.create(False, 5, backend=nvml)
        registry = registry_for(monitor)
        monitor.poll_once()
        asyncio.run(_run_briefly(monitor))
        monitor.close()
    assert nvml.calls == []
    assert logs == []
    assert registry.get_sample_value("drift_sidecar_gpu_available") == 0
    assert gpu_lines(registry) == []


@pytest.mark.parametrize(
    ("enabled", "expected"), [("AUTO", True), ("true", True), ("false", False), (True, True)]
)
def test_enabled_accepts_yaml_spellings(enabled: str | bool, expected: bool) -> None:
    nvml = FakeNvml([FakeGpu(UUID0)])
    assert GpuMonitor.create(enabled, 5, backend=nvml).available is expected


@pytest.mark.parametrize(
    ("enabled", "interval", "key"),
    [
        ("maybe", 5, "gpu.enabled"),
        (1, 5, "gpu.enabled"),
        ("auto", 0, "gpu.interval_s"),
        ("auto", float("nan"), "gpu.interval_s"),
    ],
)
def test_bad_settings_name_their_key(enabled: str | bool, interval: float, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        GpuMonitor.create(enabled, interval, backend=FakeNvml([FakeGpu(UUID0)]))


# -- unsupported fields and poll errors ----------------------------------------------------


def test_unsupported_fields_are_omitted_for_that_gpu_only_and_not_asked_again() -> None:
    g0, g1 = two_gpus()
    g1.unsupported = {"temperature", "power", "sm_clock", "events"}
    nvml = FakeNvml([g0, g1])
    monitor = GpuMonitor.create("auto", 5, backend=nvml)
    registry = registry_for(monitor)
    monitor.poll_once()
    monitor.poll_once()

    get = registry.get_sample_value
    for name in (
        "ml_gpu_temperature_celsius",
        "ml_gpu_power_watts",
        "ml_gpu_sm_clock_hertz",
        "ml_gpu_last_xid",
    ):
        assert get(name, L0) is not None
        assert get(name, L1) is None
    assert get("ml_gpu_utilization_percent", L1) == 3
    assert get("ml_gpu_memory_used_bytes", L1) == 512 * 1024**2
    assert generate_latest(registry).count(b"drift_sidecar_gpu_errors_total") == 0
    # g0 on both polls, g1 on the first only: NotSupported is remembered.
    assert nvml.calls.count("nvmlDeviceGetTemperature") == 3
    assert nvml.calls.count("nvmlDeviceGetPowerUsage") == 3


def test_no_event_sets_means_no_xid_series() -> None:
    nvml = FakeNvml([FakeGpu(UUID0)])
    nvml.event_sets_supported = False
    monitor = GpuMonitor.create("auto", 5, backend=nvml)
    registry = registry_for(monitor)
    monitor.poll_once()
    assert registry.get_sample_value("ml_gpu_last_xid", L0) is None
    assert registry.get_sample_value("ml_gpu_utilization_percent", L0) == 0


def test_a_failing_field_is_counted_and_the_rest_still_reported() -> None:
    g0, _ = two_gpus()
    g0.failing = {"power": "no_permission"}
    monitor = GpuMonitor.create("auto", 5, backend=FakeNvml([g0]))
    registry = registry_for(monitor)
    monitor.poll_once()
    assert registry.get_sample_value("ml_gpu_power_watts", L0) is None
    assert registry.get_sample_value("ml_gpu_temperature_celsius", L0) == 61
    assert errors(registry, "no_permission") == 1


def test_gpu_lost_mid_run_drops_its_series_counts_and_recovers() -> None:
    g0, g1 = two_gpus()
    clock = Clock()
    with capture_logs() as logs:
        monitor = GpuMonitor.create("auto", 5, backend=FakeNvml([g0, g1]), monotonic=clock)
        registry = registry_for(monitor)
        monitor.poll_once()
        g1.lost = True
        monitor.poll_once()

    get = registry.get_sample_value
    assert get("ml_gpu_utilization_percent", L0) == 87
    assert all(get(name, L1) is None for name in GPU_METRICS)
    assert errors(registry, "gpu_lost") == 1
    assert get("drift_sidecar_gpu_available") == 1
    lost = [e for e in logs if e["event"] == "gpu_error"]
    assert len(lost) == 1
    assert (lost[0]["reason"], lost[0]["UUID"], lost[0]["log_level"]) == (
        "gpu_lost",
        UUID1,
        "warning",
    )

    g0.lost = True
    monitor.poll_once()
    assert not monitor.available
    assert get("drift_sidecar_gpu_available") == 0
    assert gpu_lines(registry) == []
    assert errors(registry, "gpu_lost") == 3

    g0.lost = g1.lost = False
    monitor.poll_once()
    assert monitor.available
    assert get("ml_gpu_utilization_percent", L1) == 3


def test_xid_event_sets_last_xid_counts_and_warns() -> None:
    g0, g1 = two_gpus()
    with capture_logs() as logs:
        monitor = GpuMonitor.create("auto", 5, backend=FakeNvml([g0, g1]))
        registry = registry_for(monitor)
        monitor.poll_once()
        assert registry.get_sample_value("ml_gpu_last_xid", L0) == 0
        g0.xids.extend([48, 79])
        monitor.poll_once()
        monitor.poll_once()

    assert registry.get_sample_value("ml_gpu_last_xid", L0) == 79
    assert registry.get_sample_value("ml_gpu_last_xid", L1) == 0
    assert errors(registry, "xid") == 2
    xids = [(e["xid"], e["UUID"]) for e in logs if e.get("reason") == "xid"]
    assert xids == [(48, UUID0), (79, UUID0)]
    assert registry.get_sample_value("ml_gpu_utilization_percent", L0) == 87


def test_repeated_errors_do_not_flood_the_log() -> None:
    g0, _ = two_gpus()
    clock = Clock(100.0)
    monitor = GpuMonitor.create("auto", 5, backend=FakeNvml([g0]), monotonic=clock, log_every_s=60)
    registry = registry_for(monitor)
    g0.lost = True
    with capture_logs() as logs:
        for _ in range(50):
            monitor.poll_once()
            clock.now += 1  # 50 polls in 50 s: one line
        clock.now += 30
        monitor.poll_once()  # the next period: one more line, with the count it held back
    assert errors(registry, "gpu_lost") == 51
    assert [(e["event"], e["suppressed"]) for e in logs] == [("gpu_error", 0), ("gpu_error", 49)]


# -- the run loop ----------------------------------------------------------------------------


async def _run_briefly(monitor: GpuMonitor) -> None:
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)
    assert not task.done()  # an eternal task: it does not end on its own
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)


def test_run_polls_every_interval_and_returns_promptly_when_cancelled() -> None:
    g0, _ = two_gpus()
    nvml = FakeNvml([g0])
    monitor = GpuMonitor.create("auto", 0.02, backend=nvml)

    async def scenario() -> None:
        task = asyncio.create_task(monitor.run())
        await asyncio.to_thread(
            wait_for, lambda: nvml.calls.count("nvmlDeviceGetUtilizationRates") >= 3, 5.0
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=1)

    asyncio.run(scenario())
    assert monitor.readings[0].utilization_percent == 87
    monitor.close()


class BlockingNvml(FakeNvml):
    """Utilization blocks until released, like a driver call that hangs."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        super().__init__(gpus)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: set[str] = set()

    def utilization_gpu_percent(self, handle: object) -> int:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        self.release.wait(timeout=10)
        return super().utilization_gpu_percent(handle)


def test_a_hung_nvml_call_never_blocks_the_loop_or_cancellation() -> None:
    nvml = BlockingNvml([FakeGpu(UUID0)])
    monitor = GpuMonitor.create("auto", 0.01, backend=nvml)

    async def scenario() -> float:
        task = asyncio.create_task(monitor.run())
        await asyncio.to_thread(wait_for, nvml.entered.is_set, 5.0)
        ticks = 0
        for _ in range(20):  # the loop keeps turning while NVML hangs
            await asyncio.sleep(0)
            ticks += 1
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=1)
        assert ticks == 20
        return time.monotonic() - t0

    assert asyncio.run(scenario()) < 0.5
    assert threading.current_thread().name not in nvml.threads
    nvml.release.set()
    monitor.close()  # waits for the poll in flight, then shuts NVML down
    assert nvml.calls[-1] == "nvmlShutdown"


class ExplodingNvml(FakeNvml):
    def utilization_gpu_percent(self, handle: object) -> int:
        raise RuntimeError("driver returned garbage")


def test_unexpected_poll_errors_are_counted_and_the_loop_goes_on() -> None:
    nvml = ExplodingNvml([FakeGpu(UUID0)])
    with capture_logs() as logs:
        monitor = GpuMonitor.create("auto", 0.01, backend=nvml)
        registry = registry_for(monitor)

        async def scenario() -> None:
            task = asyncio.create_task(monitor.run())
            await asyncio.to_thread(
                wait_for, lambda: (errors(registry, "unexpected") or 0) >= 3, 5.0
            )
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(scenario())
    unexpected = [e for e in logs if e.get("reason") == "unexpected"]
    assert len(unexpected) == 1  # rate-limited
    assert "driver returned garbage" in unexpected[0]["error"]


# -- close -------------------------------------------------------------------------------------


def test_close_frees_event_sets_shuts_down_once_and_stops_polling() -> None:
    g0, g1 = two_gpus()
    nvml = FakeNvml([g0, g1])
    monitor = GpuMonitor.create("auto", 5, backend=nvml)
    registry = registry_for(monitor)
    monitor.poll_once()
    monitor.close()
    monitor.close()
    assert len(nvml.freed_event_sets) == 2
    assert nvml.calls.count("nvmlShutdown") == 1
    calls = len(nvml.calls)
    monitor.poll_once()
    assert len(nvml.calls) == calls
    assert registry.get_sample_value("drift_sidecar_gpu_available") == 0


def test_aclose_shuts_down_from_a_thread() -> None:
    nvml = FakeNvml([FakeGpu(UUID0)])
    monitor = GpuMonitor.create("auto", 5, backend=nvml)
    asyncio.run(monitor.aclose())
    assert nvml.calls[-1] == "nvmlShutdown"
    assert not monitor.available


class ShutdownFailsNvml(FakeNvml):
    def shutdown(self) -> None:
        super().shutdown()
        raise NvmlCallError("nvmlShutdown", "gpu_lost", "GPU is lost")


def test_close_logs_a_failed_shutdown_and_does_not_raise() -> None:
    monitor = GpuMonitor.create("auto", 5, backend=ShutdownFailsNvml([FakeGpu(UUID0)]))
    with capture_logs() as logs:
        monitor.close()
    assert [(e["event"], e["reason"]) for e in logs] == [("gpu_shutdown_failed", "gpu_lost")]


# -- model memory ------------------------------------------------------------------------------


def test_fresh_reported_model_memory_wins_then_nvml_then_absent() -> None:
    g0, g1 = two_gpus()
    g0.processes = [ProcessMemory(4242, 3 * 1024**3), ProcessMemory(9999, 1024**3)]
    g1.processes = [ProcessMemory(4242, 1024**2), ProcessMemory(4243, None)]
    clock = Clock()
    monitor = GpuMonitor.create(
        "auto",
        5,
        backend=FakeNvml([g0, g1]),
        wall_clock=clock,
        model_pids={"fraud": [4242, 4243]},
    )
    registry = registry_for(monitor)
    monitor.poll_once()
    fraud = {"model_name": "fraud"}
    nvml_figure = 3 * 1024**3 + 1024**2
    assert registry.get_sample_value("ml_model_memory_bytes", fraud) == nvml_figure

    monitor.report_model_memory("fraud", 2_000_000_000, ts=clock.now)
    assert registry.get_sample_value("ml_model_memory_bytes", fraud) == 2_000_000_000
    clock.now += 15  # exactly 3 x interval_s: still fresh
    assert registry.get_sample_value("ml_model_memory_bytes", fraud) == 2_000_000_000
    clock.now += 0.5
    assert registry.get_sample_value("ml_model_memory_bytes", fraud) == nvml_figure

    g0.processes, g1.processes = [], []
    monitor.poll_once()
    assert registry.get_sample_value("ml_model_memory_bytes", fraud) is None


def test_reported_model_memory_without_nvml_and_with_bad_input() -> None:
    clock = Clock()
    monitor = GpuMonitor.create(False, 5, wall_clock=clock)
    registry = registry_for(monitor)
    monitor.report_model_memory("fraud", 123, ts=clock.now + 3600)  # client clock ahead
    monitor.report_model_memory("fraud", -1, ts=clock.now)
    monitor.report_model_memory("fraud", True, ts=clock.now)
    assert registry.get_sample_value("ml_model_memory_bytes", {"model_name": "fraud"}) == 123
    clock.now += 16  # the future ts was clamped to now, so it goes stale on time
    assert registry.get_sample_value("ml_model_memory_bytes", {"model_name": "fraud"}) is None


def test_reported_model_names_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_mod, "MAX_REPORTED_MODELS", 3)
    clock = Clock()
    monitor = GpuMonitor.create(False, 5, wall_clock=clock)
    with capture_logs() as logs:
        for i in range(10):
            monitor.report_model_memory(f"m{i}", i, ts=clock.now)
        monitor.report_model_memory("m0", 100, ts=clock.now)  # known names still update
    assert monitor.model_memory() == {"m0": 100, "m1": 1, "m2": 2}
    assert [e["event"] for e in logs] == ["model_memory_dropped"]


def test_visible_processes_attributed_to_the_pod_model_except_our_own() -> None:
    g0, _ = two_gpus()
    g0.processes = [
        ProcessMemory(os.getpid(), 10**9),
        ProcessMemory(77, 2 * 10**9),
        ProcessMemory(88, 4 * 10**9),
    ]
    monitor = GpuMonitor.create(
        "auto",
        5,
        backend=FakeNvml([g0]),
        visible_process_model="fraud",
        pid_visible=lambda pid: pid in {77, os.getpid()},
    )
    monitor.poll_once()
    assert monitor.model_memory() == {"fraud": 2 * 10**9}


def test_process_list_is_not_read_unless_attribution_is_configured() -> None:
    g0, _ = two_gpus()
    g0.processes = [ProcessMemory(77, 10**9)]
    nvml = FakeNvml([g0])
    monitor = GpuMonitor.create("auto", 5, backend=nvml)
    monitor.poll_once()
    assert "nvmlDeviceGetComputeRunningProcesses" not in nvml.calls
    assert monitor.model_memory() == {}


def test_unsupported_process_list_is_skipped_quietly() -> None:
    g0, _ = two_gpus()
    g0.unsupported = {"processes"}
    nvml = FakeNvml([g0])
    monitor = GpuMonitor.create("auto", 5, backend=nvml, model_pids={"fraud": [1]})
    registry = registry_for(monitor)
    monitor.poll_once()
    monitor.poll_once()
    assert nvml.calls.count("nvmlDeviceGetComputeRunningProcesses") == 1
    assert registry.get_sample_value("ml_model_memory_bytes", {"model_name": "fraud"}) is None
    assert b"drift_sidecar_gpu_errors_total" not in generate_latest(registry)


# -- the real pynvml library ---------------------------------------------------------------


def test_real_backend_in_auto_mode_matches_this_machine() -> None:
    with capture_logs() as logs:
        monitor = GpuMonitor.create("auto", 5, backend=PynvmlBackend())
    registry = registry_for(monitor)
    try:
        if nvml_library_loadable():
            monitor.poll_once()
            expected = 1 if monitor.readings else 0
            assert registry.get_sample_value("drift_sidecar_gpu_available") == expected
        else:
            assert not monitor.available
            assert registry.get_sample_value("drift_sidecar_gpu_available") == 0
            assert gpu_lines(registry) == []
            assert len(logs) == 1
            assert logs[0]["event"] == "gpu_unavailable"
            assert "NVML Shared Library Not Found" in logs[0]["reason"]
            assert "library_not_found" in logs[0]["reason"]
            with pytest.raises(GpuError, match="NVML Shared Library Not Found"):
                GpuMonitor.create(True, 5, backend=PynvmlBackend())
    finally:
        monitor.close()


def test_real_backend_translates_pynvml_errors_at_the_boundary() -> None:
    # Without nvmlInit, pynvml has no library handle and raises NVMLError_Uninitialized.
    with pytest.raises(NvmlCallError) as info:
        PynvmlBackend().device_count()
    assert info.value.reason == "uninitialized"
    assert info.value.call == "nvmlDeviceGetCount"
    assert isinstance(info.value.__cause__, pynvml.NVMLError)


@pytest.mark.parametrize(
    ("exc", "reason", "unsupported"),
    [
        (pynvml.NVMLError_GpuIsLost(), "gpu_lost", False),
        (pynvml.NVMLError_NotSupported(), "not_supported", True),
        (pynvml.NVMLError_FunctionNotFound(), "function_not_found", True),
        (pynvml.NVMLError_Timeout(), "timeout", False),
        (pynvml.NVMLError_LibraryNotFound(), "library_not_found", False),
        (pynvml.NVMLError_InsufficientSize(), "nvml_error", False),
        (pynvml.NVMLLibraryMismatchError("pynvml too new"), "library_mismatch", False),
        (OSError("odd"), "nvml_error", False),
    ],
)
def test_translate_nvml_error(exc: Exception, reason: str, unsupported: bool) -> None:
    err = translate_nvml_error("nvmlDeviceGetPowerUsage", exc)
    assert (err.reason, err.unsupported) == (reason, unsupported)
    assert isinstance(err, GpuError)
    assert "nvmlDeviceGetPowerUsage" in str(err)


# -- bench/gpu_check.py smoke ---------------------------------------------------------------


def _load_gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_gpu_check_help_and_missing_nvidia_smi(tmp_path: Path) -> None:
    script = str(ROOT / "bench" / "gpu_check.py")
    res = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert res.returncode == 0
    assert "--load-seconds" in res.stdout
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty PATH: no nvidia-smi anywhere
    res = subprocess.run(
        [sys.executable, script, "--no-install"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    assert res.returncode == 2
    assert "nvidia-smi not found" in res.stderr


def test_gpu_check_compares_a_scrape_with_nvidia_smi() -> None:
    gc = _load_gpu_check()
    args = gc.parse_args(["--load-seconds", "3", "--no-install"])
    assert (args.load_seconds, args.no_install, args.port) == (3.0, True, 0)
    smi = gc.parse_smi_csv(
        f"0, {UUID0}, NVIDIA H100 80GB HBM3, 97, 2100, 81559\n"
        f"1, {UUID1}, NVIDIA A10G, [N/A], 0, 23028\n"
    )
    assert smi[0].memory_used == 2100 * gc.MIB
    mib = 1024**2
    scrape = (
        "drift_sidecar_gpu_available 1\n"
        f'ml_gpu_utilization_percent{{gpu_id="0",UUID="{UUID0}",'
        'modelName="NVIDIA H100 80GB HBM3"} 95\n'
        f'ml_gpu_memory_used_bytes{{gpu_id="0",UUID="{UUID0}",'
        f'modelName="NVIDIA H100 80GB HBM3"}} {2150 * mib}\n'
        f'ml_gpu_memory_total_bytes{{gpu_id="0",UUID="{UUID0}",'
        f'modelName="NVIDIA H100 80GB HBM3"}} {81559 * mib}\n'
    )
    samples = gc.parse_metrics(scrape)
    checks = gc.compare(smi[:1], samples, busy_uuid=UUID0, max_util={UUID0: 95.0})
    assert all(c.ok for c in checks), [c.line() for c in checks]
    assert len(checks) == 6

    off = scrape.replace(str(2150 * mib), str(3000 * mib))
    checks = gc.compare(smi, gc.parse_metrics(off), busy_uuid=UUID0, max_util={UUID0: 0.0})
    failed = {c.name for c in checks if not c.ok}
    assert failed == {
        f"gpu 0 ({UUID0}) ml_gpu_memory_used_bytes",
        f"gpu 1 ({UUID1}) series present",
        f"utilization > 0 under load ({UUID0})",
    }


# -- the real daemon on this machine ---------------------------------------------------------


def _daemon_config(enabled: str | bool) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "fraud",
                "baseline": {"capture": 1000},
                "features": [{"name": "amount", "type": "numeric"}],
                "prediction": {"type": "numeric"},
            }
        ],
        "gpu": {"enabled": enabled, "interval_s": 1},
    }


def _scrape(d: DaemonProcess, path: str = "/metrics") -> str:
    status, body = d.get(path)
    assert status == 200, body
    return body.decode()


@pytest.mark.skipif(nvml_library_loadable(), reason="needs a machine without an NVIDIA driver")
def test_daemon_without_gpu_stays_healthy_and_reports_unavailable(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    d = daemon_factory(_daemon_config("auto"))
    wait_for(lambda: "drift_sidecar_gpu_available" in _scrape(d), 20)
    event = {"kind": "stats", "model": "fraud", "model_memory_bytes": 12345}
    d.send([event])
    wait_for(lambda: "ml_model_memory_bytes" in _scrape(d), 20)
    text = _scrape(d)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert values[("drift_sidecar_gpu_available", ())] == 0
    assert values[("ml_model_memory_bytes", (("model_name", "fraud"),))] == 12345
    assert "ml_gpu_" not in text
    assert _scrape(d, "/healthz")
    assert d.proc.poll() is None
    code = d.stop(timeout=20)
    assert code == 0
    lines = d.logs().splitlines()
    assert sum("gpu_unavailable" in line for line in lines) == 1


@pytest.mark.skipif(nvml_library_loadable(), reason="needs a machine without an NVIDIA driver")
def test_daemon_with_gpu_required_refuses_to_start(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    d = daemon_factory(_daemon_config(True), wait_up=False)
    code = d.proc.wait(timeout=30)
    assert code != 0
    assert "gpu.enabled is true" in d.logs()
