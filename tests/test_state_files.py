"""Disk and files: what is in `state_dir` may be damaged, full, read-only or tampered with.

The class, through the real daemon: every kind of file that can stand where a snapshot
manifest, a snapshot's arrays or a captured baseline should be (a FIFO, a symlink to
/dev/zero, a folder, a sparse file of many GiB, random bytes, checksum-consistent files
whose headers claim absurd sizes) lets the daemon start; the file is set aside, never
deleted, with a log line. Writes that fail later (a full disk, a state_dir that cannot be
written) are logged, counted and retried, and the daemon never exits 1. Temporary files
of a writer killed mid-write are removed at the next start; nothing else is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import resource
import signal
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from harness import DaemonProcess, free_port, kill_quietly, run_to_exit, wait_for

from sidecar.baseline import write_baseline
from sidecar.statefiles import state_name

WINDOW = {"interval_s": 0.2, "min_samples": 5, "window_size": 10_000}


def file_model(name: str, baseline: Path) -> dict[str, Any]:
    return {
        "name": name,
        "baseline": {"path": str(baseline)},
        "features": [{"name": "x"}, {"name": "y"}],
        "drift": WINDOW,
    }


def capture_model(name: str, n: int = 20) -> dict[str, Any]:
    return {
        "name": name,
        "baseline": {"capture": n},
        "features": [{"name": "x"}, {"name": "y"}],
        "drift": WINDOW,
    }


def make_baseline(path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_baseline(
        path,
        "any",
        numeric={"x": rng.normal(0, 1, 500), "y": rng.normal(0, 1, 500)},
        categorical={},
        prediction=None,
        prediction_kind=None,
    )
    return path


def events(model: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"model": model, "features": {"x": float(i % 7), "y": float(i % 5)}}
        for i in range(start, start + n)
    ]


def noisy(model: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Events whose values do not compress: a captured baseline of them is large."""
    rng = random.Random(start)
    return [{"model": model, "features": {"x": rng.random(), "y": rng.random()}} for _ in range(n)]


def batches(model: str, n: int, start: int = 0) -> list[list[dict[str, Any]]]:
    """Lines of at most 1,000 noisy events (socket.max_batch_events is 10,000)."""
    return [noisy(model, min(1000, start + n - k), k) for k in range(start, start + n, 1000)]


def records(d: DaemonProcess, event: str) -> list[dict[str, Any]]:
    out = []
    for line in d.logs().splitlines():
        if f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def state_dir(d: DaemonProcess) -> Path:
    return Path(yaml.safe_load(d.config_path.read_text())["state_dir"])


def window(d: DaemonProcess, model: str) -> float | None:
    return d.scrape().value("ml_drift_window_samples", model_name=model)


def aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


