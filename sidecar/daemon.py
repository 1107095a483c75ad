"""Startup, the long-running tasks, signals, reload and shutdown.

Signal handlers only set events; every background task is supervised so that its failure
is logged when it happens, and an eternal task that ends stops the daemon with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar.capture import CaptureData
from sidecar.captures import CaptureWriter
from sidecar.config import RESERVED_FEATURE_NAMES, Config, ModelSpec, label_fits, load_config
from sidecar.drift import DriftParams, check_model
from sidecar.errors import ConfigError, SidecarError, StateDirError
from sidecar.fsutil import FileLock, LockHeld, make_dirs
from sidecar.gpu import GpuMonitor
from sidecar.ingest import IngestServer
from sidecar.label_metrics import LabelCollector
from sidecar.labels_io import collect_pending, restore_pending, write_pending
from sidecar.memory import arrow_uses_malloc, give_back, then_give_back
from sidecar.metrics import Health, SidecarCollector
from sidecar.pipeline import Pipeline
from sidecar.reloading import check_immutable, file_identity, rebuild_trackers
from sidecar.server import CONNECTIONS, LimitedTCPSite, make_app
from sidecar.state import StateStore
from sidecar.statefiles import (
    AUTO_MODELS_FILE,
    DIR_MODE,
    auto_models_doc,
    clean_temp_files,
    prepare_state_dir,
    read_auto_models,
)
from sidecar.stats.reference import Baseline
from sidecar.tracker import ModelTracker

log = structlog.get_logger("sidecar.daemon")

SHUTDOWN_GRACE_S = 10.0
"""Leftover tasks get this long after the root tasks stop; well inside a pod's 30 s grace."""
RELOAD_GAP_S = 0.5
"""After a reload, signals for this long coalesce into one more: a SIGHUP storm costs at
most two reloads a second, and drift checks keep their schedule meanwhile."""


