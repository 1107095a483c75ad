"""The false-alarm benchmark still runs, and its replay still tells the two rules apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_false_alarms_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "false_alarms.py"), "--quick", "--jobs", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "days alarmed" in proc.stdout and "detection delay" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["bench"] == "false_alarms" and doc["quick"] is True
    rows = {(r["baseline"], r["traffic"]): r for r in doc["false_alarms"]}
    assert set(rows) == {(b, t) for b in ("captured", "file") for t in ("high", "low")}
    for r in rows.values():
        assert r["days"] == 1
        # the replay's seeds are fixed: no false alarm under the new rule on these days
        assert r["new"]["days_with_alarm"] == 0
        assert 0 < r["new"]["median_min_adjusted"] <= 1
    # today's rule flags a captured baseline's categories with no drift at all
    assert rows[("captured", "high")]["today"]["days_with_alarm"] == 1
    # a strong enough shift is flagged by the new rule: 0.1 sd at the file baseline
    delays = {(r["shift"], r["baseline"], r["traffic"]): r for r in doc["delays"]}
    assert delays[("mean +0.1 sd", "file", "low")]["new"]["median_events"] is not None
    assert doc["summary"] and all("case" in s for s in doc["summary"])
