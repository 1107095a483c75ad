"""The labels benchmark still runs: joins count, memory stays small, calibration helps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_labels_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "labels_bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    join = doc["join"]
    assert join["waiting"] == 20_000 and join["joined_per_s"]["median"] > 0
    assert join["bytes_per_waiting"] <= 100
    cases = {(c["classes"], c["temperature"], c["calibrated"]): c for c in doc["estimation"]}
    assert len(cases) == 6
    for k in (2, 5):
        sharp, fixed = cases[(k, 0.5, False)], cases[(k, 0.5, True)]
        assert fixed["mean_abs_error"] < sharp["mean_abs_error"], k
    assert {row["unit"] for row in doc["summary"]} >= {"labels/s", "bytes"}
