"""A running daemon imports what it uses, when it first uses it.

The modules below are imported where they are first needed (a baseline to read, a capture
to write, arrays to restore, a p-value to compute, a subcommand to run). A daemon with no
model never needs them: ready, serving /metrics and /healthz and writing snapshots, it must
not have imported them, since every import stays in its memory for good (test_imports.py
holds the same for a bare `import`; this holds it for the daemon at work).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fake_nvml import nvml_library_loadable
from harness import DaemonProcess, wait_for

NOT_IMPORTED_WITHOUT_A_MODEL = (
    "pyarrow",  # parquet: only to read or write a baseline
    "scipy",  # the statistics compute their own p-values
    "zipfile",  # the arrays of a snapshot, read only when one is restored
    "sidecar.baseline",
    "sidecar.baseline_columns",
    "sidecar.baseline_meta",
    "sidecar.loading",
    "sidecar.baseline_build",  # subcommands
    "sidecar.demo",
    "sidecar.demo_labels",
    "sidecar.status",
    "sidecar.client",
)

# `drift-sidecar` that writes the names in sys.modules to argv[1] on SIGUSR1, from the
# daemon's own main thread: what the running daemon has imported, as it is at that moment.
_LAUNCHER = """
import os, signal, sys
from pathlib import Path
out = Path(sys.argv[1])
def dump(signum, frame):
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\\n".join(sorted(sys.modules)))
    os.replace(tmp, out)
signal.signal(signal.SIGUSR1, dump)
from sidecar.cli import main
sys.exit(main(sys.argv[2:]))
"""


def start(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path, extra: dict[str, Any]
) -> tuple[DaemonProcess, Path]:
    out = tmp_path / f"modules-{len(list(tmp_path.iterdir()))}.txt"
    d = daemon_factory(extra, wait_ready=True, launcher=[sys.executable, "-c", _LAUNCHER, str(out)])
    return d, out


def imported(d: DaemonProcess, out: Path) -> set[str]:
    d.proc.send_signal(signal.SIGUSR1)
    wait_for(out.exists, 20, "the daemon's list of imported modules")
    return set(out.read_text().split())


def test_a_daemon_with_no_model_imports_no_parquet_baseline_loader_or_subcommand(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    d, out = start(
        daemon_factory,
        tmp_path,
        {
            "models": [],
            "auto_register": {"enabled": True},  # as the memory bench runs it
            "state": {"snapshot_interval_s": 0.2},
        },
    )
    assert d.get("/healthz")[0] == 200
    # two snapshots written: the steady state, not only the start
    wait_for(
        lambda: (
            (d.scrape().value("drift_sidecar_state_snapshots_total", result="success") or 0) >= 2
        ),
        20,
        "two state snapshots",
    )
    assert d.get("/metrics")[0] == 200
    modules = imported(d, out)
    assert {"sidecar.daemon", "sidecar.server", "sidecar.tracker"} <= modules  # it ran
    assert sorted(modules & set(NOT_IMPORTED_WITHOUT_A_MODEL)) == []


def test_a_daemon_with_a_baseline_file_imports_the_loader(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """The other side: a model with a baseline loads it, so the list above is not empty by
    accident of how it is read."""
    from sidecar.baseline import write_baseline

    baseline = tmp_path / "baseline.parquet"
    rng = np.random.default_rng(0)
    write_baseline(
        baseline,
        "m",
        numeric={"x": rng.random(200)},
        categorical={},
        prediction=None,
        prediction_kind=None,
    )
    d, out = start(
        daemon_factory,
        tmp_path,
        {
            "models": [
                {"name": "m", "baseline": {"path": str(baseline)}, "features": [{"name": "x"}]}
            ]
        },
    )
    assert d.get("/healthz")[0] == 200
    modules = imported(d, out)
    assert {"sidecar.loading", "sidecar.baseline", "pyarrow"} <= modules
    assert "scipy" not in modules


def test_gpu_auto_imports_pynvml_only_where_the_driver_is(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """`gpu.enabled: auto` (the default) on a machine without the NVIDIA driver's library
    finds no GPU without importing pynvml; with the library, it is the daemon's to use."""
    d, out = start(
        daemon_factory,
        tmp_path,
        {"models": [], "auto_register": {"enabled": True}, "gpu": {"enabled": "auto"}},
    )
    m = d.scrape()
    modules = imported(d, out)
    assert "sidecar.nvml" in modules
    if nvml_library_loadable():
        assert "pynvml" in modules
    else:
        assert "pynvml" not in modules
        assert m.value("drift_sidecar_gpu_available") == 0
        assert "NVML Shared Library Not Found" in d.logs()
