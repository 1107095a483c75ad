"""The real daemon with a captured baseline: no alarm over many checks of a stream without
drift (where the old goodness-of-fit test flags), then the drifted stream is flagged."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from harness import DaemonProcess, wait_for

from sidecar.baseline import load_baseline
from sidecar.stats.chi2 import chi2_test

CATS = ["red", "green", "blue", "black", "white", "grey", "pink", "gold", "teal", "navy"]
# the last four are rare: a 600-event capture misses some of them, live traffic does not
CAT_P = np.array([0.35, 0.25, 0.2, 0.1, 0.05, 0.03, 0.003, 0.003, 0.002, 0.002])
CAT_P = CAT_P / CAT_P.sum()
CLASSES = ["approve", "review", "deny"]
CLASS_P = np.array([0.6, 0.3, 0.1])
CAPTURE = 600
WINDOW = 2000


def events(
    rng: np.random.Generator,
    n: int,
    *,
    shift: float = 0.0,
    cat_p: np.ndarray = CAT_P,
    class_p: np.ndarray = CLASS_P,
) -> list[dict[str, Any]]:
    x0 = rng.normal(shift, 1.0, n)
    x1 = rng.exponential(1.0, n)
    c = rng.choice(len(CATS), n, p=cat_p)
    y = rng.choice(len(CLASSES), n, p=class_p)
    return [
        {
            "model": "m",
            "features": {"x0": float(x0[i]), "x1": float(x1[i]), "c": CATS[c[i]]},
            "prediction": CLASSES[y[i]],
        }
        for i in range(n)
    ]


def checks(d: DaemonProcess) -> float:
    m = d.scrape()
    return m.value("drift_sidecar_drift_check_duration_seconds_count", model_name="m") or 0.0


def send_and_wait_for_a_check(d: DaemonProcess, batch: list[dict[str, Any]]) -> None:
    before = checks(d)
    d.send([batch])
    wait_for(lambda: checks(d) >= before + 2, 20, "two drift checks after a batch")


def test_no_false_alarm_over_many_checks_then_drift_is_flagged(tmp_path, daemon_factory):
    cfg = {
        "models": [
            {
                "name": "m",
                "baseline": {"capture": CAPTURE},
                "features": [{"name": "x0"}, {"name": "x1"}, {"name": "c", "type": "categorical"}],
                "prediction": {"type": "categorical"},
                # a check every 0.1 s; the rate holds per 300 s, so 3,000 checks share it
                "drift": {
                    "interval_s": 0.1,
                    "window_size": WINDOW,
                    "min_samples": 500,
                    "false_alarm_period_s": 300,
                },
            }
        ],
    }
    d = daemon_factory(cfg)
    rng = np.random.default_rng(20240611)
    d.send([events(rng, CAPTURE)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "the captured baseline")

    # No drift: a full window, then 30 batches of 100, each followed by checks of the
    # window it leaves (about 40 to 80 checks of overlapping windows in all).
    sent = events(rng, WINDOW)
    send_and_wait_for_a_check(d, sent)
    for _ in range(30):
        batch = events(rng, 100)
        sent += batch
        send_and_wait_for_a_check(d, batch)
    m = d.scrape()
    assert m.value("ml_drift_sufficient_data", model_name="m") == 1
    assert checks(d) >= 60
    for name in ("x0", "x1", "c"):
        assert m.value("ml_feature_drift_detected", model_name="m", feature_name=name) == 0
        assert m.value("ml_feature_baseline_samples", model_name="m", feature_name=name) == CAPTURE
    assert m.value("ml_prediction_drift_detected", model_name="m") == 0
    # every check logs its verdict when it flags anything: none did
    assert "drift_detected" not in d.logs()
    report = d.json("/v1/drift")["models"]["m"]
    assert report["alarm"]["checks_per_period"] == 3000 and report["alarm"]["tests"] == 4
    assert report["features"]["c"]["kind"] == "categorical"

    # The test has teeth: the old rule (goodness of fit to the captured shares, unseen
    # categories at a 1e-4 share) flags this very window, for the feature and the classes.
    state = tmp_path / "d0" / "state" / "baselines" / "m.parquet"
    b = load_baseline(
        state,
        "m",
        numeric_names=["x0", "x1"],
        categorical_names=["c"],
        prediction_kind="categorical",
    )
    window = sent[-WINDOW:]
    ref = b.categorical[0]
    assert ref.count == CAPTURE and set(CATS) - set(ref.categories), "a category went unseen"
    live = np.bincount(ref.codes([e["features"]["c"] for e in window]), minlength=len(ref.shares))
    assert chi2_test(ref.shares, live)[1] < 0.05 / 3
    assert b.prediction is not None

    # Drift: x0 moves by half a standard deviation, "red" loses 15 points to "blue", and
    # "deny" triples. Each is flagged once the window holds enough of it (a 600-event
    # baseline cannot see much smaller changes at this rate: docs/statistics.md).
    drifted_p = CAT_P.copy()
    drifted_p[0] -= 0.15
    drifted_p[2] += 0.15
    d.send([events(rng, WINDOW, shift=0.5, cat_p=drifted_p, class_p=np.array([0.45, 0.25, 0.3]))])
    m = wait_for(
        lambda: (
            (m := d.scrape()).value("ml_feature_drift_detected", model_name="m", feature_name="x0")
            == 1
            and m.value("ml_feature_drift_detected", model_name="m", feature_name="c") == 1
            and m.value("ml_prediction_drift_detected", model_name="m") == 1
            and m
        ),
        20,
        "x0, c and the predictions flagged",
    )
    assert m.value("ml_feature_drift_detected", model_name="m", feature_name="x1") == 0
    assert m.value("ml_feature_drift_adjusted_pvalue", model_name="m", feature_name="c") <= 0.05
    flagged = [json.loads(line) for line in d.logs().splitlines() if "drift_detected" in line]
    assert any("c" in e["features"] and e["prediction"] for e in flagged)
    c = d.json("/v1/drift")["models"]["m"]["features"]["c"]
    assert c["drifted"] and c["changed_category"] in ("red", "blue")


def test_a_reference_with_too_many_categories_is_named_at_load(tmp_path):
    """Past 4 x max_categories, a column's categories are compared only as a pool chosen by
    the baseline's own counts: the daemon says so, naming the model and the column."""
    from structlog.testing import capture_logs

    from sidecar.baseline import write_baseline
    from sidecar.config import parse_config
    from sidecar.loading import load_baselines

    rng = np.random.default_rng(3)
    write_baseline(
        tmp_path / "b.parquet",
        "m",
        numeric={},
        categorical={
            "zip": [f"z{i}" for i in rng.integers(0, 30, 500)],
            "c": list(rng.choice(["a", "b"], 500)),
        },
        prediction=None,
        prediction_kind=None,
        max_categories=5,
    )
    cfg = parse_config(
        {
            "drift": {"max_categories": 5},
            "models": [
                {
                    "name": "m",
                    "baseline": {"path": str(tmp_path / "b.parquet")},
                    "features": [
                        {"name": "zip", "type": "categorical"},
                        {"name": "c", "type": "categorical"},
                    ],
                }
            ],
        }
    )
    with capture_logs() as logs:
        baselines = load_baselines(cfg)
    ref = baselines["m"].categorical[0]
    assert ref.overflowed and len(ref.categories) + len(ref.tail) == 20
    (warning,) = [e for e in logs if e["event"] == "categorical_reference_overflowed"]
    assert warning["model"] == "m" and warning["column"] == "zip"
    assert warning["pooled_values"] == ref.residual > 0
