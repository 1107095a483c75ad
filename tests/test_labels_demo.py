"""The demo's labeller: delayed labels join, and realized and estimated accuracy show."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from harness import free_port, parse_metrics, run_cli, wait_for


@pytest.mark.slow
def test_demo_scores_delayed_labels_and_estimates_accuracy(tmp_path: Path) -> None:
    port = free_port()
    proc = run_cli(
        ["demo", "--duration", "10", "--drift-after", "3", "--port", str(port), "--rate", "500"],
        tmp_path / "demo.log",
        tmp_path,
    )
    try:

        def scored() -> object:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                m = parse_metrics(r.read().decode())
            joined = m.value("ml_label_events_total", model_name="fraud-flag", result="joined")
            estimated = m.value("ml_prediction_estimated_total", model_name="fraud-flag")
            return (joined or 0) > 100 and (estimated or 0) > 100 and m

        m = wait_for(scored, 10, "joined labels and estimates of fraud-flag")
        assert m.value("ml_label_events_total", model_name="fraud-flag", result="rejected") == 0
        assert m.value("ml_label_baseline_accuracy", model_name="fraud-flag") is not None
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = (tmp_path / "demo.log").read_text().split("demo finished")[1]
    line = re.search(r"realized ([\d.]+)% from labels, estimated ([\d.]+)%", out)
    assert line is not None, out
    assert all(0 < float(x) <= 100 for x in line.groups())
