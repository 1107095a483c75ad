"""Days of drift checks with no drift, and drifted streams: false alarms and detection delays.

The replay runs the daemon's own code path below the socket: a `ModelTracker`'s rolling
window and category coding (`drift_window`), and `check_model` with the parameters the
daemon derives from the config (`DriftParams.from_settings`), so the verdicts are the ones
`ml_*_drift_detected` would show. Events are fed to the window as arrays rather than as
decoded JSON (decoding changes nothing about the statistics and would take hours).

No drift. Each day draws a new baseline and the state of a daemon that has run a while
(four windows of events, so that the categorical columns' three-window horizon is there),
then checks every `interval_s` (30 s: 2,880 checks a day) after appending the new events
of that interval:

- baselines: captured (1,000 rows, the default capture) or a file (50,000 rows);
- traffic: high (a whole window of new events per check: 10,000) or low (100 per check);
- the model: 4 numeric and 2 categorical features (12 categories, 3 of them rare enough
  that a 1,000-row capture usually misses some), and numeric predictions on even days,
  class predictions (3 classes) on odd ones.

It prints the share of days with any false alarm and its Clopper-Pearson 95% interval,
under today's rule (per-check Bonferroni at p_value over the features, predictions alone,
chi-square goodness of fit to the baseline's shares, PSI > 0.2) and under the new verdict
(two-sample tests, a false-alarm rate of 0.05 per model per day). A day alarms at rate r
exactly when its smallest period-adjusted p-value is at most r, so the share of days at
r = 0.25 and 0.5 checks the calibration where few days can see it.

Drift. Four windows of undrifted events, then drifted events at the same traffic until
the first flag of the drifted column (at most `--max-windows` windows), for: a 0.05 and a
0.1 sigma mean shift and a +20% variance on one of 100 numeric features, a 2-point shift
between two categories of a categorical feature, and a 5-point shift between two classes
of the predictions. Only the drifted column is simulated: under Bonferroni its verdict
depends on the others only through their number (M = 101: 100 features and the
predictions), which the replay passes to the policy. Prints the median events until the
first flag, in windows, and the share flagged within the issue's goal (two windows for
the mean shifts, three for the categorical one).

The default run replays 40 days of 2,880 checks and 200 drifted streams: about 15 minutes
on 2 idle cores (36 minutes with `--days 20` on 2 cores shared with other work). The
scaling from a production model is in the model (6 features and the predictions rather
than 100) and the number of days; the checks per day, the window and the traffic are the
daemon's defaults. `--quick` shrinks the window to 2,000 and the day to 96 checks.

    python bench/false_alarms.py [--quick] [--days N] [--replicates N] [--jobs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_args, report, summary_row, table
from sidecar.config import (
    BaselineSpec,
    DriftSettings,
    FeatureSpec,
    ModelSpec,
    PredictionSpec,
)
from sidecar.drift import DriftParams, ModelDriftResult, check_model
from sidecar.stats.alarm import AlarmPolicy
from sidecar.stats.chi2 import chi2_test
from sidecar.stats.correction import adjust_pvalues
from sidecar.stats.reference import Baseline, build_baseline
from sidecar.tracker import HORIZON_WINDOWS, ModelTracker

CATEGORIES = [f"k{i}" for i in range(12)]
CATEGORY_P = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.006, 0.003, 0.001])
CATEGORY_P = CATEGORY_P / CATEGORY_P.sum()
CLASSES = ["approve", "review", "deny"]
CLASS_P = np.array([0.6, 0.3, 0.1])
N_NUMERIC, N_CATEGORICAL = 4, 2
TODAY_P_VALUE, TODAY_PSI = 0.05, 0.2
DELAY_FEATURES = 100  # the delay model: 100 features and the predictions


@dataclass(frozen=True)
class Sizes:
    window: int
    interval_s: float
    period_s: float
    high: int
    low: int
    captured: int
    file: int


FULL = Sizes(
    window=10_000,
    interval_s=30.0,
    period_s=86_400.0,
    high=10_000,
    low=100,
    captured=1_000,
    file=50_000,
)
QUICK = Sizes(
    window=2_000,
    interval_s=900.0,
    period_s=86_400.0,
    high=2_000,
    low=100,
    captured=1_000,
    file=50_000,
)


# --------------------------------------------------------------------------- the replay


def _seed(*parts: object) -> int:
    """A seed from the case's name: the same figures on every run (str hash is salted)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


