"""bench/soak.py still runs end to end (a few seconds) and accounts for every event."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_soak_quick(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["sent"] + res["client_dropped"] == 4_000  # 2 s at 2,000 events/s
    assert res["sent"] > 0
    assert res["lost"] == 0
    assert res["accepted"] == res["sent"] and res["rejected"] == 0
    rss = [s["rss_mib"] for s in res["samples"]]
    assert len(rss) >= 3 and all(r > 0 for r in rss)
    assert "unaccounted for (lost)" in proc.stdout
