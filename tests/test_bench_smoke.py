"""Each benchmark of bench/ runs with --quick and writes sound JSON, so none can rot; and
scripts/bench reports missing and failing benchmarks instead of dying on them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--json", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc: dict[str, Any] = json.loads(out.read_text())
    assert doc["quick"] is True
    assert doc["machine"]["nproc"] >= 1
    assert doc["summary"], "no headline figures"
    for row in doc["summary"]:
        assert row["value"] > 0, row
        if row["lo"] is not None:
            assert row["lo"] <= row["value"] <= row["hi"], row
    return doc


@pytest.mark.slow
def test_ingest_bench_counts_every_event_on_all_three_servers(tmp_path: Path) -> None:
    doc = run_bench("bench/ingest_bench.py", tmp_path)
    cases = {c["case"]: c for c in doc["cases"]}
    assert set(cases) == {
        "1/line x1 conn",
        "1/line x4 conn",
        "256/line x1 conn",
        "256/line x4 conn",
    }
    # The daemon's own counters matched the total sent: warm-up plus every timed run.
    warmup = cases["256/line x4 conn"]["seed_events"]
    assert doc["verified"]["events"] == warmup + sum(c["events"] for c in cases.values())
    for c in cases.values():
        for key in ("daemon_events_per_s", "decode_only_events_per_s", "seed_style_events_per_s"):
            assert c[key]["median"] > 0, (c["case"], key)
        assert c["daemon_over_decode"]["median"] == pytest.approx(
            c["daemon_events_per_s"]["median"] / c["decode_only_events_per_s"]["median"], rel=1e-9
        )


@pytest.mark.slow
def test_scrape_bench_sees_every_drift_and_bin_series(tmp_path: Path) -> None:
    doc = run_bench("bench/scrape_bench.py", tmp_path, "--scrapes", "2")
    (size,) = doc["sizes"]
    n = size["features"]
    assert size["series_counts"]["psi"] == size["series_counts"]["ks"] == n
    assert size["series_counts"]["bins"] == n * 10
    for fmt in ("text", "openmetrics"):
        assert size[fmt]["bytes"] > size[fmt]["gzip_bytes"] > 0
        assert size[fmt]["seconds"]["n"] == 2


def test_scrape_loop_bench_measures_both_handlers(tmp_path: Path) -> None:
    doc = run_bench("bench/scrape_loop_bench.py", tmp_path)
    for mode in ("whole", "chunked"):
        (run,) = doc["runs"][mode]
        for fmt in ("text", "openmetrics"):
            assert run["turns"][fmt] > 0
            assert 0 < run["max_ms"][fmt] < 10_000


@pytest.mark.slow
def test_memory_bench_grows_with_the_window(tmp_path: Path) -> None:
    doc = run_bench("bench/memory_bench.py", tmp_path)
    cells = doc["cells"]
    assert [(c["features"], c["window"]) for c in cells] == [(10, 200), (10, 1000)]
    for c in cells:
        assert c["peak_rss_kib"] >= c["full_rss_kib"] > doc["floor_rss_kib"] > 0
        assert c["over_floor_kib"] == c["full_rss_kib"] - doc["floor_rss_kib"]
        assert c["window_arrays_kib"] == c["window"] * (c["features"] + 3) * 8 / 1024


@pytest.mark.slow
def test_startup_bench_times_all_three_variants(tmp_path: Path) -> None:
    doc = run_bench("bench/startup_bench.py", tmp_path, "--rows", "2000", "--features", "5")
    assert set(doc["seconds"]) == {"stored statistics", "no stored statistics", "no baseline"}
    assert doc["file_bytes"]["stored statistics"] > 0
    for v in doc["seconds"].values():
        assert 0 < v["median"] < 60


def load_runner() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bench_runner", str(ROOT / "scripts" / "bench"))
    spec = importlib.util.spec_from_loader("bench_runner", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_runner_reports_missing_failed_and_ok_benchmarks(tmp_path: Path) -> None:
    runner = load_runner()
    ok_script = tmp_path / "ok_bench.py"
    ok_script.write_text(
        "import json, sys\n"
        "out = sys.argv[sys.argv.index('--json') + 1]\n"
        "json.dump({'summary': [{'case': 'c', 'value': 2.5, 'lo': 2.0, 'hi': 3.0,"
        " 'unit': 'ms', 'note': 'n'}]}, open(out, 'w'))\n"
    )
    bad_script = tmp_path / "bad_bench.py"
    bad_script.write_text("import sys\nprint('went wrong')\nsys.exit(3)\n")
    py = sys.executable
    flags: dict[str, Any] = {"takes_flags": True, "quick": True, "tmp": tmp_path}

    missing = runner.run_one(py, "gone", str(tmp_path / "absent.py"), **flags)
    failed = runner.run_one(py, "bad", str(bad_script), **flags)
    ok = runner.run_one(py, "good", str(ok_script), **flags)

    assert missing["status"] == "missing"
    assert failed["status"] == "failed" and failed["rc"] == 3
    assert failed["output_tail"] == ["went wrong"]
    assert ok["status"] == "ok" and "--quick" in ok["command"]
    rows = [
        r
        for n, e in (("gone", missing), ("bad", failed), ("good", ok))
        for r in runner.summary_rows(n, e)
    ]
    assert rows[0][:2] == ["gone", "MISSING"]
    assert rows[1][:2] == ["bad", "FAILED"] and "went wrong" in rows[1][5]
    assert rows[2] == ["good", "c", "2.5", "2-3", "ms", "n"]
