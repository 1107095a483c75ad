"""The demo's labeller: a classifier view of the stand-in model, and delayed ground truth.

The stand-in's fraud probability is calibrated by construction (the truth is drawn from
it), so the estimated accuracy (CBPE, from the probabilities alone) tracks the realized one
(from the labels) while the inputs drift. In the last phase the concept shifts: for the
same inputs fraud becomes commoner, the labels say the model got worse, and the estimate,
which cannot know, parts from them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.client import Monitor
from sidecar.daemon import Daemon

FLAG_MODEL = "fraud-flag"
LABEL_SHARE = 0.6
"""Predictions that get a label: chargebacks come for some of them only."""
LABEL_DELAY_S = 2.0
CONCEPT_SHIFT = 1.5
"""Added to the log-odds of fraud in the last phase: the concept drift."""
_WINDOW_S = 10.0


def flag_model(folder: Path) -> dict[str, Any]:
    """The classifier's entry in the demo's `models:`."""
    return {
        "name": FLAG_MODEL,
        "version": "1.0.0",
        "baseline": {"path": str(folder / "flag.parquet")},
        # no features: their drift is fraud-demo's, and `status --feature` stays unambiguous
        "prediction": {"type": "categorical"},
    }


def write_flag_baseline(folder: Path, cols: dict[str, Any], rng: np.random.Generator) -> None:
    """The classifier's baseline, labeled: its accuracy and calibration come from it."""
    import pyarrow as pa  # noqa: PLC0415 - as sidecar.baseline
    import pyarrow.parquet as pq  # noqa: PLC0415

    n = min(10_000, len(cols["prediction"]))
    p = np.asarray(cols["prediction"][:n], dtype=np.float64)
    truth = (rng.random(p.size) < p).astype(int)
    table = pa.table(
        {
            "prediction": ["1" if x > 0.5 else "0" for x in p],
            "label": truth,
            "probabilities": np.stack([1 - p, p], axis=1).tolist(),
        }
    )
    pq.write_table(table, folder / "flag.parquet")


class Labeller:
    """Sends the classifier's predictions, then the truth of some of them, late."""

    def __init__(self, monitor: Monitor, seed: int = 11) -> None:
        self.monitor = monitor
        self.rng = np.random.default_rng(seed)
        self.waiting: deque[tuple[float, str, str]] = deque()
        self.n = 0

    def record(self, cols: dict[str, Any], phase: int) -> None:
        # half of the requests: enough for the figures, and the demo stays light
        p = np.asarray(cols["prediction"], dtype=np.float64)[: (len(cols["prediction"]) + 1) // 2]
        shift = CONCEPT_SHIFT if phase >= 2 else 0.0
        logit = np.log(p / (1 - p)) + shift
        truth = self.rng.random(p.size) < 1 / (1 + np.exp(-logit))
        labeled = self.rng.random(p.size) < LABEL_SHARE
        due = time.monotonic() + LABEL_DELAY_S
        for i in range(p.size):
            ident = f"flag-{self.n}"
            self.n += 1
            self.monitor.record(
                prediction="1" if p[i] > 0.5 else "0",
                probabilities=[float(1 - p[i]), float(p[i])],
                id=ident,
            )
            if labeled[i]:
                self.waiting.append((due, ident, "1" if truth[i] else "0"))
        now = time.monotonic()
        while self.waiting and self.waiting[0][0] <= now:
            _, ident, label = self.waiting.popleft()
            self.monitor.record_label(ident, label)


class AccuracyView:
    """Realized and estimated accuracy over the last few seconds, for the live table."""

    def __init__(self) -> None:
        self.history: deque[tuple[float, int, int, int, float]] = deque()

    def line(self, daemon: Daemon) -> str:
        t = daemon.pipeline.trackers.get(FLAG_MODEL)
        if t is None:
            return ""
        perf = t.performance
        now = time.monotonic()
        self.history.append(
            (now, perf.labeled, perf.correct, perf.estimated, perf.expected_correct)
        )
        while len(self.history) > 2 and self.history[1][0] < now - _WINDOW_S:
            self.history.popleft()
        _, lab0, cor0, est0, exp0 = self.history[0]
        realized = _ratio(perf.correct - cor0, perf.labeled - lab0)
        estimated = _ratio(perf.expected_correct - exp0, perf.estimated - est0)
        ref = t.baseline.performance if t.baseline is not None else None
        base = ref.accuracy if ref is not None else None
        return (
            f"{FLAG_MODEL} accuracy (last {_WINDOW_S:.0f} s): realized {_pct(realized)} "
            f"from labels, estimated {_pct(estimated)} without them, baseline {_pct(base)}"
        )


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _pct(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.1f}%"