# ------------------------------------------------------------------ tampering
def _npz_with(arrays: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, raw in arrays.items():
            z.writestr(name + ".npy", raw)
    return buf.getvalue()


def _npy_claiming(shape: tuple[int, ...], payload: bytes = b"\0" * 16) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return f.getvalue() + payload


def _members(npz: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(npz) as z:
        return {i.filename.removesuffix(".npy"): z.read(i) for i in z.infolist()}


def _consistent(windows: Path, model: str, data: bytes, **manifest_changes: Any) -> None:
    """Replace a model's arrays with `data` and fix the manifest's checksum to match."""
    man_path = windows / f"{state_name(model)}.json"
    man = json.loads(man_path.read_text())
    (windows / man["arrays"]).write_bytes(data)
    man["sha256"] = hashlib.sha256(data).hexdigest()
    man.update(manifest_changes)
    man_path.write_text(json.dumps(man))


def t_fifo_manifest(windows: Path, model: str) -> Path:
    p = windows / f"{state_name(model)}.json"
    p.unlink()
    os.mkfifo(p)
    return p


def t_dev_zero_manifest(windows: Path, model: str) -> Path:
    p = windows / f"{state_name(model)}.json"
    p.unlink()
    p.symlink_to("/dev/zero")
    return p


def t_dev_zero_arrays(windows: Path, model: str) -> Path:
    man = json.loads((windows / f"{state_name(model)}.json").read_text())
    p = windows / man["arrays"]
    p.unlink()
    p.symlink_to("/dev/zero")
    return p


def t_folder_manifest(windows: Path, model: str) -> Path:
    p = windows / f"{state_name(model)}.json"
    p.unlink()
    p.mkdir()
    return p


def t_sparse_arrays(windows: Path, model: str) -> Path:
    man = json.loads((windows / f"{state_name(model)}.json").read_text())
    p = windows / man["arrays"]
    with p.open("r+b") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse: costs nothing to make, everything to read
    return p


def t_absurd_npy_shape(windows: Path, model: str) -> Path:
    man = json.loads((windows / f"{state_name(model)}.json").read_text())
    members = _members(windows / man["arrays"])
    members["numeric"] = _npy_claiming((10**12, 2))
    _consistent(windows, model, _npz_with(members))
    return windows / man["arrays"]


def t_absurd_rows(windows: Path, model: str) -> Path:
    man_path = windows / f"{state_name(model)}.json"
    man = json.loads(man_path.read_text())
    man["rows"] = 10**15
    man_path.write_text(json.dumps(man))
    return man_path


def t_infinite_rows(windows: Path, model: str) -> Path:
    man_path = windows / f"{state_name(model)}.json"
    text = man_path.read_text()
    man = json.loads(text)
    man_path.write_text(text.replace(f'"rows": {man["rows"]}', '"rows": 1e400'))
    return man_path


def t_not_a_zip(windows: Path, model: str) -> Path:
    _consistent(windows, model, os.urandom(4096))
    man = json.loads((windows / f"{state_name(model)}.json").read_text())
    return windows / man["arrays"]


def t_deep_json(windows: Path, model: str) -> Path:
    p = windows / f"{state_name(model)}.json"
    p.write_text("[" * 200_000)
    return p


def t_zip_bomb_member(windows: Path, model: str) -> Path:
    man = json.loads((windows / f"{state_name(model)}.json").read_text())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("numeric.npy", _npy_claiming((1 << 16, 2), b"\0" * (16 << 16)))
    _consistent(windows, model, buf.getvalue())
    return windows / man["arrays"]


WINDOW_TAMPERING = {
    "fifo_manifest": t_fifo_manifest,
    "dev_zero_manifest": t_dev_zero_manifest,
    "dev_zero_arrays": t_dev_zero_arrays,
    "folder_manifest": t_folder_manifest,
    "sparse_arrays": t_sparse_arrays,
    "absurd_npy_shape": t_absurd_npy_shape,
    "absurd_rows": t_absurd_rows,
    "infinite_rows": t_infinite_rows,
    "not_a_zip": t_not_a_zip,
    "deep_json": t_deep_json,
    "zip_bomb_member": t_zip_bomb_member,
}


def c_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def c_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def c_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def c_sparse(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(20 << 30)


def c_random(path: Path) -> None:
    path.write_bytes(os.urandom(3000))


def c_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


CAPTURE_TAMPERING = {
    "fifo": c_fifo,
    "dev_zero": c_dev_zero,
    "folder": c_folder,
    "sparse": c_sparse,
    "random": c_random,
    "truncated": c_truncated,
}


def test_tampered_state_never_stops_start_up_and_is_set_aside(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "base.parquet")
    models = [file_model("ok", base)]
    models += [file_model(f"w_{k}", base) for k in WINDOW_TAMPERING]
    models += [capture_model(f"c_{k}") for k in CAPTURE_TAMPERING]
    d = daemon_factory({"models": models})
    for m in models:
        d.send([events(m["name"], 30)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "every capture")
    for m in models:
        d.wait_metric("drift_sidecar_events_accepted_total", 30, model_name=m["name"])
    assert d.stop() == 0
    root = state_dir(d)
    windows, baselines = root / "windows", root / "baselines"

    bad: dict[str, Path] = {}
    for k, tamper in WINDOW_TAMPERING.items():
        bad[f"w_{k}"] = tamper(windows, f"w_{k}")
    for k, tamper in CAPTURE_TAMPERING.items():
        path = baselines / f"c_{k}.parquet"
        tamper(path)
        bad[f"c_{k}"] = path

    d2 = daemon_factory(config_path=d.config_path)  # starts at all: no hang, no exit
    discarded = {r.get("model") for r in records(d2, "state_discarded")}
    assert discarded >= set(bad), set(bad) - discarded
    assert window(d2, "ok") == 30  # the healthy neighbour is restored
    ready = d2.json("/readyz")["models"]
    for name, path in bad.items():
        assert window(d2, name) == 0, name
        moved = aside(path)
        assert len(moved) == 1, (name, sorted(p.name for p in path.parent.iterdir()))
        if name.startswith("c_"):
            assert ready[name]["baseline"] == "capturing", name
    assert os.path.exists("/dev/zero")

    # The set-aside files no longer stand in the way: new state is written and restored.
    for name in bad:
        d2.send([events(name, 40, start=100)])
    wait_for(lambda: d2.get("/readyz")[0] == 200, 20, "captures again")
    assert d2.stop() == 0
    d3 = daemon_factory(config_path=d.config_path)
    assert not {r.get("model") for r in records(d3, "state_discarded")}
    for name in bad:
        assert window(d3, name) == (20 if name.startswith("c_") else 40), name


def test_a_symlinked_or_file_subfolder_is_set_aside_and_its_target_untouched(
    daemon_factory, tmp_path
):
    base = make_baseline(tmp_path / "base.parquet")
    d = daemon_factory({"models": [file_model("m", base)]})
    d.send([events("m", 10)])
    d.wait_metric("drift_sidecar_events_accepted_total", 10, model_name="m")
    assert d.stop() == 0
    root = state_dir(d)
    elsewhere = tmp_path / "elsewhere"
    (root / "windows").rename(elsewhere)
    (root / "windows").symlink_to(elsewhere)
    (root / "baselines").rmdir()  # empty: no model captures
    (root / "baselines").write_text("not a folder")
    listing = sorted(p.name for p in elsewhere.iterdir())

    d2 = daemon_factory(config_path=d.config_path)
    assert (root / "windows").is_dir() and not (root / "windows").is_symlink()
    assert len(aside(root / "windows")) == 1 and len(aside(root / "baselines")) == 1
    assert sorted(p.name for p in elsewhere.iterdir()) == listing  # the target: untouched
    d2.send([events("m", 5)])
    d2.wait_metric("drift_sidecar_events_accepted_total", 5, model_name="m")
    assert d2.stop() == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == listing


# ------------------------------------------------------------------ write failures
_LAUNCHER = """
import os, resource, sys, time
from pathlib import Path
mode, arg = sys.argv[1], sys.argv[2]
if mode == "fsize":  # a full disk: writes past this many bytes fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(arg), resource.RLIM_INFINITY))
elif mode == "stall":  # a writer stopped between writing its temp file and renaming it
    started, real = Path(arg), os.replace
    def stalled(src, dst, *a, **k):
        if str(src).endswith(".tmp"):
            started.touch()
            while True:
                time.sleep(1)
        return real(src, dst, *a, **k)
    os.replace = stalled
from sidecar.cli import main
sys.exit(main(sys.argv[3:]))
"""


def launcher(mode: str, arg: str) -> list[str]:
    return [sys.executable, "-c", _LAUNCHER, mode, arg]


def counter(d: DaemonProcess, name: str, **labels: str) -> float:
    return d.scrape().value(name, **labels) or 0


def test_full_disk_during_capture_keeps_serving_and_writes_once_space_returns(
    daemon_factory, tmp_path
):
    n = 20_000  # a captured baseline of about 300 KiB; the "disk" takes 150 KiB per file
    d = daemon_factory(
        {"models": [capture_model("m", n)], "state": {"snapshot_interval_s": 0.3}},
        launcher=launcher("fsize", str(150 << 10)),
    )
    config_path = d.config_path
    try:
        d.send(batches("m", n + 50))
        wait_for(lambda: d.get("/readyz")[0] == 200, 20, "baseline in use from memory")
        wait_for(
            lambda: counter(d, "drift_sidecar_baseline_writes_total", result="failure") >= 2,
            20,
            "write failed and retried",
        )
        assert records(d, "baseline_write_failed")
        baselines = state_dir(d) / "baselines"
        assert not list(baselines.glob("*.parquet"))  # neither the file nor a temp file
        assert not [p for p in baselines.iterdir() if p.name.endswith(".tmp")]
        wait_for(
            lambda: (m := d.scrape()).value("ml_drift_window_samples", model_name="m") == 50 and m,
            10,
            "window",
        )
        assert d.proc.poll() is None

        # Space comes back: the next snapshot writes the baseline; nothing was lost.
        resource.prlimit(
            d.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        wait_for(
            lambda: counter(d, "drift_sidecar_baseline_writes_total", result="success") == 1,
            20,
            "the retried write",
        )
        assert (baselines / "m.parquet").exists()
        d.send([events("m", 5, start=n + 50)])
        d.wait_metric("drift_sidecar_events_accepted_total", n + 55, model_name="m")
        assert d.stop() == 0
    finally:
        kill_quietly(d)
    d2 = daemon_factory(config_path=config_path)
    assert d2.json("/readyz")["models"]["m"]["source"] == "capture"
    assert window(d2, "m") == 55


def test_unwritable_state_dir_runs_degraded_and_recovers(daemon_factory, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where state_dir's parent should be")
    root = blocker / "state"
    d = daemon_factory(
        {
            "state_dir": str(root),
            "state": {"snapshot_interval_s": 0.3},
            "models": [capture_model("m", 20)],
        }
    )
    (degraded,) = records(d, "state_dir_degraded")
    assert str(root) in degraded["state_dir"] and "Not a directory" in degraded["reason"]
    d.send([events("m", 30)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "baseline from memory")
    wait_for(
        lambda: counter(d, "drift_sidecar_state_snapshots_total", result="failure") >= 2,
        20,
        "snapshots failing, retried",
    )
    assert counter(d, "drift_sidecar_baseline_writes_total", result="failure") >= 1

    blocker.unlink()  # the volume comes back
    wait_for(
        lambda: counter(d, "drift_sidecar_baseline_writes_total", result="success") == 1,
        20,
        "baseline written",
    )
    wait_for((root / "windows" / "m.json").exists, 20, "snapshot written")
    assert d.stop() == 0  # never 1, degraded or not

    d2 = daemon_factory(config_path=d.config_path)
    assert d2.json("/readyz")["models"]["m"]["baseline"] == "ready"
    assert window(d2, "m") == 10


def test_a_failed_snapshot_never_exits_1(daemon_factory, tmp_path):
    """The state folder disappears under a running daemon, and SIGTERM comes: exit 0."""
    blocker = tmp_path / "vol"
    root = blocker / "state"
    base = make_baseline(tmp_path / "base.parquet")
    d = daemon_factory(
        {
            "state_dir": str(root),
            "models": [file_model("m", base)],
            "state": {"snapshot_interval_s": 3600},
        }
    )
    d.send([events("m", 10)])
    d.wait_metric("drift_sidecar_events_accepted_total", 10, model_name="m")
    (root / "windows").rename(tmp_path / "gone")
    (root / "windows").write_text("now a file")
    assert d.stop() == 0
    assert records(d, "state_save_failed")


def test_temp_files_of_a_killed_writer_are_removed_at_start_and_nothing_else(
    daemon_factory, tmp_path
):
    base = make_baseline(tmp_path / "base.parquet")
    started = tmp_path / "writer-stalled"
    d = daemon_factory(
        {
            "models": [file_model("m", base), capture_model("c", 20)],
            "state": {"snapshot_interval_s": 0.2},
        },
        launcher=launcher("stall", str(started)),
    )
    config_path = d.config_path
    try:
        d.send([events("m", 10), *events("c", 25)])
        wait_for(started.exists, 20, "a write to reach its rename")
    finally:
        d.stop(signal.SIGKILL)
    root = yaml.safe_load(config_path.read_text())["state_dir"]
    windows, baselines = Path(root) / "windows", Path(root) / "baselines"
    left = [p for p in [*windows.iterdir(), *baselines.iterdir()] if p.name.endswith(".tmp")]
    assert left, "the kill left no temp file: the test did not reproduce the crash"
    # Files that are not the writers' temp files, some of them look alike.
    decoys = [
        windows / "notes.tmp",
        windows / ".hidden",
        baselines / "m.parquet.bak",
        windows / ".m.json.abcdefgh.tmp.keep",
    ]
    for p in decoys:
        p.write_text("keep me")
    link = windows / ".x.json.abcdefgh.tmp"
    link.symlink_to(tmp_path / "base.parquet")
    folder = windows / ".y.json.abcdefgh.tmp"
    folder.mkdir()

    d2 = daemon_factory(config_path=config_path)
    for p in left:
        assert not p.exists(), p
    for p in decoys:
        assert p.read_text() == "keep me"
    assert link.is_symlink() and folder.is_dir()
    (removed,) = records(d2, "state_temp_files_removed")
    assert sorted(removed["files"]) == sorted(f"{p.parent.name}/{p.name}" for p in left)


# ------------------------------------------------------------------ names
def test_model_names_that_used_to_share_a_file_keep_their_own_state(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "base.parquet")
    first = "a:b"
    second = "a_b-" + hashlib.sha256(first.encode()).hexdigest()[:8]  # its old file name
    d = daemon_factory(
        {
            "models": [
                file_model(first, base),
                file_model(second, base),
                capture_model("c:1"),
                capture_model("c_1-" + hashlib.sha256(b"c:1").hexdigest()[:8]),
            ]
        }
    )
    d.send([events(first, 7), *events(second, 11)])
    d.send([events("c:1", 20), *events("c_1-" + hashlib.sha256(b"c:1").hexdigest()[:8], 23)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "captures")
    d.wait_metric("drift_sidecar_events_accepted_total", 11, model_name=second)
    d.wait_metric("drift_sidecar_events_accepted_total", 7, model_name=first)
    assert d.stop() == 0
    d2 = daemon_factory(config_path=d.config_path)
    assert window(d2, first) == 7
    assert window(d2, second) == 11
    # Each captured baseline is its own: the second one's came from 20 of its own rows.
    info = d2.scrape().series("drift_sidecar_baseline_info")
    shas = {dict(k)["model_name"]: dict(k)["sha256"] for k in info}
    assert shas["c:1"] != shas["c_1-" + hashlib.sha256(b"c:1").hexdigest()[:8]]


def test_state_written_under_the_old_file_names_is_still_read(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "base.parquet")
    d = daemon_factory({"models": [file_model("fraud.v2", base), capture_model("cap.v2")]})
    d.send([events("fraud.v2", 9), *events("cap.v2", 24)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "capture")
    d.wait_metric("drift_sidecar_events_accepted_total", 24, model_name="cap.v2")
    assert d.stop() == 0
    root = state_dir(d)
    for new, old in [
        (root / "windows" / "fraud%2Ev2.json", root / "windows" / "fraud.v2.json"),
        (root / "windows" / "cap%2Ev2.json", root / "windows" / "cap.v2.json"),
        (root / "baselines" / "cap%2Ev2.parquet", root / "baselines" / "cap.v2.parquet"),
    ]:
        new.rename(old)
    d2 = daemon_factory(config_path=d.config_path)
    assert window(d2, "fraud.v2") == 9
    assert d2.json("/readyz")["models"]["cap.v2"]["baseline"] == "ready"
    assert window(d2, "cap.v2") == 4


# ------------------------------------------------------------------ file modes
def test_baseline_build_writes_files_other_users_can_read_unless_the_umask_says_no(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(100)))
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "m",
                        "baseline": {"path": "m.parquet"},
                        "features": [{"name": "x"}, {"name": "y"}],
                    }
                ]
            }
        )
    )
    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        out = tmp_path / f"m-{umask:o}.parquet"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sidecar.cli",
                "baseline",
                "build",
                "--from",
                str(data),
                "--config",
                str(config),
                "--model",
                "m",
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
            preexec_fn=lambda u=umask: os.umask(u),
        )
        assert stat.S_IMODE(out.stat().st_mode) == mode, (oct(umask), oct(out.stat().st_mode))


def test_the_daemons_own_state_files_are_private(daemon_factory):
    d = daemon_factory({"models": [capture_model("m", 5)]})
    d.send([events("m", 8)])
    wait_for(lambda: d.get("/readyz")[0] == 200, 20, "capture")
    assert d.stop() == 0
    root = state_dir(d)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"m.parquet", "m.json"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for p in (root / "windows", root / "baselines"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o750, p


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(daemon_factory, tmp_path):
    base = make_baseline(tmp_path / "base.parquet")
    d = daemon_factory({"models": [file_model("m", base)]})
    d.send([events("m", 6)])
    d.wait_metric("drift_sidecar_events_accepted_total", 6, model_name="m")
    cfg = yaml.safe_load(d.config_path.read_text())
    second_sock = tmp_path / "second" / "events.sock"
    cfg["socket"]["path"] = str(second_sock)
    cfg["http"]["port"] = free_port()
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(cfg))
    result = run_to_exit(second)
    assert result.returncode == 2, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("drift-sidecar: error:")]
    assert "state_dir" in line and f"pid {d.proc.pid}" in line
    assert "Traceback" not in result.stderr
    assert not second_sock.exists()  # its own socket: removed on the way out
    assert d.stop() == 0
    d2 = daemon_factory(config_path=d.config_path)
    assert window(d2, "m") == 6
