"""Import layers: the contracts in pyproject.toml hold, and the light modules stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), "import-linter is in the dev extra: pip install -e '.[dev]'"
    run = subprocess.run(
        [str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


STATS = ", ".join(
    f"sidecar.stats.{m}"
    for m in ("bins", "chi2", "correction", "ks", "numbers", "psi", "reference")
)


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        (STATS, "pyarrow"),
        ("sidecar.drift", "pyarrow"),
        ("sidecar.tracker", "pyarrow"),
        # scipy is imported where a p-value is computed, not before
        (STATS, "scipy"),
        ("sidecar.drift", "scipy"),
        ("sidecar.client", "numpy"),
        # pyarrow only where a parquet file is read or written (see sidecar.baseline)
        ("sidecar.daemon", "pyarrow"),
        ("sidecar.baseline", "pyarrow"),
        ("sidecar.daemon", "scipy.stats"),
    ],
)
def test_import_does_not_load(module: str, heavy: str) -> None:
    code = f"import sys, {module}; print({heavy!r} in sys.modules)"
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
