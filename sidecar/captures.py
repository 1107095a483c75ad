"""Captured baselines: written to the state folder when a capture completes, retried when
the write fails."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from sidecar.capture import Capture, CaptureData
from sidecar.errors import BaselineError
from sidecar.metrics import Health
from sidecar.pipeline import Pipeline
from sidecar.state import StateStore
from sidecar.stats.mmd import EmbeddingReference
from sidecar.stats.reference import build_baseline
from sidecar.tracker import ModelTracker, embedding_options

log = structlog.get_logger("sidecar.daemon")

# sidecar.baseline (the parquet writer, the embedding reference) and sidecar.loading are
# imported where a capture completes: a daemon that captures nothing never needs them.

CAPTURED_MODE = 0o600
"""Captured baselines are the sidecar's own state, read by no one else."""


class CaptureWriter:
    """Turns completed captures into installed baselines, each in a task of its own."""

    def __init__(
        self,
        state: StateStore,
        health: Health,
        pipeline: Pipeline,
        installed: Callable[[], None],
    ) -> None:
        self.state = state
        self.health = health
        self.pipeline = pipeline
        self._installed = installed
        """Called after each baseline a capture installs."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unwritten: dict[str, tuple[ModelTracker, dict[str, Any]]] = {}
        """Captured baselines in use but not yet on disk (the write failed); retried."""

    async def wait(self, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for the captures under way."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def start(self, tracker: ModelTracker, data: CaptureData) -> None:
        # Not a supervised task: a failed capture is logged and captured again, it never
        # stops the daemon; shutdown waits for it, so its baseline is in the final state.
        task = asyncio.create_task(
            self._finish_capture(tracker, data), name=f"capture:{tracker.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._capture_done)

    def _capture_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task_failed", task=task.get_name(), error=repr(exc), exc_info=exc)

    async def _finish_capture(self, tracker: ModelTracker, data: CaptureData) -> None:
        """Write the captured baseline and start comparing against it. A write that fails
        (full disk, read-only folder) still installs the baseline from memory and retries
        the write at each snapshot; a capture that cannot become a baseline at all is
        logged, counted and captured again."""
        path = self.state.captured_baseline_path(tracker.name)
        d = tracker.drift
        columns: dict[str, Any] = {
            "numeric": data.numeric,
            "categorical": data.categorical,
            "prediction": data.prediction,
            "prediction_kind": tracker.pred_kind,
            "psi_bins": d.psi_bins,
            "max_categories": d.max_categories,
            "source": "capture",
            "embedding": data.embedding,
        }
        from sidecar.baseline import write_baseline  # noqa: PLC0415
        from sidecar.loading import warn_overflowed  # noqa: PLC0415

        try:
            baseline = await asyncio.to_thread(
                write_baseline, path, tracker.name, mode=CAPTURED_MODE, **columns
            )
        except Exception as exc:
            self.health.baseline_writes["failure"] += 1
            log.error(
                "baseline_write_failed",
                model=tracker.name,
                path=str(path),
                error=repr(exc)[:300],
                action="using it from memory; the write is retried at each snapshot",
            )
            try:
                baseline = await asyncio.to_thread(
                    build_baseline,
                    tracker.name,
                    **{k: v for k, v in columns.items() if k != "embedding"},
                )
            except Exception as exc2:
                self.health.capture_failures[tracker.name] += 1
                log.error(
                    "baseline_capture_failed",
                    model=tracker.name,
                    error=repr(exc2)[:300],
                    action="capturing again",
                )
                if tracker.spec.baseline.capture is not None and tracker.baseline is None:
                    tracker.capture = Capture(tracker.spec.baseline.capture)
                return
            self._unwritten[tracker.name] = (tracker, columns)
        else:
            self.health.baseline_writes["success"] += 1
        baseline = dataclasses.replace(
            baseline,
            source="capture",
            embedding=await self._captured_embedding(tracker, data, str(path)),
        )
        warn_overflowed(baseline)
        tracker.install_baseline(baseline, backfill=True)
        log.info(
            "baseline_captured",
            model=tracker.name,
            rows=baseline.rows,
            path=str(path),
            sha256=baseline.sha256 or None,
        )
        self._installed()

    async def _captured_embedding(
        self, tracker: ModelTracker, data: CaptureData, where: str
    ) -> EmbeddingReference | None:
        """The embedding test's reference from a capture; None (logged) when it cannot be
        built, which leaves embedding drift off for the model until its next baseline."""
        if tracker.spec.embedding is None or data.embedding is None:
            return None
        from sidecar.baseline import embedding_reference  # noqa: PLC0415

        rows = data.embedding[np.isfinite(data.embedding).all(axis=1)]
        opts = embedding_options(tracker.spec.embedding)
        try:
            return await asyncio.to_thread(embedding_reference, rows, opts, where)
        except BaselineError as exc:
            log.warning("embedding_drift_off", model=tracker.name, error=str(exc)[:300])
            return None

    async def write_unwritten(self) -> None:
        """Retry captured baselines whose write failed; on success the baseline in use
        gets the file's sha256, so its windows can be restored after a restart."""
        for name, (tracker, columns) in list(self._unwritten.items()):
            if self.pipeline.trackers.get(name) is not tracker or tracker.baseline is None:
                del self._unwritten[name]  # replaced by a reload meanwhile
                continue
            path = self.state.captured_baseline_path(name)
            from sidecar.baseline import write_baseline  # noqa: PLC0415

            try:
                written = await asyncio.to_thread(
                    write_baseline, path, name, mode=CAPTURED_MODE, **columns
                )
            except Exception as exc:
                self.health.baseline_writes["failure"] += 1
                log.warning(
                    "baseline_write_failed",
                    model=name,
                    path=str(path),
                    error=repr(exc)[:300],
                    action="retried at the next snapshot",
                )
                continue
            self.health.baseline_writes["success"] += 1
            del self._unwritten[name]
            if self.pipeline.trackers.get(name) is tracker and tracker.baseline is not None:
                tracker.baseline = dataclasses.replace(
                    tracker.baseline, sha256=written.sha256, path=written.path
                )
            log.info("baseline_written", model=name, path=str(path), sha256=written.sha256)
