"""`bench/gpu_check.py --embedding-only`: ready for a GPU machine, clear without one.

The timing itself needs CUDA; here: with no GPU visible the check says why and exits 2
(could not run), and the verdict it draws from the benchmark's JSON (the sizes must be
the issue's 10,000 x 768 against 50,000 x 768; the median against the goal, with its
spread) is checked on JSON that a stand-in for the benchmark writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_without_a_visible_gpu_it_says_why_and_exits_2():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--embedding-only"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stdout.strip().splitlines()
    assert line.startswith("FAIL  embedding check on cuda could not run: ")
    assert "sees no CUDA GPU" in line or "torch is not installed" in line


def _stand_in(tmp: Path, rows: list[dict[str, object]]) -> Path:
    """An 'interpreter' that, run as `python embedding_bench.py ... --json OUT`, writes
    `rows` as the benchmark's speed rows."""
    script = tmp / "python"
    doc = json.dumps({"speed": rows})
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "out = sys.argv[sys.argv.index('--json') + 1]\n"
        f"open(out, 'w').write({doc!r})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _row(median: float, **sizes: int) -> dict[str, object]:
    return {
        "device": "cuda:0",
        "window": 10_000,
        "reference": 50_000,
        "dim": 768,
        "features": 1024,
        "reference_prep_s": 0.4,
        "check_ms": {"median": median, "min": median * 0.9, "max": median * 1.2, "n": 7},
        "cuda_peak_bytes": 300 << 20,
        **sizes,
    }


@pytest.mark.parametrize(
    ("row", "verdict", "says"),
    [
        (
            _row(12.5),
            True,
            "PASS  embedding check on cuda:0, 10,000 x 768 vs 50,000 (1024 features): "
            "median 12.5 ms (min 11.2, max 15.0, 7 checks), goal 50 ms",
        ),
        (_row(80.0), False, "FAIL  embedding check on cuda:0, 10,000 x 768 vs 50,000"),
        (_row(5.0, window=1_000, dim=64), False, "FAIL  embedding check ran at"),
    ],
)
def test_the_verdict_reads_sizes_median_and_spread(tmp_path, capsys, row, verdict, says):
    gc = _gpu_check()
    assert gc.embedding_check(_stand_in(tmp_path, [row]), 50.0) is verdict
    out = capsys.readouterr().out
    assert says in out
