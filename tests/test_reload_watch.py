"""Reload on a file change (reload.watch), and a corrupt captured baseline captured again."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from harness import wait_for

MODEL = {"name": "m", "baseline": {"capture": 20}, "features": [{"name": "x"}]}


def test_watched_config_change_reloads_like_sighup(daemon_factory):
    d = daemon_factory({"models": [MODEL], "reload": {"watch": True, "interval_s": 0.1}})
    cfg = yaml.safe_load(d.config_path.read_text())
    cfg["models"].append({**MODEL, "name": "second"})
    d.config_path.write_text(yaml.safe_dump(cfg))
    wait_for(
        lambda: d.scrape().value("drift_sidecar_config_reloads_total", result="success") == 1,
        15,
        "watched reload",
    )
    d.send([{"model": "second", "features": {"x": 1.0}}])
    d.wait_metric("drift_sidecar_events_accepted_total", 1, model_name="second")
    d.config_path.write_text("models: [oops\n")
    wait_for(
        lambda: d.scrape().value("drift_sidecar_config_reloads_total", result="failure") == 1,
        15,
        "refused watched reload",
    )
    d.send([{"model": "second", "features": {"x": 2.0}}])
    d.wait_metric("drift_sidecar_events_accepted_total", 2, model_name="second")


def test_corrupt_captured_baseline_is_set_aside_and_captured_again(daemon_factory, tmp_path):
    d = daemon_factory({"models": [MODEL]})
    d.send([[{"model": "m", "features": {"x": float(i)}} for i in range(20)]])
    wait_for(lambda: d.get("/readyz")[0] == 200, 15, "capture")
    assert d.stop() == 0
    state = yaml.safe_load(d.config_path.read_text())["state_dir"]
    captured = Path(state) / "baselines" / "m.parquet"
    captured.write_bytes(b"not parquet at all")

    again = daemon_factory(config_path=d.config_path)
    body = again.json("/readyz")
    assert body["models"]["m"]["baseline"] == "capturing"
    assert list(captured.parent.glob("m.parquet.corrupt-*"))
    logs = [json.loads(ln) for ln in again.logs().splitlines() if ln.startswith("{")]
    assert any(r.get("event") == "state_discarded" and r.get("model") == "m" for r in logs)
    again.send([[{"model": "m", "features": {"x": float(i)}} for i in range(20)]])
    wait_for(lambda: again.get("/readyz")[0] == 200, 15, "capture again")
