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
        [
            sys.executable,
            str(ROOT / "bench" / "false_alarms.py"),
            "--quick",
            "--jobs",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "days alarmed" in proc.stdout and "detection delay" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["bench"] == "false_alarms" and doc["quick"] is True
    rows = {(r["baseline"], r["traffic"]): r for r in doc["false_alarms"]}
    assert set(rows) == {(b, t) for b in ("captured", "file") for t in ("high", "low")} | {
        ("all", "all")
    }
    assert rows[("all", "all")]["days"] == 4
    for key, r in rows.items():
        assert r["days"] == (4 if key == ("all", "all") else 1)
        # the replay's seeds are fixed: no false alarm under the new rule on these days
        assert r["new"]["days_with_alarm"] == 0
        assert 0 < r["new"]["median_min_adjusted"] <= 1
    # today's rule flags a captured baseline's categories with no drift at all
    assert rows[("captured", "high")]["today"]["days_with_alarm"] == 1
    # every delay row accounts for its streams: flagged within the limit, or censored
    assert len(doc["delays"]) == 8
    for r in doc["delays"]:
        for rule in ("new", "today"):
            entry = r[rule]
            assert 0 <= entry["censored"] <= r["replicates"] == 2
            if entry["censored"] == 0:
                assert entry["median_events"] is not None
            if entry["median_events"] is not None:
                assert 0 < entry["median_events"] <= 3 * doc["sizes"]["window"]
    assert doc["summary"] and all("case" in s for s in doc["summary"])
