"""The socket path: the daemon never removes what it did not create.

Every case runs the real daemon. The class: whatever sits at `socket.path` when the daemon
starts (its own live socket, another program's live socket, a stale socket, a regular file,
a folder, a symlink to either) and whatever happens to the path while it runs (removed,
replaced). A refused start exits 2 with one line and no traceback, and leaves the path as
it found it; a live daemon never loses its socket to a second one.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import (
    DaemonProcess,
    free_port,
    run_to_exit,
    umask_launcher,
    wait_for,
    write_config,
)


def ident(path: str | Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return (st.st_dev, st.st_ino, st.st_mode)


def second_config(d: DaemonProcess, tmp: Path, **changes: Any) -> Path:
    """The first daemon's config on another port and state_dir (the socket is the clash)."""
    cfg = yaml.safe_load(d.config_path.read_text())
    cfg["http"]["port"] = free_port()
    cfg["state_dir"] = str(tmp / "state-2")
    cfg.update(changes)
    path = tmp / "second.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def assert_refused(result: Any, *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("drift-sidecar: error:")]
    assert len(lines) == 1, result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert '"stopped"' not in result.stderr  # a start that failed is not a normal stop


def send_and_count(d: DaemonProcess, n: int, expect: int) -> None:
    d.send([{"model": "m", "features": {"x": float(i)}} for i in range(n)])
    d.wait_metric("drift_sidecar_events_accepted_total", expect, model_name="m")


MODEL = {"models": [{"name": "m", "baseline": {"capture": 1_000_000}, "features": [{"name": "x"}]}]}


def test_a_second_daemon_on_the_same_socket_refuses_and_the_first_keeps_it(
    daemon_factory, tmp_path
):
    d = daemon_factory(MODEL)
    before = ident(d.socket_path)
    send_and_count(d, 5, 5)

    result = run_to_exit(second_config(d, tmp_path))
    assert_refused(
        result, str(d.socket_path), "in use by another drift-sidecar", f"pid {d.proc.pid}"
    )
    # The first daemon's socket is the same file, and still receives.
    assert ident(d.socket_path) == before
    send_and_count(d, 5, 10)
    assert d.get("/healthz")[0] == 200
    assert d.stop() == 0
    assert not os.path.lexists(d.socket_path)  # its own socket, removed on the way out


def test_another_programs_live_socket_is_refused_and_left_working(tmp_path):
    config_path, cfg = write_config(tmp_path, MODEL)
    path = Path(cfg["socket"]["path"])
    path.parent.mkdir(parents=True)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen(1)
    try:
        before = ident(path)
        result = run_to_exit(config_path)
        assert_refused(result, str(path), "another process is listening")
        assert ident(path) == before
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(path))  # still the other program's, still listening
    finally:
        other.close()


def test_a_stale_socket_of_a_dead_process_is_replaced(daemon_factory, tmp_path):
    d = daemon_factory(MODEL)
    stale = ident(d.socket_path)
    d.stop(signal.SIGKILL)  # leaves its socket file behind
    assert ident(d.socket_path) == stale

    d2 = daemon_factory(config_path=d.config_path)
    assert '"socket_stale_replaced"' in d2.logs()
    send_and_count(d2, 3, 3)


def _regular(path: Path, tmp: Path) -> None:
    path.write_text("the user's notes\n")


def _folder(path: Path, tmp: Path) -> None:
    path.mkdir()
    (path / "keep.txt").write_text("keep")


def _symlink_to_file(path: Path, tmp: Path) -> None:
    (tmp / "target.txt").write_text("target")
    path.symlink_to(tmp / "target.txt")


def _symlink_to_socket(path: Path, tmp: Path) -> None:
    # A link to a stale socket: still not ours to remove or follow.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp / "elsewhere.sock"))
    s.close()
    path.symlink_to(tmp / "elsewhere.sock")


def _dangling_symlink(path: Path, tmp: Path) -> None:
    path.symlink_to(tmp / "does-not-exist")