class Daemon:
    def __init__(self, config: Config, *, gpu: GpuMonitor | None = None) -> None:
        arrow_uses_malloc()
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
        self.gpu = (
            gpu
            if gpu is not None
            else GpuMonitor.create(
                config.gpu.enabled,
                config.gpu.interval_s,
                model_pids=config.gpu.model_pids,
                visible_process_model=config.gpu.visible_process_model,
            )
        )
        self.registry.register(self.gpu.collector())
        self.registry.register(
            LabelCollector(lambda: list(self.pipeline.trackers.values()), self.pipeline.labels)
        )
        self.state = StateStore(config.state_path)
        self.captures = CaptureWriter(
            self.state, self.health, self.pipeline, self._capture_installed
        )
        self._state_lock = FileLock(config.state_path / "lock")
        self.accepting = False
        """Whether POST /v1/events takes events: from start until shutdown begins."""
        self._socket_lost_logged = False
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        """Set once the socket and HTTP listen and every task runs."""
        self._reload = asyncio.Event()
        self._failed: BaseException | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._drift_tasks: dict[str, tuple[asyncio.Task[Any], ModelTracker, float]] = {}
        self._next_check: dict[str, float] = {}
        """Per model, the loop time its next drift check is due; survives a reload."""
        self._auto_doc: bytes | None = None
        self._pending_rows_on_disk = 0
        """Rows in the waiting-predictions file as last restored or written: while it and
        the store are both empty, a snapshot leaves the file as it is (nothing to say, and
        numpy's npz writer is not imported for it)."""
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        started = False
        try:
            await self.start()
            started = True
            self._spawn("reload-watcher", self._reload_watcher())
            if self.config.reload.watch and self.config.source is not None:
                self._spawn("file-watcher", self._file_watcher(), eternal=True)
            await self._stop.wait()
        finally:
            # A start that failed wrote nothing and accepted nothing: it only lets go of
            # what it took (socket, locks, port), and the error alone is reported.
            await asyncio.shield(self.shutdown() if started else self._abandon())
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 1 if self._failed is not None else 0

    async def start(self) -> None:
        # The socket first: a second sidecar on the same path stops here, before it reads
        # or writes any state.
        self.ingest.claim()
        await asyncio.to_thread(self._open_state)
        if self.config.models:
            # Imported only when there is something to load: sidecar.loading brings the
            # baseline reader and its modules, which a daemon with no model never uses.
            from sidecar.loading import load_baselines  # noqa: PLC0415

            baselines = await asyncio.to_thread(then_give_back(load_baselines), self.config)
            for name, baseline in baselines.items():
                self.pipeline.trackers[name].install_baseline(baseline)
        await self._restore_auto_models()
        restored = await asyncio.to_thread(self.state.restore, self.pipeline.trackers)
        self._pending_rows_on_disk = await asyncio.to_thread(
            restore_pending, self.state.root, self.pipeline.labels
        )
        await self.ingest.start()
        app = make_app(self.registry, self)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.config.http.idle_timeout_s,
        )
        await self._runner.setup()
        site = LimitedTCPSite(
            self._runner, self.config.http.host, self.config.http.port, app[CONNECTIONS]
        )
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                [
                    f"http: cannot listen on {self.config.http.host}:{self.config.http.port}: "
                    f"{exc.strerror or exc}"
                ],
                self.config.source or "<embedded defaults>",
            ) from exc
        self.http_port = site.bound_port
        self._spawn("processor", self.ingest.process_forever(), eternal=True)
        self._spawn("gpu", self.gpu.run(), eternal=True)
        self._spawn("snapshots", self._snapshot_loop(), eternal=True)
        self._sync_drift_loops()
        # What the start freed (parsing the config, restoring state, compiling modules
        # that have no bytecode yet) goes back to the system before the daemon settles.
        await asyncio.to_thread(give_back)
        self.accepting = True
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
        """Stop accepting (socket and HTTP), drain what was accepted, finish captures,
        write state, close; every event acknowledged before this is in the state."""
        t0 = time.monotonic()
        self.accepting = False  # POST /v1/events answers 503 from here on
        with contextlib.suppress(Exception):
            await self.ingest.stop_accepting()
        self.ingest.drain()
        tasks = [*self._tasks.values(), *(task for task, _, _ in self._drift_tasks.values())]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
        # A capture that finished (or finishes in the drain above) installs its baseline
        # before the snapshot, so the window that follows it is written too.
        await self.captures.wait(SHUTDOWN_GRACE_S)
        await self._save_state()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.gpu.aclose()
        self.ingest.close_socket()
        self._state_lock.release()
        log.info(
            "stopped",
            seconds=round(time.monotonic() - t0, 3),
            accepted=sum(t.accepted for t in self.pipeline.trackers.values()),
        )

    async def _abandon(self) -> None:
        """Undo a start that failed part way, writing nothing."""
        self.accepting = False
        for task in self._tasks.values():
            task.cancel()
        with contextlib.suppress(Exception):
            await self.ingest.stop_accepting()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        with contextlib.suppress(Exception):
            await self.gpu.aclose()
        self.ingest.close_socket()
        self._state_lock.release()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """/healthz: fails once the socket this daemon listens on is gone or replaced
        (events can no longer reach it; a restart makes it again)."""
        problem = self.ingest.socket_problem()
        if problem is None:
            return True, {"status": "ok"}
        if not self._socket_lost_logged:
            self._socket_lost_logged = True
            log.error("socket_lost", problem=problem, effect="/healthz fails until restart")
        return False, {"status": "socket_lost", "detail": problem}

    # ------------------------------------------------------------ state folder
    def _open_state(self) -> None:
        """Lock `state_dir`, clean what a killed writer left, and check that writes work.

        Another sidecar holding the lock stops this one (StateDirError): two processes
        would overwrite each other's snapshots. A folder that cannot be written is not
        fatal: the daemon runs degraded (state kept in memory, writes retried and counted).
        """
        root = self.state.root
        with contextlib.suppress(OSError):
            make_dirs(root, DIR_MODE)
        lock_problem = None
        try:
            self._state_lock.acquire()
        except LockHeld as exc:
            raise StateDirError(
                f"state_dir {root}: in use by another drift-sidecar "
                f"({exc.owner or 'pid unknown'} holds {exc.path})"
            ) from exc
        except OSError as exc:
            lock_problem = f"cannot lock {self._state_lock.path}: {exc.strerror or exc}"
        problem = prepare_state_dir(root) or lock_problem
        if self._state_lock.held:
            removed = clean_temp_files(root)
            if removed:
                log.info("state_temp_files_removed", state_dir=str(root), files=removed)
        if problem is not None:
            log.error(
                "state_dir_degraded",
                state_dir=str(root),
                reason=problem,
                effect="windows and captured baselines are kept in memory; every "
                "write is retried at each snapshot and counted as a failure",
            )

    async def _restore_auto_models(self) -> None:
        """Auto-registered models of the last run, with their captured baselines."""
        auto = self.config.auto_register
        if not auto.enabled:
            return
        specs = await asyncio.to_thread(
            read_auto_models,
            self.state.root,
            capture=auto.capture,
            max_models=auto.max_models,
            max_features=auto.max_features,
        )
        specs = [s for s in specs if s.name not in self.pipeline.trackers]
        limit = self.config.limits.max_label_bytes
        unfit = [s.name[:100] for s in specs if not _auto_spec_fits(s, limit)]
        if unfit:  # a file edited by hand, or written under a larger limit: not label values
            log.warning(
                "auto_registered_skipped",
                models=unfit,
                reason="a name is reserved or longer than limits.max_label_bytes",
            )
            specs = [s for s in specs if _auto_spec_fits(s, limit)]
        if not specs:
            return
        from sidecar.loading import captured_baseline  # noqa: PLC0415

        def load() -> dict[str, Baseline | None]:
            return {s.name: captured_baseline(self.config, s, self.state) for s in specs}

        baselines = await asyncio.to_thread(load)
        for spec in specs:
            t = ModelTracker(
                spec,
                self.config.drift,
                auto_registered=True,
                on_capture=self._on_capture,
                max_label_bytes=limit,
                max_stages=self.config.limits.max_stages,
            )
            baseline = baselines.get(spec.name)
            if baseline is not None:
                t.install_baseline(baseline)
            self.pipeline.trackers[spec.name] = t
        log.info("auto_registered_restored", models=[s.name for s in specs])

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
    def _sync_drift_loops(self) -> None:
        """One drift loop per model. A loop whose tracker and interval are unchanged keeps
        running; a replaced one starts at the old loop's next due time (or sooner, when the
        interval shrank), so reloads never push a check back."""
        now = asyncio.get_running_loop().time()
        trackers = self.pipeline.trackers
        for name in list(self._drift_tasks):
            if name not in trackers:
                self._drift_tasks.pop(name)[0].cancel()
                self._next_check.pop(name, None)
        for name, tracker in trackers.items():
            interval = tracker.drift.interval_s
            current = self._drift_tasks.get(name)
            if current is not None:
                task, running, running_interval = current
                if running is tracker and running_interval == interval and not task.done():
                    continue
                task.cancel()
            due = min(self._next_check.get(name, now + interval), now + interval)
            self._next_check[name] = due
            task = asyncio.create_task(self._drift_loop(tracker), name=f"drift:{name}")
            task.add_done_callback(functools.partial(self._drift_done, name))
            self._drift_tasks[name] = (task, tracker, interval)

    def _drift_done(self, name: str, task: asyncio.Task[Any]) -> None:
        self._task_done(f"drift:{name}", task, True)

    async def _drift_loop(self, tracker: ModelTracker) -> None:
        loop = asyncio.get_running_loop()
        name = tracker.name
        while True:
            due = self._next_check.get(name, loop.time() + tracker.drift.interval_s)
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self.check(tracker)
            self._next_check[name] = loop.time() + tracker.drift.interval_s

    async def check(self, tracker: ModelTracker) -> None:
        """One drift check: snapshot on the loop, statistics in a worker thread."""
        if tracker.baseline is None:
            return
        now = time.time()
        params = DriftParams.from_settings(tracker.drift)
        t0 = time.perf_counter()
        # Any failure, in the window copy as in the statistics, costs this one check of this
        # one model: counted, logged, and the loop tries again at the next interval.
        try:
            window = tracker.drift_window(tracker.window_snapshot(now))
            result = await asyncio.to_thread(
                then_give_back(check_model), tracker.baseline, window, params, now
            )
        except Exception as exc:
            self.health.check_errors[tracker.name] += 1
            log.error("drift_check_failed", model=tracker.name, error=repr(exc), exc_info=exc)
            return
        self.health.observe_check(tracker.name, time.perf_counter() - t0)
        tracker.latest = result
        if result.drifted:
            log.info(
                "drift_detected",
                model=tracker.name,
                features=[f.name for f in result.features if f.drifted],
                prediction=bool(result.prediction and result.prediction.drifted),
                embedding=bool(result.embedding and result.embedding.drifted),
            )

    def _on_capture(self, tracker: ModelTracker, data: CaptureData) -> None:
        self.captures.start(tracker, data)

    def _capture_installed(self) -> None:
        if self.started.is_set() and self.accepting:
            self._sync_drift_loops()  # an auto-registered model gets its loop now

    def _on_stats(self, model: str, nbytes: int, ts: float) -> None:
        self.gpu.report_model_memory(model, nbytes, ts)

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.state.snapshot_interval_s)
            await self._save_state()

    async def _save_state(self) -> None:
        """Copy on the loop (trackers are only touched there), write in a thread. A failure
        (full disk, read-only folder) is logged and counted, and the next snapshot tries
        again; it never stops the daemon."""
        await self.captures.write_unwritten()
        try:
            snaps = self.state.collect(self.pipeline.trackers)
            auto = self._auto_models_doc()
            self.pipeline.labels.expire(time.time())
            pending = collect_pending(self.pipeline.labels)
            await asyncio.to_thread(self.state.write, snaps)
            if pending.rows or self._pending_rows_on_disk:
                await asyncio.to_thread(write_pending, self.state.root, pending)
                self._pending_rows_on_disk = pending.rows
            if auto is not None:
                await asyncio.to_thread(self.state.write_file, AUTO_MODELS_FILE, auto)
                self._auto_doc = auto
        except Exception as exc:
            self.health.snapshots["failure"] += 1
            log.error("state_save_failed", error=repr(exc)[:300])
        else:
            self.health.snapshots["success"] += 1

    def _auto_models_doc(self) -> bytes | None:
        """The auto-registered models' list, when it changed since it was last written."""
        if not self.config.auto_register.enabled:
            return None  # left as it is: turning auto-registration back on restores them
        specs = [t.spec for t in self.pipeline.trackers.values() if t.auto_registered]
        doc = auto_models_doc(specs)
        if doc == self._auto_doc or (
            not specs
            and self._auto_doc is None
            and not (self.state.root / AUTO_MODELS_FILE).exists()
        ):
            return None
        return doc

    # ------------------------------------------------------------ reload
    async def _reload_watcher(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self.reload()
            # Signals that arrive during a reload or just after it make one more reload,
            # not one each.
            await asyncio.sleep(RELOAD_GAP_S)

    async def _file_watcher(self) -> None:
        """`reload.watch`: a changed config file (mtime, size or inode) acts like SIGHUP;
        polling works the same on every filesystem, ConfigMap symlink swaps included."""
        assert self.config.source is not None
        last = file_identity(self.config.source)
        while True:
            await asyncio.sleep(self.config.reload.interval_s)
            now = file_identity(self.config.source)
            if now != last:
                last = now
                log.info("config_changed", config=self.config.source)
                self._reload.set()

    async def reload(self) -> bool:
        """Re-read the config file and baselines; on any error keep the running ones."""
        if self.config.source is None:
            log.warning("reload_skipped", reason="running on embedded defaults, no file")
            return False
        from sidecar.loading import load_baselines  # noqa: PLC0415

        try:
            new = await asyncio.to_thread(load_config, self.config.source)
            check_immutable(self.config, new)
            # A captured baseline the new config cannot use stays where it is: the reload
            # may yet be refused, and the running model still stands on that file.
            baselines = await asyncio.to_thread(
                then_give_back(functools.partial(load_baselines, keep_captured=True)), new
            )
        except SidecarError as exc:
            self.health.reloads["failure"] += 1
            self.health.last_reload_ok = False
            log.error("reload_refused", error=str(exc), kept=self.config.source)
            return False
        rebuilt, retuned = self._apply(new, baselines)
        self.health.reloads["success"] += 1
        self.health.last_reload_ok = True
        log.info(
            "reloaded",
            config=new.source,
            models=sorted(self.pipeline.trackers),
            rebuilt=rebuilt,
            retuned=retuned,
        )
        return True

    def _apply(self, new: Config, baselines: dict[str, Baseline]) -> tuple[list[str], list[str]]:
        """Swap in a checked config; returns the models rebuilt and those only retuned.

        A model keeps its tracker (window, counters, histograms, per-bin counts, capture)
        unless what the tracker is built from changed: features, prediction type, classes,
        baseline source or content, window size, PSI bins or category cap. Thresholds,
        p-value, correction, min_samples, interval, max_age_s and version apply in place.
        """
        trackers, rebuilt, retuned = rebuild_trackers(
            self.pipeline.trackers, new, baselines, self._on_capture
        )
        self.config = new
        self.pipeline.config = new
        self.pipeline.labels.configure(new.labels)
        self.pipeline.trackers = trackers
        for t in trackers.values():  # kept trackers too: new values obey the new limit
            t.set_label_limit(new.limits.max_label_bytes)
            t.stages.retune(t.spec.stages, new.limits.max_stages, new.limits.max_label_bytes)
        self._sync_drift_loops()
        return rebuilt, retuned

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


def _auto_spec_fits(spec: ModelSpec, limit: int) -> bool:
    """What auto-registration itself would take: names within the label limit, none reserved."""
    names = [f.name for f in spec.features]
    return all(label_fits(x, limit) for x in (spec.name, spec.version, *names)) and not (
        RESERVED_FEATURE_NAMES & set(names)
    )
