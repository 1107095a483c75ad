"""A parquet baseline, events over the real socket: /metrics equals scipy on the same data."""

from __future__ import annotations

import subprocess
import sys
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from harness import wait_for
from scipy import stats


def _guide_free_psi(ref: np.ndarray, cur: np.ndarray, edges: np.ndarray) -> float:
    """PSI written out plainly: open-ended outer bins, shares clamped at 1e-4."""
    bounds = list(pairwise([-np.inf, *edges, np.inf]))
    r = np.array([np.sum((ref > lo) & (ref <= hi)) for lo, hi in bounds])
    c = np.array([np.sum((cur > lo) & (cur <= hi)) for lo, hi in bounds])
    r = np.clip(r / r.sum(), 1e-4, None)
    c = np.clip(c / c.sum(), 1e-4, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _decile_edges(ref: np.ndarray, bins: int = 10) -> np.ndarray:
    """For each i/bins, the smallest reference value whose empirical CDF reaches it (exact
    integer comparison: count * bins >= i * n)."""
    s = np.sort(ref)
    n = len(s)
    edges = []
    for i in range(1, bins):
        k = 0
        while k * bins < i * n:
            k += 1
        edges.append(s[k - 1])
    return np.unique(edges)


def test_metrics_equal_scipy_on_the_same_data(tmp_path, daemon_factory):
    rng = np.random.default_rng(42)
    n_ref, n_live = 4000, 1500
    ref = {"a": rng.normal(0, 1, n_ref), "b": rng.exponential(2, n_ref)}
    pq.write_table(pa.table({**ref, "prediction": rng.random(n_ref)}), tmp_path / "train.parquet")
    cfg = {
        "models": [
            {
                "name": "m",
                "baseline": {"path": str(tmp_path / "base.parquet")},
                "features": [{"name": "a"}, {"name": "b"}],
                "prediction": {"type": "numeric"},
                "drift": {"interval_s": 0.3, "min_samples": 100, "window_size": 5000},
            }
        ],
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar.cli",
            "baseline",
            "build",
            "--from",
            str(tmp_path / "train.parquet"),
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--model",
            "m",
            "--out",
            str(tmp_path / "base.parquet"),
            "--sample",
            "100000",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert "4000 rows" in built.stdout

    d = daemon_factory(cfg, wait_ready=True)
    live = {"a": rng.normal(0.3, 1, n_live), "b": rng.exponential(2.2, n_live)}
    preds = rng.random(n_live) * 1.1
    events = [
        {
            "model": "m",
            "features": {"a": float(live["a"][i]), "b": float(live["b"][i])},
            "prediction": float(preds[i]),
        }
        for i in range(n_live)
    ]
    d.send([events[i : i + 250] for i in range(0, n_live, 250)])
    m = wait_for(
        lambda: (
            (m := d.scrape()).value("ml_drift_window_samples", model_name="m") == n_live
            and m.value("ml_feature_drift_ks_statistic", model_name="m", feature_name="a")
            is not None
            and d.json("/v1/drift")["models"]["m"]["samples"] == n_live
            and m
        ),
        20,
        "a drift check over every live event",
    )
    m = d.scrape()
    report = d.json("/v1/drift")["models"]["m"]
    for name in ("a", "b"):
        res = stats.ks_2samp(ref[name], live[name], method="asymp")
        got = m.value("ml_feature_drift_ks_statistic", model_name="m", feature_name=name)
        assert got == pytest.approx(res.statistic, abs=1e-12)
        assert m.value(
            "ml_feature_drift_ks_pvalue", model_name="m", feature_name=name
        ) == pytest.approx(res.pvalue, rel=1e-9, abs=1e-300)
        psi = _guide_free_psi(ref[name], live[name], _decile_edges(ref[name]))
        assert m.value("ml_feature_drift_psi", model_name="m", feature_name=name) == pytest.approx(
            psi, rel=1e-9
        )
        assert report["features"][name]["samples"] == n_live
    pred = stats.ks_2samp(
        pq.read_table(tmp_path / "train.parquet")["prediction"].to_numpy(), preds, method="asymp"
    )
    assert m.value("ml_prediction_drift_ks_statistic", model_name="m") == pytest.approx(
        pred.statistic, abs=1e-12
    )
    # A 0.3-sigma shift in 1500 events is detected after the Bonferroni correction.
    assert m.value("ml_feature_drift_detected", model_name="m", feature_name="a") == 1
    (info,) = m.series("drift_sidecar_baseline_info")
    import hashlib

    sha = hashlib.sha256((tmp_path / "base.parquet").read_bytes()).hexdigest()
    assert dict(info)["sha256"] == sha and dict(info)["source"] == "file"


def test_baseline_build_from_csv_and_bad_inputs(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table({"x": rng.normal(size=300), "c": rng.choice(["u", "v"], 300)})
    pacsv.write_csv(table, tmp_path / "train.csv")
    cfg = {
        "models": [
            {
                "name": "m",
                "baseline": {"path": "b.parquet"},
                "features": [{"name": "x"}, {"name": "c", "type": "categorical"}],
            }
        ]
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))

    def build(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "sidecar.cli",
                "baseline",
                "build",
                "--config",
                str(tmp_path / "cfg.yaml"),
                "--out",
                str(tmp_path / "b.parquet"),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    ok = build("--from", str(tmp_path / "train.csv"), "--model", "m", "--sample", "100")
    assert ok.returncode == 0, ok.stderr
    assert "100 rows" in ok.stdout and "name=c" in ok.stdout
    assert pq.read_table(tmp_path / "b.parquet").num_rows == 100
    wrong_model = build("--from", str(tmp_path / "train.csv"), "--model", "nope")
    assert wrong_model.returncode == 2 and "no model named 'nope'" in wrong_model.stderr
    pacsv.write_csv(pa.table({"x": rng.normal(size=10)}), tmp_path / "lacks.csv")
    lacks = build("--from", str(tmp_path / "lacks.csv"), "--model", "m")
    assert lacks.returncode == 2 and "'c'" in lacks.stderr, lacks.stderr
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar.cli",
            "check-config",
            "--baselines",
            str(tmp_path / "cfg.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
