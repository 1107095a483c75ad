"""State that must come back, and reloads that must not cost state or checks.

- Auto-registered models get their registration, captured baseline and window back after
  a restart, and drift checks run for them (before and after it).
- A reload that changes `state_dir` is refused like a port change.
- A reload keeps a model's tracker (counters, histograms, window, per-bin counts) unless
  what the tracker is built from changed; thresholds apply in place.
- A SIGHUP storm, of an unchanged file or of one that changes at every signal, neither
  starves drift checks nor costs more than a couple of reloads a second.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from harness import DaemonProcess, wait_for

from sidecar.baseline import write_baseline


def make_baseline(path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_baseline(
        path,
        "any",
        numeric={"x": rng.normal(0, 1, 500)},
        categorical={},
        prediction=None,
        prediction_kind=None,
    )
    return path


def events(model: str, n: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "features": {"x": float(i % 11) / 10, "c": "ab"[i % 2]},
            "prediction": float(i % 3),
            "latency_s": 0.01,
            **extra,
        }
        for i in range(start, start + n)
    ]


def records(d: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in d.logs().splitlines() if f'"{event}"' in ln]


def value(d: DaemonProcess, name: str, **labels: str) -> float:
    return d.scrape().value(name, **labels) or 0


def rewrite(d: DaemonProcess, change: Any) -> None:
    cfg = yaml.safe_load(d.config_path.read_text())
    change(cfg)
    tmp = d.config_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg))
    tmp.replace(d.config_path)


def checks(d: DaemonProcess, model: str) -> float:
    return value(d, "drift_sidecar_drift_check_duration_seconds_count", model_name=model)


AUTO = {
    "auto_register": {"enabled": True, "capture": 20},
    "drift": {"interval_s": 0.2, "min_samples": 5},
}


def test_auto_registered_models_come_back_after_a_restart(daemon_factory):
    d = daemon_factory(AUTO)
    d.send([events("auto-a", 50), events("auto/b", 30)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "both captures")
    # Drift checks run for a model registered after start.
    wait_for(lambda: checks(d, "auto-a") >= 1, 10, "a check of an auto-registered model")
    before = d.json("/v1/drift")["models"]["auto-a"]
    assert d.stop() == 0

    d2 = daemon_factory(config_path=d.config_path)
    (restored,) = records(d2, "auto_registered_restored")
    assert sorted(restored["models"]) == ["auto-a", "auto/b"]
    ready = d2.json("/readyz")["models"]
    assert ready["auto-a"] == {"baseline": "ready", "source": "capture"}
    assert ready["auto/b"] == {"baseline": "ready", "source": "capture"}
    m = d2.scrape()
    assert m.value("ml_drift_window_samples", model_name="auto-a") == 30
    assert m.value("ml_drift_window_samples", model_name="auto/b") == 10
    after = wait_for(
        lambda: (r := d2.json("/v1/drift")["models"]["auto-a"]).get("samples") == 30 and r,
        10,
        "a check after the restart",
    )
    assert after["features"] == before["features"]
    # Registered as before: the same features, so the same series.
    d2.send([events("auto-a", 5, start=50)])
    d2.wait_metric("drift_sidecar_events_accepted_total", 5, model_name="auto-a")
    assert d2.scrape().value("ml_feature_missing_total", model_name="auto-a", feature_name="c") == 0


def test_restored_auto_models_respect_the_cap(daemon_factory):
    d = daemon_factory(AUTO)
    d.send([events("one", 25), events("two", 25)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "captures")
    assert d.stop() == 0
    rewrite(d, lambda c: c["auto_register"].update(max_models=1))
    d2 = daemon_factory(config_path=d.config_path)
    assert len(d2.json("/readyz")["models"]) == 1


def test_a_reload_that_changes_state_dir_is_refused(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "base.parquet")
    d = daemon_factory(
        {"models": [{"name": "m", "baseline": {"path": str(base)}, "features": [{"name": "x"}]}]}
    )
    old_state = Path(yaml.safe_load(d.config_path.read_text())["state_dir"])
    rewrite(d, lambda c: c.update(state_dir=str(tmp_path / "elsewhere")))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: value(d, "drift_sidecar_config_reloads_total", result="failure") == 1,
        10,
        "refused reload",
    )
    (refused,) = records(d, "reload_refused")
    assert "state_dir: cannot change on reload" in refused["error"]
    assert d.scrape().value("drift_sidecar_config_last_reload_successful") == 0
    d.send([events("m", 4)])
    d.wait_metric("drift_sidecar_events_accepted_total", 4, model_name="m")
    assert d.stop() == 0
    assert (old_state / "windows" / "m.json").exists()
    assert not (tmp_path / "elsewhere").exists()


def test_a_threshold_reload_keeps_counters_and_window_a_feature_change_does_not(
    daemon_factory, tmp_path
):
    base = make_baseline(tmp_path / "base.parquet")
    model = {
        "name": "m",
        "version": "1",
        "baseline": {"path": str(base)},
        "features": [{"name": "x"}],
        "prediction": {"type": "numeric"},
        "drift": {"interval_s": 0.2, "min_samples": 5, "psi_threshold": 0.2},
    }
    d = daemon_factory({"models": [model]})
    d.send([events("m", 40)])
    d.wait_metric("drift_sidecar_events_accepted_total", 40, model_name="m")
    wait_for(lambda: d.json("/v1/drift")["models"]["m"].get("samples") == 40, 10, "a check")
    m0 = d.scrape()

    def kept(m: Any) -> dict[str, Any]:
        names = (
            "ml_prediction_requests_total",
            "ml_prediction_latency_seconds_count",
            "ml_feature_value_count",
            "ml_feature_bin_events_total",
            "drift_sidecar_events_accepted_total",
            "ml_drift_window_samples",
        )
        return {n: sorted((sorted(k), v) for k, v in m.series(n).items()) for n in names}

    def retune(c: dict[str, Any]) -> None:
        c["models"][0]["drift"].update(
            psi_threshold=0.9, min_samples=7, p_value=0.01, interval_s=0.3, max_age_s=3600
        )
        c["models"][0]["version"] = "2"

    rewrite(d, retune)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: value(d, "drift_sidecar_config_reloads_total", result="success") == 1,
        10,
        "applied reload",
    )
    (reloaded,) = records(d, "reloaded")
    assert reloaded["retuned"] == ["m"] and reloaded["rebuilt"] == []
    assert kept(d.scrape()) == kept(m0)
    r = wait_for(
        lambda: (r := d.json("/v1/drift")["models"]["m"])["psi_threshold"] == 0.9 and r,
        10,
        "a check with the new threshold",
    )
    assert r["min_samples"] == 7 and r["p_value"] == 0.01 and r["samples"] == 40
    d.send([events("m", 1)])  # the new version is the default now
    wait_for(
        lambda: (
            d.scrape().value(
                "ml_prediction_requests_total", model_name="m", model_version="2", status="success"
            )
            == 1
        ),
        10,
        "v2",
    )

    rewrite(d, lambda c: c["models"][0]["features"][0].update(buckets=[0.5]))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: value(d, "drift_sidecar_config_reloads_total", result="success") == 2,
        10,
        "second reload",
    )
    assert records(d, "reloaded")[1]["rebuilt"] == ["m"]
    assert d.scrape().value("ml_drift_window_samples", model_name="m") == 0


def _storm(d: DaemonProcess, stop: threading.Event, sent: list[int], change: Any = None) -> None:
    flip = False
    while not stop.is_set():
        if change is not None:
            flip = not flip
            rewrite(d, lambda c, flip=flip: change(c, flip))
        os.kill(d.proc.pid, signal.SIGHUP)
        sent[0] += 1
        stop.wait(0.005)


def _flip_threshold(c: dict[str, Any], flip: bool) -> None:
    c["models"][0]["drift"]["psi_threshold"] = 0.3 if flip else 0.2


def _flip_buckets(c: dict[str, Any], flip: bool) -> None:
    c["models"][0]["features"][0]["buckets"] = [0.5] if flip else [0.25, 0.75]


def test_a_sighup_storm_neither_starves_checks_nor_runs_a_reload_per_signal(
    daemon_factory, tmp_path
):
    base = make_baseline(tmp_path / "base.parquet")
    model = {
        "name": "m",
        "baseline": {"path": str(base)},
        "features": [{"name": "x"}],
        "drift": {"interval_s": 0.3, "min_samples": 5},
    }
    d = daemon_factory({"models": [model]})
    d.send([events("m", 40)])
    wait_for(lambda: checks(d, "m") >= 1, 10, "the first check")
    for change in (None, _flip_threshold, _flip_buckets):
        stop, sent = threading.Event(), [0]
        reloads0 = value(d, "drift_sidecar_config_reloads_total", result="success")
        storm = threading.Thread(target=_storm, args=(d, stop, sent, change))
        storm.start()
        try:
            wait_for(lambda sent=sent: sent[0] >= 50, 10, "the storm to start")
            n0 = checks(d, "m")
            # Checks keep their schedule while the signals keep coming.
            wait_for(lambda n0=n0: checks(d, "m") >= n0 + 5, 20, "checks during the storm")
        finally:
            stop.set()
            storm.join(10)
        reloads = value(d, "drift_sidecar_config_reloads_total", result="success") - reloads0
        assert 1 <= reloads < sent[0] / 5, (reloads, sent[0])
        assert d.proc.poll() is None
    # An unchanged file rebuilt nothing; the changing buckets rebuilt the model each time.
    rebuilt = [r["rebuilt"] for r in records(d, "reloaded")]
    assert [] in rebuilt and ["m"] in rebuilt
    assert value(d, "drift_sidecar_config_reloads_total", result="failure") == 0


def test_a_refused_reload_leaves_a_captured_baseline_in_place(daemon_factory, tmp_path):
    """The new config cannot use the captured file (a feature it lacks), and the reload is
    refused for another model: the running model still stands on that file, untouched."""
    base = make_baseline(tmp_path / "base.parquet")
    d = daemon_factory(
        {
            "models": [
                {"name": "cap", "baseline": {"capture": 20}, "features": [{"name": "x"}]},
                {"name": "m", "baseline": {"path": str(base)}, "features": [{"name": "x"}]},
            ],
            "drift": {"interval_s": 0.2, "min_samples": 5},
        }
    )
    d.send([events("cap", 30)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "the capture")
    folder = Path(yaml.safe_load(d.config_path.read_text())["state_dir"]) / "baselines"
    (captured,) = folder.glob("*.parquet")
    content = captured.read_bytes()

    def change(c: dict[str, Any]) -> None:
        c["models"][0]["features"].append({"name": "c", "type": "categorical"})
        c["models"][1]["baseline"]["path"] = str(tmp_path / "missing.parquet")

    rewrite(d, change)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: value(d, "drift_sidecar_config_reloads_total", result="failure") == 1,
        10,
        "refused reload",
    )
    assert "missing.parquet" in records(d, "reload_refused")[0]["error"]
    assert sorted(p.name for p in folder.iterdir()) == [captured.name]
    assert captured.read_bytes() == content
    assert d.json("/readyz")["models"]["cap"] == {"baseline": "ready", "source": "capture"}
    assert d.stop() == 0
    # and the running config's file still serves after a restart on the old config
    rewrite(d, lambda c: (c["models"][0]["features"].pop(), None))
    rewrite(d, lambda c: c["models"][1]["baseline"].update(path=str(base)))
    d2 = daemon_factory(config_path=d.config_path)
    assert d2.json("/readyz")["models"]["cap"] == {"baseline": "ready", "source": "capture"}
