"""The drift benchmark still runs, and its KS statistics still equal scipy's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_drift_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "drift_bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratio" in proc.stdout
    doc = json.loads(out.read_text())
    (result,) = doc["results"]
    assert result["features"] == 10
    assert result["ks_statistic_max_abs_diff"] <= 1e-12
    assert result["ks_pvalue_max_rel_diff"] <= 1e-12
    assert result["check_model"]["min_ms"] > 0 and result["scipy_loop"]["min_ms"] > 0
    assert result["drifted_features"] >= 1
