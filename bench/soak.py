"""A bounded soak: N connections send at a fixed total rate for a fixed time on loopback.

It starts a daemon on a temporary config (or uses a running one with --socket and
--metrics-url), then N sender processes each send their share of the rate as NDJSON batch
lines, paced by the clock. A sender never blocks: when the socket would block (the daemon
is pushing back), the batch is dropped and counted on the client side, as the client library
does. Every --sample-every seconds the daemon's /metrics and /proc/PID/status are read.

Reported: events sent, dropped by the senders, accepted, rejected and dropped by the daemon
(from /metrics), events unaccounted for (sent - accepted - rejected; 0 means none lost), the
rate achieved, and RSS over time with its change from the first loaded sample to the last.

    python bench/soak.py --connections 8 --rate 50000 --duration 180
    python bench/soak.py --quick
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    bench_args,
    kill_quietly,
    proc_memory_kib,
    report,
    sample_value,
    start_daemon,
    summary_row,
    table,
    wait_for,
)

MAX_DURATION_S = 3_600.0
MAX_CONNECTIONS = 256
N_NUMERIC = 8
MODEL = "soak"


def _line(rng: random.Random, batch: int, model: str) -> bytes:
    events = []
    for _ in range(batch):
        features: dict[str, Any] = {f"f{j}": rng.gauss(j, 1) for j in range(N_NUMERIC)}
        features["country"] = rng.choice(["de", "fr", "it", "es"])
        events.append(
            {
                "model": model,
                "features": features,
                "prediction": rng.random(),
                "latency_s": rng.random() / 20,
            }
        )
    return (json.dumps(events) + "\n").encode()


def sender(
    path: str, *, rate: float, duration: float, batch: int, model: str, seed: int, out: Any
) -> None:
    """One connection at `rate` events/s for `duration` s; puts (sent, dropped) on `out`."""
    rng = random.Random(seed)
    pool = [_line(rng, batch, model) for _ in range(16)]
    sent = dropped = 0
    pending = b""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.setblocking(False)
    t0 = time.monotonic()
    k = 0
    try:
        while True:
            due = t0 + k * batch / rate
            now = time.monotonic()
            if due - t0 >= duration:
                break
            if due > now:
                time.sleep(due - now)  # pacing the sender, not waiting for a result
            line = pool[k % len(pool)]
            k += 1
            if pending:  # finish a partly written line first: framing must stay intact
                with contextlib.suppress(BlockingIOError):
                    pending = pending[s.send(pending) :]
            if pending:
                dropped += batch
                continue
            try:
                n = s.send(line)
            except BlockingIOError:
                dropped += batch
                continue
            sent += batch
            pending = line[n:]
        s.setblocking(True)
        if pending:
            s.sendall(pending)
    finally:
        s.close()
        out.put((sent, dropped))


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def counters(text: str, model: str) -> dict[str, float]:
    def total(name: str) -> float:
        return sum(
            float(ln.rsplit(" ", 1)[1])
            for ln in text.splitlines()
            if ln.startswith(name + "{") or ln.startswith(name + " ")
        )

    return {
        "accepted": sample_value(
            text, "drift_sidecar_events_accepted_total", f'model_name="{model}"'
        )
        or 0.0,
        "rejected": total("drift_sidecar_events_rejected_total"),
        "dropped": total("drift_sidecar_events_dropped_total"),
        "queue_bytes": sample_value(text, "drift_sidecar_queue_bytes") or 0.0,
    }


def start(tmp: Path, args: Any) -> Any:
    features = [{"name": f"f{j}", "type": "numeric"} for j in range(N_NUMERIC)]
    features.append({"name": "country", "type": "categorical"})
    extra = {
        "models": [
            {
                "name": MODEL,
                "baseline": {"capture": 5_000},
                "features": features,
                "prediction": {"type": "numeric"},
            }
        ],
        "drift": {
            "interval_s": 5.0 if not args.quick else 0.5,
            "window_size": 10_000,
            "min_samples": 500,
        },
        "state": {"snapshot_interval_s": 30.0 if not args.quick else 0.5},
        "log": {"level": "warning"},
    }
    return start_daemon(tmp, extra)


def main(argv: list[str] | None = None) -> int:
    def extra(p: Any) -> None:
        p.add_argument("--connections", type=int, default=4)
        p.add_argument("--rate", type=float, default=20_000, help="total events/s")
        p.add_argument("--duration", type=float, default=60.0, help="seconds of sending")
        p.add_argument("--batch", type=int, default=100, help="events per line")
        p.add_argument("--sample-every", type=float, default=5.0, help="seconds")
        p.add_argument("--socket", help="use a running daemon's socket instead of starting one")
        p.add_argument("--metrics-url", help="its /metrics URL (with --socket)")
        p.add_argument("--pid", type=int, help="its PID, for RSS (with --socket)")
        p.add_argument("--model", default=MODEL, help="model name the running daemon knows")

    args = bench_args("Bounded soak of the daemon over its Unix socket", argv, extra)
    if args.quick:
        args.connections, args.rate, args.duration = 2, 2_000.0, 2.0
        args.sample_every, args.batch = 0.5, 50
    args.duration = min(args.duration, MAX_DURATION_S)
    args.connections = max(1, min(args.connections, MAX_CONNECTIONS))

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    daemon = None
    if args.socket:
        if not args.metrics_url:
            sys.exit("--socket needs --metrics-url")
        path, url, pid, model = args.socket, args.metrics_url, args.pid, args.model
    else:
        daemon = start(tmp, args)
        path, url, pid, model = daemon.socket_path, daemon.url + "/metrics", daemon.proc.pid, MODEL

    samples: list[dict[str, float]] = []

    def sample(t: float) -> dict[str, float]:
        row = {"t": round(t, 1), **counters(scrape(url), model)}
        if pid is not None:
            row["rss_mib"] = proc_memory_kib(pid)["VmRSS"] / 1024
        samples.append(row)
        return row

    try:
        base = sample(0.0)
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        per = args.rate / args.connections
        procs = [
            ctx.Process(
                target=sender,
                args=(path,),
                kwargs={
                    "rate": per,
                    "duration": args.duration,
                    "batch": args.batch,
                    "model": model,
                    "seed": k,
                    "out": out,
                },
            )
            for k in range(args.connections)
        ]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        next_t = t0 + args.sample_every
        while any(p.is_alive() for p in procs):
            now = time.monotonic()
            if now >= next_t:
                sample(now - t0)
                next_t += args.sample_every
            for p in procs:
                p.join(timeout=max(0.0, min(0.2, next_t - time.monotonic())))
                if time.monotonic() >= next_t:
                    break
            if now - t0 > args.duration + 60:  # a sender that cannot finish: stop it
                for p in procs:
                    p.kill()
        results = [out.get(timeout=10) for _ in procs]
        sent = sum(r[0] for r in results)
        client_dropped = sum(r[1] for r in results)
        send_s = time.monotonic() - t0

        def settled() -> bool:
            c = counters(scrape(url), model)
            return c["accepted"] + c["rejected"] - base["accepted"] - base["rejected"] >= sent

        with contextlib.suppress(AssertionError):
            wait_for(settled, 30, "the daemon to take every sent event")
        end = sample(time.monotonic() - t0)
    finally:
        if daemon is not None:
            kill_quietly(daemon)

    accepted = end["accepted"] - base["accepted"]
    rejected = end["rejected"] - base["rejected"]
    lost = sent - accepted - rejected
    rss = [s["rss_mib"] for s in samples if "rss_mib" in s]
    loaded = [s["rss_mib"] for s in samples[1:] if "rss_mib" in s]
    rss_first, rss_end = (loaded[0], loaded[-1]) if loaded else (float("nan"),) * 2
    growth = (rss_end - rss_first) / rss_first * 100 if loaded else float("nan")

    print(
        table(
            ["t (s)", "accepted", "rejected", "dropped", "queue bytes", "RSS (MiB)"],
            [
                [
                    s["t"],
                    f"{s['accepted']:,.0f}",
                    f"{s['rejected']:,.0f}",
                    f"{s['dropped']:,.0f}",
                    f"{s['queue_bytes']:,.0f}",
                    f"{s.get('rss_mib', float('nan')):.1f}",
                ]
                for s in samples
            ],
        )
    )
    print()
    print(
        table(
            ["figure", "value"],
            [
                ["connections", args.connections],
                ["target rate (events/s)", f"{args.rate:,.0f}"],
                ["achieved accepted rate (events/s)", f"{accepted / send_s:,.0f}"],
                ["sending time (s)", f"{send_s:.1f}"],
                ["sent", f"{sent:,}"],
                ["dropped by senders (back-pressure)", f"{client_dropped:,}"],
                ["accepted", f"{accepted:,.0f}"],
                ["rejected", f"{rejected:,.0f}"],
                ["dropped by the daemon", f"{end['dropped'] - base['dropped']:,.0f}"],
                ["unaccounted for (lost)", f"{lost:,.0f}"],
                ["RSS idle at start (MiB)", f"{rss[0]:.1f}" if rss else "n/a"],
                ["RSS first loaded sample -> end (MiB)", f"{rss_first:.1f} -> {rss_end:.1f}"],
                ["RSS change under load (%)", f"{growth:+.1f}"],
                ["RSS max (MiB)", f"{max(rss):.1f}" if rss else "n/a"],
            ],
        )
    )
    report(
        "soak",
        args,
        [
            summary_row(
                "accepted rate",
                accepted / send_s,
                "events/s",
                f"target {args.rate:,.0f}, {args.connections} connections",
            ),
            summary_row("events lost", lost, "events"),
            summary_row(
                "RSS change under load", growth, "%", f"{rss_first:.1f} -> {rss_end:.1f} MiB"
            ),
        ],
        connections=args.connections,
        rate=args.rate,
        duration=args.duration,
        batch=args.batch,
        sent=sent,
        client_dropped=client_dropped,
        accepted=accepted,
        rejected=rejected,
        lost=lost,
        samples=samples,
    )
    with contextlib.suppress(OSError):
        for p in tmp.rglob("*"):
            if p.is_file():
                p.unlink()
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
