"""bench/client_bench.py still runs end to end (tiny sizes) and reports every case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.timeout(180)
def test_client_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "client.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "client_bench.py"),
            "--quick",
            "--runs",
            "1",
            "--requests",
            "30",
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "record (1 event)" in proc.stdout
    assert "with client" in proc.stdout
    res = json.loads(out.read_text())
    cases = res["record"]
    for call in ("record (1 event)", "record_batch (256)", "torch record_batch (256)"):
        for side in ("up", "down", "stalled"):
            (run,) = cases[f"{call} / {side}"]["runs"]
            assert 0 < run["median_ns"] <= run["p99_ns"] <= run["max_ns"]
    # The single-event hot path stays in the microseconds even on a busy CI machine.
    assert cases["record (1 event) / down"]["runs"][0]["median_ns"] < 20_000
    for side in ("with client", "without client"):
        (run,) = res["server"][side]
        assert 0 < run["p50_ms"] <= run["p99_ms"]
