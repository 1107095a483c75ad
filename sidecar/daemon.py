"""Startup, the long-running tasks, signals, reload and shutdown.

Signal handlers only set events; every background task is supervised so that its failure
is logged when it happens, and an eternal task that ends stops the daemon with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar.baseline import load_baseline, write_baseline
from sidecar.config import Config, ModelSpec, load_config
from sidecar.drift import DriftParams, check_model
from sidecar.errors import BaselineError, ConfigError, SidecarError
from sidecar.gpu import GpuMonitor
from sidecar.ingest import IngestServer
from sidecar.metrics import Health, SidecarCollector
from sidecar.pipeline import Pipeline
from sidecar.server import make_app
from sidecar.state import StateStore
from sidecar.stats.reference import Baseline, CategoricalReference
from sidecar.tracker import CaptureData, ModelTracker

log = structlog.get_logger("sidecar.daemon")

SHUTDOWN_GRACE_S = 10.0
"""Leftover tasks get this long after the root tasks stop; well inside a pod's 30 s grace."""


class Daemon:
    def __init__(self, config: Config, *, gpu: GpuMonitor | None = None) -> None:
        self.config = config
        self.health = Health()
        self.registry = CollectorRegistry(auto_describe=False)
        self.pipeline = Pipeline(
            config, self.health, on_capture=self._on_capture, on_stats=self._on_stats
        )
        self.ingest = IngestServer(config, self.pipeline, self.health)
        self.registry.register(
            SidecarCollector(lambda: list(self.pipeline.trackers.values()), self.health)
        )
        self.gpu = gpu if gpu is not None else GpuMonitor.create(
            config.gpu.enabled, config.gpu.interval_s,
            model_pids=config.gpu.model_pids,
            visible_process_model=config.gpu.visible_process_model,
        )
        self.registry.register(self.gpu.collector())
        self.state = StateStore(config.state_path)
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        """Set once the socket and HTTP listen and every task runs."""
        self._reload = asyncio.Event()
        self._failed: BaseException | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._drift_tasks: dict[str, asyncio.Task[Any]] = {}
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        try:
            await self.start()
            self._spawn("reload-watcher", self._reload_watcher())
            if self.config.reload.watch and self.config.source is not None:
                self._spawn("file-watcher", self._file_watcher(), eternal=True)
            await self._stop.wait()
        finally:
            await asyncio.shield(self.shutdown())
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 1 if self._failed is not None else 0

    async def start(self) -> None:
        baselines = await asyncio.to_thread(load_baselines, self.config)
        for name, baseline in baselines.items():
            self.pipeline.trackers[name].install_baseline(baseline)
        restored = await asyncio.to_thread(self.state.restore, self.pipeline.trackers)
        await self.ingest.start()
        app = make_app(self.registry, self)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http.host, self.config.http.port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                [f"http: cannot listen on {self.config.http.host}:{self.config.http.port}: "
                 f"{exc.strerror or exc}"], self.config.source or "<embedded defaults>",
            ) from exc
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.config.http.port
        self._spawn("processor", self.ingest.process_forever(), eternal=True)
        self._spawn("gpu", self.gpu.run(), eternal=True)
        self._spawn("snapshots", self._snapshot_loop(), eternal=True)
        self._start_drift_loops()
        self.started.set()
        log.info(
            "started",
            socket=self.ingest.path,
            http=f"http://{self.config.http.host}:{self.http_port}/metrics",
            models=sorted(self.pipeline.trackers),
            restored_models=restored,
            gpu_available=self.gpu.available,
            config=self.config.source or "embedded defaults",
        )

    async def shutdown(self) -> None:
        """Stop accepting, drain what was accepted, write state, close."""
        t0 = time.monotonic()
        with contextlib.suppress(Exception):
            await self.ingest.stop_accepting()
        self.ingest.drain()
        tasks = [*self._tasks.values(), *self._drift_tasks.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
        await self._save_state()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.gpu.aclose()
        log.info("stopped", seconds=round(time.monotonic() - t0, 3),
                 accepted=sum(t.accepted for t in self.pipeline.trackers.values()))

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ supervision
    def _spawn(self, name: str, coro: Coroutine[Any, Any, Any], eternal: bool = False) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(lambda t: self._task_done(name, t, eternal))

    def _task_done(self, name: str, task: asyncio.Task[Any], eternal: bool) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task_failed", task=name, error=repr(exc), exc_info=exc)
            self._failed = exc
            self._stop.set()
        elif eternal:
            log.error("task_ended", task=name, reason="an eternal task returned")
            self._failed = RuntimeError(f"task {name} ended")
            self._stop.set()

    # ------------------------------------------------------------ drift
    def _start_drift_loops(self) -> None:
        for task in self._drift_tasks.values():
            task.cancel()
        self._drift_tasks = {}
        for name, tracker in self.pipeline.trackers.items():
            self._start_drift_loop(name, tracker)

    def _start_drift_loop(self, name: str, tracker: ModelTracker) -> None:
        task = asyncio.create_task(self._drift_loop(tracker), name=f"drift:{name}")
        task.add_done_callback(lambda t: self._task_done(f"drift:{name}", t, True))
        self._drift_tasks[name] = task

    async def _drift_loop(self, tracker: ModelTracker) -> None:
        while True:
            await asyncio.sleep(tracker.drift.interval_s)
            await self.check(tracker)

    async def check(self, tracker: ModelTracker) -> None:
        """One drift check: snapshot on the loop, statistics in a worker thread."""
        if tracker.baseline is None:
            return
        now = time.time()
        window = tracker.drift_window(tracker.window_snapshot(now))
        params = DriftParams.from_settings(tracker.drift)
        t0 = time.perf_counter()
        try:
            result = await asyncio.to_thread(check_model, tracker.baseline, window, params, now)
        except Exception as exc:
            self.health.check_errors[tracker.name] += 1
            log.error("drift_check_failed", model=tracker.name, error=repr(exc), exc_info=exc)
            return
        self.health.observe_check(tracker.name, time.perf_counter() - t0)
        tracker.latest = result
        if result.drifted:
            log.info("drift_detected", model=tracker.name,
                     features=[f.name for f in result.features if f.drifted],
                     prediction=bool(result.prediction and result.prediction.drifted))

    def _on_capture(self, tracker: ModelTracker, data: CaptureData) -> None:
        self._spawn(f"capture:{tracker.name}", self._finish_capture(tracker, data))

    async def _finish_capture(self, tracker: ModelTracker, data: CaptureData) -> None:
        path = self.state.captured_baseline_path(tracker.name)
        d = tracker.drift
        baseline = await asyncio.to_thread(
            write_baseline, path, tracker.name,
            numeric=data.numeric, categorical=data.categorical,
            prediction=data.prediction, prediction_kind=tracker.pred_kind,
            psi_bins=d.psi_bins, max_categories=d.max_categories,
        )
        baseline = dataclasses.replace(baseline, source="capture")
        warn_overflowed(baseline)
        tracker.install_baseline(baseline, backfill=True)
        log.info("baseline_captured", model=tracker.name, rows=baseline.rows,
                 path=str(path), sha256=baseline.sha256)

    def _on_stats(self, model: str, nbytes: int, ts: float) -> None:
        self.gpu.report_model_memory(model, nbytes, ts)

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.state.snapshot_interval_s)
            await self._save_state()

    async def _save_state(self) -> None:
        """Copy on the loop (trackers are only touched there), write in a thread."""
        try:
            snaps = self.state.collect(self.pipeline.trackers)
            await asyncio.to_thread(self.state.write, snaps)
        except Exception as exc:
            self.health.snapshots["failure"] += 1
            log.error("state_save_failed", error=repr(exc), exc_info=exc)
        else:
            self.health.snapshots["success"] += 1

    # ------------------------------------------------------------ reload
    async def _reload_watcher(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self.reload()

    async def _file_watcher(self) -> None:
        """`reload.watch`: a changed config file (mtime, size or inode) acts like SIGHUP;
        polling works the same on every filesystem, ConfigMap symlink swaps included."""
        assert self.config.source is not None
        last = _file_identity(self.config.source)
        while True:
            await asyncio.sleep(self.config.reload.interval_s)
            now = _file_identity(self.config.source)
            if now != last:
                last = now
                log.info("config_changed", config=self.config.source)
                self._reload.set()

    async def reload(self) -> bool:
        """Re-read the config file and baselines; on any error keep the running ones."""
        if self.config.source is None:
            log.warning("reload_skipped", reason="running on embedded defaults, no file")
            return False
        try:
            new = await asyncio.to_thread(load_config, self.config.source)
            baselines = await asyncio.to_thread(load_baselines, new)
            _check_immutable(self.config, new)
        except SidecarError as exc:
            self.health.reloads["failure"] += 1
            log.error("reload_refused", error=str(exc), kept=self.config.source)
            return False
        self._apply(new, baselines)
        self.health.reloads["success"] += 1
        log.info("reloaded", config=new.source, models=sorted(self.pipeline.trackers))
        return True

    def _apply(self, new: Config, baselines: dict[str, Baseline]) -> None:
        old_trackers = self.pipeline.trackers
        trackers: dict[str, ModelTracker] = {}
        for spec in new.models:
            old = old_trackers.get(spec.name)
            baseline = baselines.get(spec.name)
            if old is not None and old.spec == spec and new.drift_for(spec) == old.drift and (
                baseline is None or old.baseline is None
                or baseline.sha256 == old.baseline.sha256
            ):
                trackers[spec.name] = old  # unchanged: keep window, counters and capture
                continue
            t = ModelTracker(spec, new.drift_for(spec), on_capture=self._on_capture)
            if baseline is not None:
                t.install_baseline(baseline)
            trackers[spec.name] = t
        for name, t in old_trackers.items():
            if t.auto_registered and name not in trackers and new.auto_register.enabled:
                trackers[name] = t
        self.config = new
        self.pipeline.config = new
        self.pipeline.trackers = trackers
        self._start_drift_loops()

    # ------------------------------------------------------------ API state
    def readiness(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {}
        ready = True
        for name, t in self.pipeline.trackers.items():
            if t.baseline is not None:
                detail[name] = {"baseline": "ready", "source": t.baseline.source}
            elif t.capture is not None:
                ready = False
                detail[name] = {
                    "baseline": "capturing",
                    "captured": t.capture.count,
                    "target": t.capture.target,
                }
            else:
                ready = False
                detail[name] = {"baseline": "missing"}
        return ready, detail

    def drift_report(self) -> dict[str, Any]:
        models: dict[str, Any] = {}
        for name, t in self.pipeline.trackers.items():
            if t.latest is not None:
                models[name] = t.latest.to_json()
            elif t.baseline is None and t.capture is not None:
                models[name] = {
                    "status": "capturing_baseline",
                    "captured": t.capture.count,
                    "target": t.capture.target,
                }
            else:
                models[name] = {"status": "pending", "window_samples": len(t.window)}
            models[name]["window_samples"] = len(t.window)
        return {"models": models}


def load_baselines(config: Config) -> dict[str, Baseline]:
    """Every file baseline of the config, and captured ones already in the state folder."""
    out: dict[str, Baseline] = {}
    store = StateStore(config.state_path)
    for spec in config.models:
        path = _baseline_path(config, spec, store)
        if path is None:
            continue
        d = config.drift_for(spec)
        load = functools.partial(
            load_baseline, path, spec.name,
            numeric_names=[f.name for f in spec.features if f.type == "numeric"],
            categorical_names=[f.name for f in spec.features if f.type == "categorical"],
            prediction_kind=spec.prediction.type if spec.prediction else None,
            psi_bins=d.psi_bins, max_categories=d.max_categories,
        )
        if spec.baseline.path is not None:
            out[spec.name] = load()
            if spec.prediction is not None and out[spec.name].prediction is None:
                log.warning("prediction_drift_off", model=spec.name, baseline=str(path),
                            reason="the baseline has no `prediction` column")
            continue
        captured = _load_captured(path, spec.name, load)
        if captured is not None:
            out[spec.name] = dataclasses.replace(captured, source="capture")
    for baseline in out.values():
        warn_overflowed(baseline)
    return out


def warn_overflowed(baseline: Baseline) -> None:
    """Say which categorical columns have more categories than the tests count one by one
    (4 x max_categories): their remaining categories are compared only as a pool chosen by
    the baseline's own counts, which can raise false alarms (docs/statistics.md)."""
    refs = [*baseline.categorical]
    if isinstance(baseline.prediction, CategoricalReference):
        refs.append(baseline.prediction)
    for ref in refs:
        if ref.overflowed:
            log.warning(
                "categorical_reference_overflowed", model=baseline.model, column=ref.name,
                counted=len(ref.categories) + len(ref.tail), pooled_values=ref.residual,
                advice="raise drift.max_categories, or treat the column as high-cardinality",
            )


def _load_captured(path: Path, model: str, load: Callable[[], Baseline]) -> Baseline | None:
    """A captured baseline that no longer loads is set aside and captured again, instead of
    keeping the daemon from starting: the state folder is the sidecar's own, not the user's."""
    try:
        return load()
    except BaselineError as exc:
        aside = path.with_name(path.name + f".corrupt-{int(time.time())}")
        path.replace(aside)
        log.warning("state_discarded", model=model, reason=str(exc), moved_to=str(aside),
                    action="capturing the baseline again")
        return None


def _baseline_path(config: Config, spec: ModelSpec, store: StateStore) -> Path | None:
    if spec.baseline.path is not None:
        path = config.resolve(spec.baseline.path)
        if not path.exists():
            raise BaselineError(f"baseline file {path} for model {spec.name!r} does not exist")
        return path
    captured = store.captured_baseline_path(spec.name)
    return captured if captured.exists() else None


def _file_identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a ConfigMap update swaps the link's target
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _check_immutable(old: Config, new: Config) -> None:
    """Listening addresses cannot change under a running process; say so instead."""
    problems = []
    if old.socket_path != new.socket_path:
        problems.append("socket.path: cannot change on reload; restart the sidecar")
    if (old.http.host, old.http.port) != (new.http.host, new.http.port):
        problems.append("http: host and port cannot change on reload; restart the sidecar")
    if problems:
        raise ConfigError(problems, new.source or "<config>")


