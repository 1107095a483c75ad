"""Start the real daemon as a subprocess on a temporary config, and talk to it for real.

The one place for the tests' shared plumbing: `free_port`, `wait_for` (poll a condition
with a deadline; the tests never sleep to wait), `run_cli` (every `drift-sidecar`
subprocess) and `start_daemon` (through the `daemon_factory` fixture of conftest.py).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GiveUp(Exception):
    """Raised by a predicate when waiting longer cannot help (the process died)."""


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 15.0,
    what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """Poll until predicate() is truthy and return its value; fail with `what` after
    `timeout` seconds. An exception from predicate() means "not yet" (the last one is in
    the failure message), except GiveUp, which ends the wait at once. In a coroutine,
    `await asyncio.to_thread(wait_for, ...)` keeps the event loop running meanwhile."""
    deadline = time.monotonic() + timeout
    last_error = "None"
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except GiveUp:
            raise
        except Exception as exc:  # not ready yet: connection refused, missing series...
            # Only its text: the exception, kept, would hold this frame through its
            # traceback, and an HTTP error's open response would then wait for the
            # cyclic GC (a ResourceWarning) instead of closing now.
            last_error = repr(exc)
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error}")


@dataclass
class Metrics:
    """A parsed scrape: `value(name, **labels)` gives one sample."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)
    text: str = ""

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {lab: v for (n, lab), v in self.samples.items() if n == name}


def parse_metrics(text: str) -> Metrics:
    m = Metrics(text=text)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            m.samples[(s.name, frozenset(s.labels.items()))] = s.value
    return m


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    config_path: Path
    socket_path: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def scrape(self) -> Metrics:
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse_metrics(body.decode())

    def json(self, path: str) -> Any:
        return json.loads(self.get(path)[1])

    def send(self, lines: Iterable[bytes | str | dict[str, Any] | list[Any]]) -> None:
        """One connection; each item becomes one line."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.socket_path)
            s.sendall(b"".join(_line(x) for x in lines))

    def wait_metric(
        self, name: str, expected: float, timeout: float = 15.0, **labels: str
    ) -> Metrics:
        return wait_for(
            lambda: (m := self.scrape()).value(name, **labels) == expected and m,
            timeout,
            f"{name}{labels} == {expected}",
        )

    def logs(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def _line(x: bytes | str | dict[str, Any] | list[Any]) -> bytes:
    if isinstance(x, bytes):
        return x if x.endswith(b"\n") else x + b"\n"
    if isinstance(x, str):
        return (x if x.endswith("\n") else x + "\n").encode()
    return (json.dumps(x) + "\n").encode()


_SOCKET_BASES: list[str] = []


@atexit.register
def _remove_socket_bases() -> None:
    for base in _SOCKET_BASES:
        shutil.rmtree(base, ignore_errors=True)


def socket_dir() -> Path:
    """A folder path for a socket that exists nowhere yet, and is unique for this run.

    Sockets live under the temp folder rather than `tmp_path`, whose paths can pass the
    108-byte limit of a socket address. The folder itself is not created, so tests can
    create it (or put something else there) themselves; its parent is made here, private
    to this run, and removed when the run ends.
    """
    base = tempfile.mkdtemp(prefix="ds-")
    _SOCKET_BASES.append(base)
    return Path(base) / "s"


def write_config(tmp: Path, extra: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """A config on a fresh socket and port, merged with `extra` (top-level keys)."""
    sock_dir = socket_dir()
    cfg: dict[str, Any] = {
        "socket": {"path": str(sock_dir / "events.sock")},
        "http": {"host": "127.0.0.1", "port": free_port()},
        "state_dir": str(tmp / "state"),
        "gpu": {"enabled": False},
    }
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    path = tmp / "sidecar.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def run_cli(
    args: Sequence[str],
    log_path: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start `drift-sidecar ARGS` with stdout and stderr in `log_path`; `env` is added to
    this process's environment; `launcher` replaces `python -m sidecar.cli` (a command
    that calls sidecar.cli.main on the arguments after its own)."""
    command = [*(launcher or (sys.executable, "-m", "sidecar.cli")), *args]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
        )


def start_daemon(
    tmp: Path,
    extra: dict[str, Any] | None = None,
    config_path: Path | None = None,
    wait_ready: bool = False,
    *,
    wait_up: bool = True,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] = (),
    socket_path: str | None = None,
) -> DaemonProcess:
    """`drift-sidecar run` on a config written by write_config (or on `config_path`),
    started in `tmp` (or `cwd`). Returns once /healthz answers and the socket exists, then
    also /readyz if `wait_ready`; at once if not `wait_up` (for a daemon that must refuse
    to start). `socket_path` is where the socket is expected when the config does not say."""
    if config_path is None:
        config_path, cfg = write_config(tmp, extra)
    else:
        cfg = yaml.safe_load(config_path.read_text())
    log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
    proc = run_cli(["run", "--config", str(config_path)], log_path, cwd or tmp, env, launcher)
    d = DaemonProcess(
        proc, config_path, socket_path or cfg["socket"]["path"], cfg["http"]["port"], log_path
    )
    if not wait_up:
        return d

    def up() -> bool:
        if proc.poll() is not None:
            raise GiveUp(f"daemon exited {proc.returncode}:\n{log_path.read_text()}")
        return d.get("/healthz")[0] == 200 and os.path.exists(d.socket_path)

    try:
        wait_for(up, 20, f"daemon /healthz and its socket {d.socket_path}")
        if wait_ready:
            wait_for(lambda: d.get("/readyz")[0] == 200, 20, "daemon /readyz")
    except BaseException:
        d.stop(signal.SIGKILL)
        raise
    return d


def kill_quietly(d: DaemonProcess) -> None:
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait(timeout=10)


def run_to_exit(config_path: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`drift-sidecar run` on a config that must not start: its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "run", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config_path.parent,
        check=False,
    )


def umask_launcher(umask: int) -> tuple[str, ...]:
    """A `launcher` for start_daemon: the command line, with the process umask set first."""
    code = (
        f"import os, sys; os.umask({umask}); "
        "from sidecar.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return (sys.executable, "-c", code)