@pytest.mark.parametrize(
    "make", [_regular, _folder, _symlink_to_file, _symlink_to_socket, _dangling_symlink]
)
def test_a_path_that_is_not_a_socket_is_refused_and_left_alone(tmp_path, make):
    config_path, cfg = write_config(tmp_path, MODEL)
    path = Path(cfg["socket"]["path"])
    path.parent.mkdir(parents=True)
    make(path, tmp_path)
    before = ident(path)
    link = os.readlink(path) if path.is_symlink() else None
    result = run_to_exit(config_path)
    assert_refused(result, str(path), "left untouched")
    assert ident(path) == before
    if link is not None:
        assert os.readlink(path) == link
    if stat.S_ISREG(before[2]):
        assert path.read_text() == "the user's notes\n"
    if stat.S_ISDIR(before[2]):
        assert (path / "keep.txt").read_text() == "keep"
    # ...and nothing was left behind either: the lock next to it is gone.
    assert not os.path.lexists(str(path) + ".lock")


def test_removed_or_replaced_socket_fails_healthz_and_is_not_deleted_at_stop(daemon_factory):
    d = daemon_factory(MODEL)
    path = Path(d.socket_path)
    path.unlink()
    status, body = d.get("/healthz")
    assert status == 503 and b"socket_lost" in body and b"was removed" in body

    path.write_text("someone else's file")  # a new file at the path: not the daemon's
    status, body = d.get("/healthz")
    assert status == 503 and b"replaced" in body
    assert d.stop() == 0
    assert path.read_text() == "someone else's file"
    assert any('"socket_lost"' in ln for ln in d.logs().splitlines())


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_socket_and_new_folders_get_their_modes_whatever_the_umask(daemon_factory, tmp_path, umask):
    sock_root = tmp_path / f"run-{umask:o}"
    path = sock_root / "a" / "b" / "events.sock"
    d = daemon_factory(
        {**MODEL, "socket": {"path": str(path), "mode": "0o660"}},
        launcher=umask_launcher(umask),
    )
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    for folder in (sock_root, sock_root / "a", sock_root / "a" / "b"):
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o750, folder
    assert d.stop() == 0


def test_existing_socket_folder_keeps_its_mode(daemon_factory, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    folder.chmod(0o1777)  # a sticky, world-writable folder, like /tmp
    d = daemon_factory(
        {**MODEL, "socket": {"path": str(folder / "events.sock")}},
        launcher=umask_launcher(0o022),
    )
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(folder / "events.sock").st_mode) == 0o660
    assert d.stop() == 0


def test_socket_folder_that_cannot_be_created_is_one_clear_line(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    config_path, _ = write_config(
        tmp_path, {**MODEL, "socket": {"path": str(blocker / "events.sock")}}
    )
    result = run_to_exit(config_path)
    assert_refused(result, "cannot create folder", str(blocker))
    assert blocker.read_text() == "a file where a folder should be"


def test_a_refused_start_leaves_the_first_daemons_state_alone(daemon_factory, tmp_path):
    """Same socket and same state_dir: the second one must not write a snapshot over the
    first one's (it never got as far as reading state)."""
    d = daemon_factory(MODEL)
    state = Path(yaml.safe_load(d.config_path.read_text())["state_dir"])
    listing = sorted(p.name for p in state.rglob("*"))
    result = run_to_exit(second_config(d, tmp_path, state_dir=str(state)))
    assert_refused(result, "in use by another drift-sidecar")
    assert sorted(p.name for p in state.rglob("*")) == listing
    wait_for(lambda: d.get("/healthz")[0] == 200, 5, "first daemon healthy")


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(daemon_factory, tmp_path):
    """socket.path, state_dir and baseline paths: one rule, the config file's folder."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    work = tmp_path / "elsewhere"
    work.mkdir()
    config = conf_dir / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "socket": {"path": "run/events.sock"},
                "state_dir": "state",
                "http": {"port": free_port()},
                "gpu": {"enabled": False},
                **MODEL,
            }
        )
    )
    d = daemon_factory(
        config_path=config, cwd=work, socket_path=str(conf_dir / "run" / "events.sock")
    )
    assert stat.S_ISSOCK(os.lstat(conf_dir / "run" / "events.sock").st_mode)
    send_and_count(d, 2, 2)
    assert d.stop() == 0
    assert (conf_dir / "state" / "windows").is_dir()
    assert not any(work.iterdir())  # nothing in the working directory
