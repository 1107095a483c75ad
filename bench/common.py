"""Shared helpers for the benchmarks: arguments, spreads, tables, machine facts, JSON.

Every benchmark accepts `--quick` (a tiny run that only proves the code still works) and
`--json FILE`, and writes one document of this shape:

    {"bench": name, "quick": bool, "machine": {...}, "command": str, "date": str,
     "summary": [{"case", "value", "lo", "hi", "unit", "note"}, ...], ...}

`summary` holds the headline figures that `scripts/bench` puts into its one table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# The daemon harness of the end-to-end tests, re-exported so benches start the daemon the
# same way the tests do.
from harness import (  # noqa: E402
    DaemonProcess,
    kill_quietly,
    parse_metrics,
    start_daemon,
    wait_for,
    write_config,
)

__all__ = [
    "ROOT",
    "DaemonProcess",
    "Spread",
    "bench_args",
    "kill_quietly",
    "machine",
    "now_s",
    "parse_metrics",
    "proc_memory_kib",
    "ratio",
    "report",
    "sample_value",
    "start_daemon",
    "summary_row",
    "table",
    "wait_for",
    "write_config",
]


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements, with their min and max."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, samples: Iterable[float]) -> Spread:
        xs = list(samples)
        if not xs:
            raise ValueError("no samples")
        return cls(statistics.median(xs), min(xs), max(xs), len(xs))

    def scaled(self, k: float) -> Spread:
        return Spread(self.median * k, self.lo * k, self.hi * k, self.n)

    def fmt(self, digits: int = 3) -> str:
        """`median (lo-hi)` with `digits` significant digits."""
        return f"{_g(self.median, digits)} ({_g(self.lo, digits)}-{_g(self.hi, digits)})"

    def to_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "n": self.n}


def _g(x: float, digits: int) -> str:
    if math.isnan(x):
        return "nan"
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def ratio(a: Spread, b: Spread) -> Spread:
    """a / b with a spread: min over max and max over min (the widest honest range)."""
    return Spread(a.median / b.median, a.lo / b.hi, a.hi / b.lo, min(a.n, b.n))


def bench_args(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The flags every benchmark takes; `extra` adds a bench's own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that only checks the benchmark works (seconds)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results here as JSON")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeated runs per case (default: 5, or 1 with --quick)",
    )
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    return args


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, CPU model, load, Python and library versions."""
    import msgspec
    import numpy

    cpu = ""
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else ""
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu or platform.processor(),
        "loadavg": load,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "msgspec": msgspec.__version__,
        "platform": platform.platform(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


def summary_row(case: str, value: Spread | float, unit: str, note: str = "") -> dict[str, Any]:
    """One headline figure for the combined table."""
    if isinstance(value, Spread):
        return {
            "case": case,
            "value": value.median,
            "lo": value.lo,
            "hi": value.hi,
            "n": value.n,
            "unit": unit,
            "note": note,
        }
    return {
        "case": case,
        "value": value,
        "lo": None,
        "hi": None,
        "n": 1,
        "unit": unit,
        "note": note,
    }


def report(
    bench: str, args: argparse.Namespace, summary: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """Build the JSON document, write it if `--json` was given, and return it."""
    doc: dict[str, Any] = {
        "bench": bench,
        "quick": bool(args.quick),
        "repeats": args.repeats,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "summary": summary,
        **extra,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return doc


def _json_default(x: Any) -> Any:
    if isinstance(x, Spread):
        return x.to_json()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain fixed-width table; the first column left-aligned, the rest right-aligned."""
    body = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in body:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), sep, *(line(r) for r in body)])


def proc_memory_kib(pid: int) -> dict[str, int]:
    """Memory of a process in KiB, from /proc/PID/status: VmRSS, VmHWM (peak RSS), and
    VmRSS's two main parts, RssAnon (the process's own memory) and RssFile (mapped files,
    mostly shared libraries: it moves with the page cache and is shared between processes)."""
    out: dict[str, int] = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = ln.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(rest.split()[0])
    return out


_SAMPLE_RE_CACHE: dict[str, re.Pattern[str]] = {}


def sample_value(text: str, name: str, labels: str = "") -> float | None:
    """One sample from an exposition by exact name and label text (`model_name="m"`), parsed
    with a regex: cheap enough to poll a busy daemon without a full parse."""
    key = f"{name}{{{labels}}}" if labels else name
    pat = _SAMPLE_RE_CACHE.get(key)
    if pat is None:
        pat = re.compile("^" + re.escape(key) + r" ([^ \n]+)", re.M)
        _SAMPLE_RE_CACHE[key] = pat
    m = pat.search(text)
    return float(m.group(1)) if m else None


def now_s() -> float:
    """A clock shared by every process on the machine (CLOCK_MONOTONIC)."""
    return time.monotonic()


# ------------------------------------------------------------ bare counting servers
# A benchmark's ceiling is often a bare server that reads what the daemon reads and only
# counts. It runs as `bench/X.py --serve MODE --socket PATH` in a subprocess; stdin gives
# the running total to wait for, and each time it is reached the server prints
# "COUNT TIME" (TIME on `now_s`'s clock).


def serve_counting(path: str, protocol: Callable[[Callable[[int], None]], Any]) -> None:
    """Serve Unix-socket connections with `protocol(add)` (an asyncio protocol factory;
    its connections call `add(n)` for n events counted) until stdin ends or SIGTERM."""
    import asyncio
    import contextlib
    import signal

    state = {"count": 0, "target": -1}

    def check() -> None:
        if 0 <= state["target"] <= state["count"]:
            print(state["count"], now_s(), flush=True)
            state["target"] = -1

    def add(n: int) -> None:
        state["count"] += n
        check()

    def on_stdin() -> None:
        line = sys.stdin.readline()
        if not line:
            stop.set()
            return
        state["target"] = int(line)
        check()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(lambda: protocol(add), path)
        loop.add_reader(sys.stdin.fileno(), on_stdin)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        server.close()

    stop = asyncio.Event()
    asyncio.run(main())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class CountingServer:
    """The client side of `serve_counting`: starts `script --serve mode --socket PATH`."""

    def __init__(self, script: str, mode: str, socket_path: str) -> None:
        import subprocess

        self.name = mode
        self.socket_path = socket_path
        self.proc = subprocess.Popen(
            [sys.executable, script, "--serve", mode, "--socket", socket_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        line = self._line(30)
        if line != "ready":
            raise RuntimeError(f"{mode} server did not start: {line!r}")
        self.expected = 0

    def _line(self, timeout: float) -> str:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"{self.name} server: no answer within {timeout}s")
        return self.proc.stdout.readline().strip()

    def expect(self, events: int) -> None:
        """Ask to be told when `events` more have been counted (before sending them)."""
        assert self.proc.stdin is not None
        self.expected += events
        self.proc.stdin.write(f"{self.expected}\n")
        self.proc.stdin.flush()

    def counted_at(self) -> float:
        """When the expected total was counted (`now_s`'s clock)."""
        count, t1 = self._line(300).split()
        if int(count) != self.expected:
            raise RuntimeError(f"{self.name} counted {count}, expected {self.expected}")
        return float(t1)

    def close(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
