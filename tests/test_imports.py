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
    for m in ("bins", "chi2", "correction", "kolmogorov", "ks", "numbers", "psi", "reference")
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


SHARED_LEAVES = {"__init__", "__main__", "errors", "paths", "ratelimit", "files"}
"""Standard-library leaf modules that the client and the daemon both import."""


def test_the_client_contract_names_every_daemon_module() -> None:
    """A new daemon module must join the client's forbidden list, or the contract rots."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c.get("source_modules") == ["sidecar.client"]
    )
    forbidden = set(contract["forbidden_modules"])
    modules = {p.stem for p in (ROOT / "sidecar").glob("*.py")} - SHARED_LEAVES
    missing = sorted(f"sidecar.{m}" for m in modules if f"sidecar.{m}" not in forbidden)
    assert missing == []
    assert "sidecar.stats" in forbidden
