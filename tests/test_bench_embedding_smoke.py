"""The embedding benchmark still runs, and its quick figures are sane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_embedding_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "embedding_bench.py"),
            "--quick",
            "--device",
            "numpy",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["speed"][0]["device"] == "numpy" and doc["speed"][0]["check_ms"]["median"] > 0
    assert 0.0 <= doc["calibration"]["flagged_rate"] <= 0.15
    sparse = doc["power"][1]
    assert sparse["share_of_dims"] == 0.05 and sparse["detected_rate"] >= 0.8
    assert doc["memory"]["ratio"] <= 1.2
    assert {r["case"] for r in doc["summary"]} >= {"no-drift share flagged at 0.05"}
    # ingest through the real daemon, with and without an embedding, from one run
    ingest = doc["ingest"]
    assert ingest["dim"] == 768 and [c["batch"] for c in ingest["cases"]] == [1, 8]
    for case in ingest["cases"]:
        for key in ("daemon_plain", "daemon_embedding", "decode_plain", "decode_embedding"):
            assert case[key]["median"] > 0 and case[key]["n"] == 2, key
        ratio = case["ratio_embedding_to_plain"]
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
        # an embedding is ~12 kB of JSON more than the 16 features
        assert case["bytes_per_event"]["emb"] > case["bytes_per_event"]["plain"] + 10_000
        assert case["us_per_event_to_float32"] > 0
    assert "daemon plain" in proc.stdout and "decode +emb" in proc.stdout
