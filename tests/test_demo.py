"""`drift-sidecar demo --duration N` runs to the end and its drift shows in /metrics."""

from __future__ import annotations

import urllib.request

import pytest
from harness import free_port, parse_metrics, run_cli, wait_for


@pytest.mark.slow
def test_demo_runs_to_the_end_and_drift_appears_in_metrics(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = run_cli(
        ["demo", "--duration", "20", "--drift-after", "2", "--port", str(port), "--rate", "1000"],
        tmp_path / "demo.log",
        tmp_path,
    )
    try:

        def drifted():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                m = parse_metrics(r.read().decode())
            psi = m.value("ml_feature_drift_psi", model_name="fraud-demo", feature_name="amount")
            return (
                m.value("ml_feature_drift_detected", model_name="fraud-demo", feature_name="amount")
                == 1
                and psi is not None
                and psi > 0.2
                and (m.value("ml_embedding_drift_detected", model_name="fraud-demo") == 1)
                and m
            )

        m = wait_for(drifted, 20, "amount and embedding drift in /metrics")
        assert (
            m.value("ml_feature_drift_detected", model_name="fraud-demo", feature_name="hour") == 0
        )
        # what the demo points at once drift fires: the feature's bins beside its reference
        log = tmp_path / "status.log"
        status = run_cli(["status", "--url", url, "--feature", "amount"], log, tmp_path)
        assert status.wait(timeout=30) == 0, log.read_text()
        chart = log.read_text()
        assert chart.startswith("fraud-demo / amount: numeric, 10 bins") and "DRIFT" in chart
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = (tmp_path / "demo.log").read_text()
    assert "demo finished" in out and "amount" in out.split("demo finished")[1]
    assert f"see the bins: drift-sidecar status --url {url} --feature amount" in out