class Replay:
    """One model as the daemon keeps it: a tracker's window and coding, its checks."""

    def __init__(self, spec: ModelSpec, drift: DriftSettings, baseline: Baseline) -> None:
        self.tracker = ModelTracker(spec, drift)
        self.tracker.install_baseline(baseline)
        self.params = DriftParams.from_settings(drift)
        # vocabulary code of each generated category index, fixed once: the tracker gives
        # codes in first-seen order and never changes them
        self.cat_codes = [
            np.array([v.code(c) for c in CATEGORIES], dtype=np.int32)
            for v in self.tracker.cat_vocab
        ]
        pv = self.tracker.pred_vocab
        self.class_codes = (
            np.array([pv.code(c) for c in CLASSES], dtype=np.int32) if pv is not None else None
        )
        self.now = 0.0

    def append(self, num: np.ndarray, cat_idx: np.ndarray, pred: np.ndarray) -> None:
        """Rows of generated values: numeric matrix, category indices, predictions (floats,
        or class indices)."""
        n = num.shape[0]
        cat = np.empty((n, cat_idx.shape[1]), dtype=np.int32)
        for j, codes in enumerate(self.cat_codes):
            cat[:, j] = codes[cat_idx[:, j]]
        if self.class_codes is not None:
            pred = self.class_codes[pred.astype(np.int64)]
        self.tracker.append_rows(num, cat, pred, np.full(n, self.now))

    def warm_up(
        self, rows: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]], window: int
    ) -> None:
        """The state of a daemon that has run a while: HORIZON_WINDOWS + 1 windows of
        undrifted events, with the horizon's snapshots taken along the way (a check takes
        them; here the window is coded without running the statistics)."""
        chunk = max(1, HORIZON_WINDOWS * window // 10)
        for _ in range((HORIZON_WINDOWS + 1) * window // chunk):
            self.append(*rows(chunk))
            self.tracker.drift_window(self.tracker.window_snapshot(self.now))

    def check(self) -> tuple[ModelDriftResult, Any]:
        """The daemon's check, and the window it ran on."""
        self.now += self.params.interval_s
        window = self.tracker.drift_window(self.tracker.window_snapshot(self.now))
        return check_model(self.tracker.baseline, window, self.params, self.now), window


def model_spec(
    n_numeric: int, n_categorical: int, prediction: str | None, capture: bool
) -> ModelSpec:
    features = [FeatureSpec(name=f"x{i}") for i in range(n_numeric)]
    features += [FeatureSpec(name=f"c{i}", type="categorical") for i in range(n_categorical)]
    return ModelSpec(
        name="m",
        features=features,
        prediction=PredictionSpec(type=prediction) if prediction else None,
        baseline=BaselineSpec(capture=1000) if capture else BaselineSpec(path="b.parquet"),
    )


def make_baseline(
    rng: np.random.Generator,
    rows: int,
    n_numeric: int,
    n_categorical: int,
    prediction: str | None,
    *,
    source: str,
) -> Baseline:
    pred: Any = None
    if prediction == "numeric":
        pred = rng.normal(2.0, 1.0, rows)
    elif prediction == "categorical":
        pred = [CLASSES[i] for i in rng.choice(3, rows, p=CLASS_P)]
    return build_baseline(
        "m",
        numeric={f"x{i}": rng.normal(size=rows) for i in range(n_numeric)},
        categorical={
            f"c{i}": [CATEGORIES[k] for k in rng.choice(12, rows, p=CATEGORY_P)]
            for i in range(n_categorical)
        },
        prediction=pred,
        prediction_kind=prediction,
        source=source,
    )


def draw(
    rng: np.random.Generator, n: int, n_numeric: int, n_categorical: int, prediction: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    num = rng.normal(size=(n, n_numeric))
    cat = rng.choice(12, size=(n, n_categorical), p=CATEGORY_P)
    if prediction == "categorical":
        pred = rng.choice(3, n, p=CLASS_P).astype(np.float64)
    else:
        pred = rng.normal(2.0, 1.0, n)
    return num, cat, pred


# --------------------------------------------------------------------------- today's rule


def today_alarm(result: ModelDriftResult, window: Any, baseline: Baseline) -> bool:
    """The verdict before this change, from the same check: per-check Bonferroni over the
    features at p_value, predictions tested alone, categories by goodness of fit to the
    baseline's shares (unseen categories at a 1e-4 share), PSI > 0.2 alarming alone."""
    pvals: list[float] = []
    psis: list[float | None] = []
    for j, f in enumerate(result.features):
        if not f.sufficient:
            pvals.append(math.nan)
            psis.append(None)
            continue
        if f.kind == "numeric":
            pvals.append(float(f.ks_pvalue))  # type: ignore[arg-type]
        else:
            c = j - len(baseline.numeric)
            pvals.append(_gof(baseline.categorical[c].shares, window.categorical[:, c]))
        psis.append(f.psi)
    adj = adjust_pvalues(np.array(pvals), "bonferroni")
    if any(a < TODAY_P_VALUE for a in adj if not math.isnan(a)):
        return True
    if any(x is not None and x > TODAY_PSI for x in psis):
        return True
    q = result.prediction
    if q is not None and q.sufficient:
        if q.kind == "numeric":
            p = float(q.ks_pvalue)  # type: ignore[arg-type]
        else:
            assert baseline.prediction is not None
            p = _gof(baseline.prediction.shares, window.predictions)
        if p < TODAY_P_VALUE or (q.psi is not None and q.psi > TODAY_PSI):
            return True
    return False


def _gof(shares: np.ndarray, codes: np.ndarray) -> float:
    other = shares.shape[0] - 1
    c = np.asarray(codes)
    c = np.minimum(c[c >= 0], other)
    return chi2_test(shares, np.bincount(c, minlength=other + 1))[1]


# --------------------------------------------------------------------------- no-drift days


def one_day(args: tuple[str, str, int, Sizes, int]) -> dict[str, Any]:
    baseline_kind, traffic, day, sizes, checks = args
    rng = np.random.default_rng(_seed("day", baseline_kind, traffic, day))
    prediction = "numeric" if day % 2 == 0 else "categorical"
    captured = baseline_kind == "captured"
    rows = sizes.captured if captured else sizes.file
    b = make_baseline(
        rng, rows, N_NUMERIC, N_CATEGORICAL, prediction, source="capture" if captured else "file"
    )
    drift = DriftSettings(
        window_size=sizes.window, interval_s=sizes.interval_s, false_alarm_period_s=sizes.period_s
    )
    replay = Replay(model_spec(N_NUMERIC, N_CATEGORICAL, prediction, captured), drift, b)
    replay.warm_up(lambda n: draw(rng, n, N_NUMERIC, N_CATEGORICAL, prediction), sizes.window)
    per_check = sizes.high if traffic == "high" else sizes.low
    first_today: int | None = None
    first_new: int | None = None
    min_adjusted = 1.0
    for i in range(checks):
        if i:
            replay.append(*draw(rng, per_check, N_NUMERIC, N_CATEGORICAL, prediction))
        result, window = replay.check()
        adjusted = [f.alarm_p_adjusted for f in result.features]
        if result.prediction is not None:
            adjusted.append(result.prediction.alarm_p_adjusted)
        min_adjusted = min([min_adjusted, *(a for a in adjusted if a is not None)])
        if first_new is None and result.drifted:
            first_new = i
        if first_today is None and today_alarm(result, window, b):
            first_today = i
    return {
        "baseline": baseline_kind,
        "traffic": traffic,
        "day": day,
        "prediction": prediction,
        "first_today": first_today,
        "first_new": first_new,
        "min_adjusted": min_adjusted,
    }


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def summarize_days(days: list[dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    n = len(days)
    today = [d["first_today"] for d in days if d["first_today"] is not None]
    new = [d for d in days if d["first_new"] is not None]
    mins = sorted(d["min_adjusted"] for d in days)
    out = {
        "days": n,
        "today": {
            "days_with_alarm": len(today),
            "rate": len(today) / n,
            "ci95": clopper_pearson(len(today), n),
            "median_minutes_to_first": (
                statistics.median(today) * sizes.interval_s / 60 if today else None
            ),
        },
        "new": {
            "days_with_alarm": len(new),
            "rate": len(new) / n,
            "ci95": clopper_pearson(len(new), n),
            "share_days_min_adjusted_le": {
                str(r): sum(m <= r for m in mins) / n for r in (0.05, 0.25, 0.5)
            },
            "median_min_adjusted": statistics.median(mins),
        },
    }
    return out


# --------------------------------------------------------------------------- delays


@dataclass(frozen=True)
class Shift:
    name: str
    column: str  # numeric | categorical | class
    apply: Callable[[np.random.Generator, int], np.ndarray]
    goal_windows: float | None


def _mean(delta: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.normal(delta, 1.0, n)


def _scale(sd: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.normal(0.0, sd, n)


def _categories(p: np.ndarray) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.choice(p.shape[0], n, p=p)


_CAT_SHIFTED = CATEGORY_P.copy()
_CAT_SHIFTED[0] -= 0.02
_CAT_SHIFTED[1] += 0.02
_CLASS_SHIFTED = np.array([0.55, 0.35, 0.10])

SHIFTS = [
    Shift("mean +0.05 sd", "numeric", _mean(0.05), None),
    Shift("mean +0.1 sd", "numeric", _mean(0.1), 2.0),
    Shift("variance +20%", "numeric", _scale(math.sqrt(1.2)), None),
    Shift("category +2 points", "categorical", _categories(_CAT_SHIFTED), 3.0),
    Shift("class +5 points", "class", _categories(_CLASS_SHIFTED), None),
]


def one_delay(args: tuple[str, str, str, int, Sizes, float]) -> dict[str, Any]:
    shift_name, baseline_kind, traffic, rep, sizes, max_windows = args
    shift = next(s for s in SHIFTS if s.name == shift_name)
    rng = np.random.default_rng(_seed("delay", shift_name, baseline_kind, traffic, rep))
    captured = baseline_kind == "captured"
    rows = sizes.captured if captured else sizes.file
    n_num = 1 if shift.column == "numeric" else 0
    n_cat = 1 if shift.column == "categorical" else 0
    prediction = "categorical" if shift.column == "class" else None
    b = make_baseline(rng, rows, n_num, n_cat, prediction, source="capture" if captured else "file")
    drift = DriftSettings(
        window_size=sizes.window, interval_s=sizes.interval_s, false_alarm_period_s=sizes.period_s
    )
    replay = Replay(model_spec(n_num, n_cat, prediction, captured), drift, b)
    policy = AlarmPolicy(
        false_alarm_rate=drift.false_alarm_rate,
        period_s=drift.false_alarm_period_s,
        interval_s=drift.interval_s,
        correction=drift.correction,
    )
    others = np.ones(DELAY_FEATURES)  # the 100 undrifted tests, for M alone

    def rows_of(n: int, drifted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num = np.empty((n, n_num))
        cat = np.empty((n, n_cat), dtype=np.int64)
        pred = np.full(n, np.nan)
        gen = shift.apply if drifted else None
        if shift.column == "numeric":
            num[:, 0] = gen(rng, n) if gen else rng.normal(size=n)
        elif shift.column == "categorical":
            cat[:, 0] = gen(rng, n) if gen else rng.choice(12, n, p=CATEGORY_P)
        else:
            pred = (gen(rng, n) if gen else rng.choice(3, n, p=CLASS_P)).astype(np.float64)
        return num, cat, pred

    def flags(result: ModelDriftResult, window: Any) -> tuple[bool, bool]:
        t = result.features[0] if result.features else result.prediction
        assert t is not None
        if not t.sufficient or t.test_pvalue is None:
            return False, False
        new = bool(policy.verdicts(np.r_[t.test_pvalue, others])[0])
        if shift.column == "numeric":
            p_today = min(1.0, float(t.ks_pvalue) * DELAY_FEATURES)  # type: ignore[arg-type]
        elif shift.column == "categorical":
            p_today = min(
                1.0, _gof(b.categorical[0].shares, window.categorical[:, 0]) * DELAY_FEATURES
            )
        else:
            assert b.prediction is not None
            p_today = _gof(b.prediction.shares, window.predictions)
        today = p_today < TODAY_P_VALUE or (t.psi is not None and t.psi > TODAY_PSI)
        return new, today

    replay.warm_up(lambda n: rows_of(n, False), sizes.window)
    result, window = replay.check()
    _, today_before = flags(result, window)
    per_check = sizes.high if traffic == "high" else sizes.low
    limit = int(max_windows * sizes.window)
    events = 0
    first: dict[str, int | None] = {"new": None, "today": None}
    while events < limit and (first["new"] is None or first["today"] is None):
        replay.append(*rows_of(per_check, True))
        events += per_check
        result, window = replay.check()
        new, today = flags(result, window)
        if new and first["new"] is None:
            first["new"] = events
        if today and first["today"] is None:
            first["today"] = events
    return {
        "shift": shift_name,
        "baseline": baseline_kind,
        "traffic": traffic,
        "rep": rep,
        "new": first["new"],
        "today": first["today"],
        "today_before_drift": today_before,
        "limit": limit,
    }


def summarize_delays(rows: list[dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    shift = next(s for s in SHIFTS if s.name == rows[0]["shift"])
    out: dict[str, Any] = {
        "replicates": len(rows),
        "today_flags_before_drift": sum(r["today_before_drift"] for r in rows),
    }
    for rule in ("new", "today"):
        # censored runs count as the limit: the median is then a lower bound ("> ...")
        ev = [r[rule] if r[rule] is not None else math.inf for r in rows]
        med = statistics.median(ev)
        within = None
        if shift.goal_windows is not None:
            within = sum(e <= shift.goal_windows * sizes.window for e in ev) / len(ev)
        out[rule] = {
            "median_events": None if math.isinf(med) else med,
            "median_windows": None if math.isinf(med) else med / sizes.window,
            "censored": sum(math.isinf(e) for e in ev),
            "within_goal": within,
        }
    return out


# --------------------------------------------------------------------------- main


def _fmt_windows(entry: dict[str, Any], limit_windows: float) -> str:
    if entry["median_windows"] is None:
        return f"> {limit_windows:g}"
    return f"{entry['median_windows']:.2f}"


def main(argv: list[str] | None = None) -> int:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--days",
            type=int,
            default=None,
            help="no-drift days per baseline and traffic (default 10; 1 --quick)",
        )
        p.add_argument(
            "--replicates",
            type=int,
            default=None,
            help="drifted streams per shift, baseline and traffic (default 10)",
        )
        p.add_argument(
            "--max-windows",
            type=float,
            default=None,
            help="give a drifted stream up after this many windows (default 10)",
        )
        p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
        p.add_argument("--no-delays", action="store_true", help="only the no-drift days")

    args = bench_args(__doc__.splitlines()[0], argv, extra)
    sizes = QUICK if args.quick else FULL
    days = args.days if args.days is not None else (1 if args.quick else 10)
    reps = args.replicates if args.replicates is not None else (2 if args.quick else 10)
    max_windows = (
        args.max_windows if args.max_windows is not None else (3.0 if args.quick else 10.0)
    )
    checks = AlarmPolicy(period_s=sizes.period_s, interval_s=sizes.interval_s).checks
    t0 = time.perf_counter()
    cases = [(bk, tr) for bk in ("captured", "file") for tr in ("high", "low")]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        day_rows = list(
            pool.map(one_day, [(bk, tr, d, sizes, checks) for bk, tr in cases for d in range(days)])
        )
        delay_rows: list[dict[str, Any]] = []
        if not args.no_delays:
            shifts = SHIFTS[1:4:2] if args.quick else SHIFTS
            delay_rows = list(
                pool.map(
                    one_delay,
                    [
                        (s.name, bk, tr, r, sizes, max_windows)
                        for s in shifts
                        for bk, tr in cases
                        for r in range(reps)
                    ],
                )
            )
    seconds = time.perf_counter() - t0

    false_alarms = []
    for bk, tr in cases:
        s = summarize_days(
            [d for d in day_rows if (d["baseline"], d["traffic"]) == (bk, tr)], sizes
        )
        false_alarms.append({"baseline": bk, "traffic": tr, **s})
    pooled = summarize_days(day_rows, sizes)
    false_alarms.append({"baseline": "all", "traffic": "all", **pooled})
    delays = []
    for name in dict.fromkeys(r["shift"] for r in delay_rows):
        for bk, tr in cases:
            rows = [
                r for r in delay_rows if (r["shift"], r["baseline"], r["traffic"]) == (name, bk, tr)
            ]
            delays.append(
                {"shift": name, "baseline": bk, "traffic": tr, **summarize_delays(rows, sizes)}
            )

    per = {"high": sizes.high, "low": sizes.low, "all": "all"}
    rows_of_baseline = {
        "captured": f"captured ({sizes.captured:,})",
        "file": f"file ({sizes.file:,})",
        "all": "all of the above",
    }
    print(
        f"no-drift days: {checks:,} checks a day (interval {sizes.interval_s:g} s), window "
        f"{sizes.window:,}; {N_NUMERIC} numeric + {N_CATEGORICAL} categorical features and "
        f"predictions (numeric on even days, classes on odd); {days} days per row"
    )
    print(
        table(
            [
                "baseline",
                "new/check",
                "today: days alarmed",
                "95% CI",
                "median min to 1st",
                "new: days alarmed",
                "95% CI",
                "days min adj p <= 0.25",
                "<= 0.5",
            ],
            [
                [
                    rows_of_baseline[r["baseline"]],
                    f"{per[r['traffic']]:,}" if r["traffic"] != "all" else "all",
                    f"{r['today']['days_with_alarm']}/{r['days']}",
                    "{:.2f}-{:.2f}".format(*r["today"]["ci95"]),
                    "-"
                    if r["today"]["median_minutes_to_first"] is None
                    else f"{r['today']['median_minutes_to_first']:.1f}",
                    f"{r['new']['days_with_alarm']}/{r['days']}",
                    "{:.2f}-{:.2f}".format(*r["new"]["ci95"]),
                    f"{r['new']['share_days_min_adjusted_le']['0.25']:.2f}",
                    f"{r['new']['share_days_min_adjusted_le']['0.5']:.2f}",
                ]
                for r in false_alarms
            ],
        )
    )
    if delays:
        print(
            f"\ndetection delay: median windows ({sizes.window:,} events) of drifted events "
            f"until the first flag, {reps} streams per row (> {max_windows:g}: not flagged)"
        )
        print(
            table(
                [
                    "shift",
                    "baseline",
                    "new/check",
                    "today",
                    "new",
                    "new within goal",
                    "today flags before drift",
                ],
                [
                    [
                        r["shift"],
                        r["baseline"],
                        f"{per[r['traffic']]:,}",
                        _fmt_windows(r["today"], max_windows),
                        _fmt_windows(r["new"], max_windows),
                        "-"
                        if r["new"]["within_goal"] is None
                        else f"{r['new']['within_goal']:.2f}",
                        f"{r['today_flags_before_drift']}/{r['replicates']}",
                    ]
                    for r in delays
                ],
            )
        )
    print(f"\n{seconds:.0f} s")

    summary = []
    for r in false_alarms:
        traffic = "all traffic" if r["traffic"] == "all" else f"{per[r['traffic']]:,}/check"
        case = f"days with a false alarm, {r['baseline']} baseline, {traffic}"
        summary.append(
            summary_row(
                f"{case}, new",
                r["new"]["rate"],
                "share",
                "95% CI {:.2f}-{:.2f}".format(*r["new"]["ci95"]),
            )
        )
        summary.append(
            summary_row(
                f"{case}, today",
                r["today"]["rate"],
                "share",
                "95% CI {:.2f}-{:.2f}".format(*r["today"]["ci95"]),
            )
        )
    for r in delays:
        med = r["new"]["median_windows"]
        summary.append(
            summary_row(
                f"delay {r['shift']}, {r['baseline']}, {per[r['traffic']]:,}/check, new",
                math.nan if med is None else med,
                "windows",
                f"today {_fmt_windows(r['today'], max_windows)}",
            )
        )
    report(
        "false_alarms",
        args,
        summary,
        sizes=sizes.__dict__,
        days=days,
        replicates=reps,
        checks_per_day=checks,
        max_windows=max_windows,
        seconds=seconds,
        false_alarms=false_alarms,
        delays=delays,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
