"""The frames benchmark still runs, and its quick figures are sane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_frames_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "frames_bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    for case in ("numeric", "embedding"):
        assert doc[case]["frames"]["median"] > 0 and doc[case]["json"]["median"] > 0
    assert doc["client_us"]["median"] > 0
    assert doc["numeric"]["read_only"]["median"] > 0 and doc["numeric"]["sort_only"]["median"] > 0
    assert doc["numeric"]["of_read_only"]["median"] > 0
    assert {r["case"] for r in doc["summary"]} >= {
        "frames numeric 4096/batch",
        "client record_batch 4096 rows",
    }
    assert "frames/JSON" in proc.stdout
