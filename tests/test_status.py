"""`drift-sidecar status`: the real CLI against the real daemon, and against none."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import DaemonProcess, free_port, run_cli, wait_for
from test_drift_bins import MAX_CATEGORIES, N_LIVE, live_events, reference  # noqa: F401

from sidecar.status import (
    BAR_WIDTH,
    StatusError,
    default_url,
    find_column,
    render_bins,
    render_report,
)


def status(tmp: Path, *args: str) -> tuple[int, str]:
    log = tmp / f"status-{len(list(tmp.glob('status-*')))}.log"
    proc = run_cli(["status", *args], log, tmp)
    return proc.wait(timeout=60), log.read_text()


@pytest.fixture
def daemon(tmp_path, daemon_factory, reference) -> DaemonProcess:  # noqa: F811
    cfg = {
        "models": [
            {
                "name": "m",
                "baseline": {"path": str(reference["path"])},
                "features": [{"name": "x"}, {"name": "c", "type": "categorical"}],
                "prediction": {"type": "categorical"},
                "drift": {
                    "interval_s": 0.2,
                    "min_samples": 100,
                    "window_size": 5000,
                    "max_categories": MAX_CATEGORIES,
                },
            },
            {"name": "later", "baseline": {"capture": 1000}, "features": [{"name": "x"}]},
        ]
    }
    d = daemon_factory(cfg)
    events, _ = live_events(np.random.default_rng(12))
    d.send([events[i : i + 200] for i in range(0, N_LIVE, 200)])
    wait_for(
        lambda: d.json("/v1/drift")["models"]["m"].get("samples") == N_LIVE,
        20,
        "a drift check over every event",
    )
    return d


def test_status_prints_every_model_feature_statistic_and_verdict(tmp_path, daemon):
    report = daemon.json("/v1/drift")["models"]["m"]
    code, out = status(tmp_path, "--url", daemon.url)
    assert code == 0, out
    assert f"drift-sidecar at {daemon.url}: 2 model(s)" in out
    assert "model later: capturing its baseline (0 of 1000 events)" in out
    # the shifted feature drifted; the verdicts and statistics are the report's
    assert report["features"]["x"]["drifted"] is True
    assert re.search(r"^model m: DRIFT: .*\bx\b", out, re.M), out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    for name, entry in [*report["features"].items(), ("prediction", report["prediction"])]:
        row = rows[name]
        assert f"{entry['psi']:.4f}" in row and str(entry["samples"]) in row.split()
        verdict = "DRIFT (" + ", ".join(entry["detected_by"]) + ")" if entry["drifted"] else "ok"
        assert row.rstrip().endswith(verdict), row
    assert "KS " in rows["x"] and "chi2 " in rows["c"]


def test_status_draws_a_features_reference_and_window_shares(tmp_path, daemon):
    entry = daemon.json("/v1/drift")["models"]["m"]["features"]["x"]
    code, out = status(tmp_path, "--url", daemon.url, "--feature", "x")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"m / x: numeric, {len(entry['bins'])} bins")
    bins = entry["bins"]
    scale = max(max(b["reference_share"], b["window_share"]) for b in bins)
    rows = lines[2 : 2 + len(bins)]
    for b, row in zip(bins, rows, strict=True):
        lo = "-inf" if b["lower"] is None else format(b["lower"], ".4g")
        hi = "+inf" if b["upper"] is None else format(b["upper"], ".4g")
        assert row.strip().startswith(f"({lo}, {hi}]"), row
        pcts = re.findall(r"(\d+\.\d)%", row)
        assert pcts == [f"{100 * b['reference_share']:.1f}", f"{100 * b['window_share']:.1f}"]
        bars = re.findall(r"%\s(#*)", row)
        assert [len(x) for x in bars] == [
            round(b["reference_share"] / scale * BAR_WIDTH),
            round(b["window_share"] / scale * BAR_WIDTH),
        ], row
    moved = [abs(b["window_share"] - b["reference_share"]) for b in bins]
    assert rows[moved.index(max(moved))].endswith("<- largest change")
    assert sum("<- largest change" in r for r in rows) == 1
    assert out.isascii()  # plain text: no colour codes, no box-drawing characters
    assert "\x1b" not in out

    code, out = status(tmp_path, "--url", daemon.url, "--feature", "prediction", "--model", "m")
    assert code == 0, out
    assert out.splitlines()[0].startswith("m / prediction: categorical, 4 bins")
    assert "__other__" in out


def test_status_finds_the_daemon_from_its_config(tmp_path, daemon):
    code, out = status(tmp_path, "--config", str(daemon.config_path))
    assert code == 0, out
    assert f"drift-sidecar at http://127.0.0.1:{daemon.port}: 2 model(s)" in out
    for pasted in ("/metrics", "/v1/drift/"):
        code, out = status(tmp_path, "--url", daemon.url + pasted)
        assert code == 0 and ": 2 model(s)" in out, out


def test_status_errors_name_what_is_wrong(tmp_path, daemon):
    code, out = status(tmp_path, "--url", daemon.url, "--feature", "nope")
    assert code == 2 and "no feature 'nope' in any model" in out, out
    code, out = status(tmp_path, "--url", daemon.url, "--feature", "x", "--model", "zzz")
    assert code == 2 and "no model 'zzz' (models: later, m)" in out, out


def test_status_without_a_daemon_says_so_and_exits_non_zero(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    code, out = status(tmp_path, "--url", url, "--timeout", "5")
    assert code == 2
    assert out.startswith(f"drift-sidecar: error: cannot reach the daemon at {url}"), out
    assert "Traceback" not in out
    code, out = status(tmp_path, "--url", "ftp://example")
    assert code == 2 and "expected http://HOST:PORT" in out, out


def test_default_url_reaches_a_wildcard_bind_on_loopback() -> None:
    assert default_url("127.0.0.1", 9108) == "http://127.0.0.1:9108"
    assert default_url("0.0.0.0", 1) == "http://127.0.0.1:1"
    assert default_url("::1", 2) == "http://[::1]:2"


def test_a_feature_of_several_models_needs_model() -> None:
    entry: dict[str, Any] = {"kind": "categorical", "bins": []}
    report = {"models": {"a": {"features": {"f": entry}}, "b": {"features": {"f": entry}}}}
    with pytest.raises(StatusError, match=r"several models \(a, b\): pass --model"):
        find_column(report, "f", None)
    assert find_column(report, "f", "b") == ("b", entry)


def test_chart_of_a_window_without_values_shows_no_window_bars() -> None:
    entry = {
        "kind": "categorical",
        "samples": 0,
        "reference_samples": 10,
        "sufficient": False,
        "bins": [
            {"bin": "u", "reference_share": 0.75, "window_share": None, "window_count": 0},
            {"bin": "__other__", "reference_share": 0.25, "window_share": None, "window_count": 0},
        ],
    }
    lines = render_bins("m", "c", entry).splitlines()
    assert lines[2].split() == ["u", "75.0%", "#" * BAR_WIDTH, "-", "-"]
    assert lines[3].split() == ["__other__", "25.0%", "#" * round(BAR_WIDTH / 3), "-", "-"]


def test_report_of_a_model_short_of_samples_says_so() -> None:
    entry = {"kind": "numeric", "samples": 10, "sufficient": False, "drifted": False}
    report = {
        "models": {
            "m": {
                "status": "insufficient_data",
                "samples": 10,
                "min_samples": 50,
                "window_samples": 10,
                "checked_at": 100.0,
                "drifted": False,
                "features": {"x": entry},
            },
            "new": {"status": "pending", "window_samples": 3},
        }
    }
    text = render_report(report, "http://h:1", now=105.0)
    assert "model m: too few samples (10 of 50 needed)   [window 10 events, checked 5s ago]" in text
    assert "model new: no drift check yet (window: 3 events)" in text
    (row,) = [line for line in text.splitlines() if line.startswith("  x ")]
    assert row.split()[-1] == "insufficient"
