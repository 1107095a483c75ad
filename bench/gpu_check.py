"""Check drift-sidecar's GPU series against nvidia-smi on a machine with an NVIDIA GPU.

Installs the package if needed, starts `drift-sidecar run` with `gpu.enabled: true`, runs a
torch matmul load on cuda:0, scrapes /metrics while it runs, and compares with nvidia-smi.
Prints PASS/FAIL per check; exit 0 when all pass, 1 when one fails, 2 when the check could
not run (no nvidia-smi, install failed, daemon did not start; with --embedding-only: no
torch, or torch sees no CUDA GPU).

    python bench/gpu_check.py                   # current interpreter, installs .[torch] if needed
    python bench/gpu_check.py --venv .gpu-venv  # a fresh venv (add --system-site-packages
                                                # to reuse an image's CUDA torch)
    python bench/gpu_check.py --embedding-only  # only time the embedding drift test on cuda
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
SMI_QUERY = "index,uuid,name,utilization.gpu,memory.used,memory.total"
MODEL = "gpucheck"

WORKLOAD = r"""
import json, sys, time
import torch
seconds = float(sys.argv[1])
dev = torch.device("cuda:0")
props = torch.cuda.get_device_properties(0)
uuid = getattr(props, "uuid", None)
a = torch.randn(4096, 4096, device=dev)
b = torch.randn(4096, 4096, device=dev)
hold = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device=dev)  # 1 GiB held
torch.cuda.synchronize()
print(json.dumps({"uuid": f"GPU-{uuid}" if uuid is not None else None,
                  "allocated": torch.cuda.memory_allocated()}), flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(16):
        c = a @ b
    torch.cuda.synchronize()
print("done", flush=True)
"""


class SetupError(Exception):
    """The check could not be run at all (exit 2)."""


@dataclass(frozen=True)
class SmiGpu:
    """One row of nvidia-smi's CSV, memory in bytes."""

    index: int
    uuid: str
    name: str
    utilization: float
    memory_used: float
    memory_total: float


@dataclass(frozen=True)
class Check:
    """One verdict line."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", default=sys.executable, help="interpreter to use (default: this)")
    p.add_argument("--venv", type=Path, help="create this venv and use it instead of --python")
    p.add_argument(
        "--system-site-packages",
        action="store_true",
        help="let --venv see the system's packages (reuse a preinstalled CUDA torch)",
    )
    p.add_argument("--no-install", action="store_true", help="never run pip")
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument("--load-seconds", type=float, default=8.0, help="matmul load duration")
    p.add_argument("--startup-timeout", type=float, default=60.0, help="seconds for the daemon")
    p.add_argument("--mem-tolerance-mib", type=float, default=300.0)
    p.add_argument("--mem-tolerance-pct", type=float, default=3.0)
    p.add_argument("--scrapes", type=int, default=10, help="timed scrapes for the latency line")
    p.add_argument(
        "--embedding-only",
        action="store_true",
        help="only time the embedding drift test on cuda (no daemon, no NVML)",
    )
    p.add_argument("--embedding-goal-ms", type=float, default=50.0)
    return p.parse_args(argv)


EMBEDDING_SIZES = {"window": 10_000, "reference": 50_000, "dim": 768}
"""The issue's goal is for exactly these sizes; a smaller run is not the figure."""


def embedding_check(python: Path, goal_ms: float) -> bool | None:
    """The embedding test (10,000 x 768 window vs 50,000 x 768 reference) on cuda:0: the
    median check time over repeated checks, with its min and max, against the goal, and
    the device memory it peaked at. None when it cannot run here (no torch, no CUDA)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "embedding.json"
        proc = _run(
            [
                str(python),
                str(ROOT / "bench" / "embedding_bench.py"),
                "--device",
                "cuda",
                "--speed-only",
                "--json",
                str(out),
            ],
            cwd=str(ROOT),
        )
        if proc.returncode == 2:
            why = proc.stderr.strip().splitlines()[-1:] or ["no CUDA device"]
            print(f"FAIL  embedding check on cuda could not run: {why[0]}")
            return None
        if proc.returncode != 0 or not out.exists():
            print(f"FAIL  embedding check on cuda did not run: {proc.stderr.strip()[-300:]}")
            return False
        rows = json.loads(out.read_text())["speed"]
    for row in rows:
        sizes = {k: row.get(k) for k in EMBEDDING_SIZES}
        if sizes != EMBEDDING_SIZES:
            print(f"FAIL  embedding check ran at {sizes}, not {EMBEDDING_SIZES}")
            return False
        ms = row["check_ms"]
        ok = ms["median"] <= goal_ms
        print(
            f"{'PASS' if ok else 'FAIL'}  embedding check on {row['device']}, "
            f"{row['window']:,} x {row['dim']} vs {row['reference']:,} ({row['features']} "
            f"features): median {ms['median']:.1f} ms (min {ms['min']:.1f}, max "
            f"{ms['max']:.1f}, {ms['n']} checks), goal {goal_ms:.0f} ms; reference prep "
            f"{row['reference_prep_s']:.2f} s; peak {row.get('cuda_peak_bytes', 0) / MIB:.0f} MiB"
        )
        return ok
    print("FAIL  embedding check: no timing came back")
    return False


def parse_smi_csv(text: str) -> list[SmiGpu]:
    """Rows of `nvidia-smi --query-gpu=SMI_QUERY --format=csv,noheader,nounits`."""
    rows = []
    for line in text.strip().splitlines():
        index, uuid, name, util, used, total = (c.strip() for c in line.split(","))
        rows.append(
            SmiGpu(
                int(index),
                uuid,
                name,
                _num(util),
                _num(used) * MIB,
                _num(total) * MIB,
            )
        )
    return rows


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return float("nan")


def parse_metrics(text: str) -> Samples:
    """Sample name to [(labels, value)] from a Prometheus text exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def gpu_value(samples: Samples, name: str, uuid: str) -> float | None:
    for labels, value in samples.get(name, []):
        if labels.get("UUID") == uuid:
            return value
    return None


def within(a: float, b: float, tol_bytes: float, tol_pct: float) -> bool:
    return abs(a - b) <= max(tol_bytes, abs(b) * tol_pct / 100.0)


def compare(
    smi: list[SmiGpu],
    samples: Samples,
    *,
    busy_uuid: str | None,
    max_util: dict[str, float],
    tol_mib: float = 300.0,
    tol_pct: float = 3.0,
) -> list[Check]:
    """Checks of one scrape against nvidia-smi rows taken at the same moment."""
    checks = []
    avail = samples.get("drift_sidecar_gpu_available", [({}, 0.0)])[0][1]
    checks.append(Check("drift_sidecar_gpu_available", avail == 1.0, f"{avail:g}"))
    for row in smi:
        tag = f"gpu {row.index} ({row.uuid})"
        name = next(
            (
                lab["modelName"]
                for lab, _ in samples.get("ml_gpu_utilization_percent", [])
                if lab.get("UUID") == row.uuid
            ),
            None,
        )
        checks.append(Check(f"{tag} series present", name is not None, f"modelName={name!r}"))
        if name is None:
            continue
        checks.append(Check(f"{tag} modelName", name == row.name, f"{name!r} vs {row.name!r}"))
        for metric, smi_value in (
            ("ml_gpu_memory_total_bytes", row.memory_total),
            ("ml_gpu_memory_used_bytes", row.memory_used),
        ):
            got = gpu_value(samples, metric, row.uuid)
            ok = got is not None and within(got, smi_value, tol_mib * MIB, tol_pct)
            detail = (
                f"sidecar {got / MIB if got is not None else float('nan'):.0f} MiB, "
                f"nvidia-smi {smi_value / MIB:.0f} MiB"
            )
            checks.append(Check(f"{tag} {metric}", ok, detail))
    if busy_uuid is not None or max_util:
        target = busy_uuid if busy_uuid is not None else max(max_util, key=lambda u: max_util[u])
        peak = max_util.get(target, 0.0)
        checks.append(Check(f"utilization > 0 under load ({target})", peak > 0, f"peak {peak:g} %"))
    return checks


# -- running it -------------------------------------------------------------------------


def _run(cmd: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, check=False, cwd=cwd)


def query_smi() -> list[SmiGpu]:
    res = _run(["nvidia-smi", f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"])
    if res.returncode != 0:
        raise SetupError(f"nvidia-smi failed: {res.stderr.strip() or res.stdout.strip()}")
    return parse_smi_csv(res.stdout)


def prepare_python(args: argparse.Namespace) -> Path:
    python = Path(args.python)
    if args.venv is not None:
        venv_cmd = [sys.executable, "-m", "venv", str(args.venv)]
        if args.system_site_packages:
            venv_cmd.append("--system-site-packages")
        if not (args.venv / "bin" / "python").exists():
            print("+", " ".join(venv_cmd), flush=True)
            if _run(venv_cmd).returncode != 0:
                raise SetupError(f"could not create the venv {args.venv}")
        python = args.venv / "bin" / "python"
    has_torch = _run([str(python), "-c", "import torch"], cwd=tempfile.gettempdir())
    has_cli = (python.parent / "drift-sidecar").exists()
    if (has_torch.returncode != 0 or not has_cli) and not args.no_install:
        target = "." if has_torch.returncode == 0 else ".[torch]"
        cmd = [str(python), "-m", "pip", "install", "--quiet", target]
        print("+", " ".join(cmd), flush=True)
        res = subprocess.run(cmd, cwd=ROOT, check=False)
        if res.returncode != 0:
            raise SetupError(f"pip install {target} failed (exit {res.returncode})")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, port: int) -> Path:
    # JSON is YAML: no YAML writer needed in whichever interpreter runs this script.
    cfg = {
        "socket": {"path": str(tmp / "events.sock")},
        "http": {"host": "127.0.0.1", "port": port},
        "state_dir": str(tmp / "state"),
        "models": [
            {
                "name": MODEL,
                "baseline": {"capture": 1000},
                "features": [{"name": "x", "type": "numeric"}],
                "prediction": {"type": "numeric"},
            }
        ],
        "gpu": {"enabled": True, "interval_s": 1},
    }
    path = tmp / "sidecar.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def wait_ready(port: int, daemon: subprocess.Popen[str], timeout: float) -> Samples:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SetupError(f"drift-sidecar exited with {daemon.returncode} before it was ready")
        try:
            samples = parse_metrics(scrape(port))
        except OSError as exc:
            last = str(exc)
        else:
            if samples.get("ml_gpu_utilization_percent"):
                return samples
            last = "no ml_gpu_utilization_percent yet"
        time.sleep(0.2)  # polling an external process for readiness, with a deadline
    raise SetupError(f"drift-sidecar not ready after {timeout:g}s: {last}")


def send_stats(sock_path: Path, nbytes: int) -> None:
    event = {"kind": "stats", "model": MODEL, "model_memory_bytes": nbytes}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(json.dumps(event).encode() + b"\n")


def print_gpu_series(samples: Samples) -> None:
    for name in sorted(samples):
        if name.startswith(("ml_gpu_", "ml_model_memory", "drift_sidecar_gpu_")):
            for labels, value in samples[name]:
                lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                print(f"  {name}{{{lab}}} {value:g}")


def run_check(args: argparse.Namespace) -> int:
    if shutil.which("nvidia-smi") is None:
        raise SetupError("nvidia-smi not found on PATH: this check needs an NVIDIA GPU")
    smi_idle = query_smi()
    print(f"nvidia-smi sees {len(smi_idle)} GPU(s): " + ", ".join(g.name for g in smi_idle))
    python = prepare_python(args)
    exe = python.parent / "drift-sidecar"
    if not exe.exists():
        raise SetupError(f"{exe} not found; install the package (drop --no-install)")
    port = args.port or free_port()
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        cfg = write_config(tmp, port)
        log = (tmp / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [str(exe), "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        load: subprocess.Popen[str] | None = None
        try:
            wait_ready(port, daemon, args.startup_timeout)
            load = subprocess.Popen(
                [str(python), "-c", WORKLOAD, str(args.load_seconds)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert load.stdout is not None
            first = load.stdout.readline()
            if not first:
                raise SetupError(f"the torch workload failed (exit {load.wait()})")
            info = json.loads(first)
            busy_uuid = info.get("uuid")
            print(f"load running on {busy_uuid or 'cuda:0'}, {info['allocated'] / MIB:.0f} MiB")
            max_util: dict[str, float] = {}
            samples: Samples = {}
            smi: list[SmiGpu] = []
            time.sleep(min(2.0, args.load_seconds / 3))  # let the 1 s poller see the load
            while load.poll() is None:
                samples = parse_metrics(scrape(port))
                smi = query_smi()
                for labels, value in samples.get("ml_gpu_utilization_percent", []):
                    uuid = labels.get("UUID", "")
                    max_util[uuid] = max(max_util.get(uuid, 0.0), value)
                time.sleep(0.5)
            checks += compare(
                smi,
                samples,
                busy_uuid=busy_uuid,
                max_util=max_util,
                tol_mib=args.mem_tolerance_mib,
                tol_pct=args.mem_tolerance_pct,
            )
            print("GPU series during the load:")
            print_gpu_series(samples)

            send_stats(tmp / "events.sock", int(info["allocated"]))
            deadline = time.monotonic() + 5
            reported = None
            while time.monotonic() < deadline and reported is None:
                for labels, value in parse_metrics(scrape(port)).get("ml_model_memory_bytes", []):
                    if labels.get("model_name") == MODEL:
                        reported = value
                time.sleep(0.2)
            if reported is None:
                print("INFO  ml_model_memory_bytes: absent after a stats event (not wired yet?)")
            else:
                checks.append(
                    Check(
                        "ml_model_memory_bytes from a stats event",
                        reported == info["allocated"],
                        f"{reported:g}",
                    )
                )

            times = []
            for _ in range(args.scrapes):
                t0 = time.perf_counter()
                scrape(port)
                times.append((time.perf_counter() - t0) * 1000)
            print(
                f"/metrics scrape: median {statistics.median(times):.2f} ms "
                f"(min {min(times):.2f} - max {max(times):.2f}) over {len(times)} scrapes"
            )
        finally:
            if load is not None and load.poll() is None:
                load.kill()
                load.wait()
            daemon.send_signal(signal.SIGTERM)
            try:
                code = daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                code = daemon.wait()
            log.close()
            checks.append(Check("daemon exits 0 on SIGTERM", code == 0, f"exit {code}"))
            if code != 0 or not all(c.ok for c in checks):
                print("daemon log (tail):")
                print("\n".join((tmp / "daemon.log").read_text().splitlines()[-30:]))
    for c in checks:
        print(c.line())
    emb_ok = embedding_check(python, args.embedding_goal_ms)
    checks.append(Check("embedding drift check on cuda within the goal", emb_ok is True, ""))
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.embedding_only:
        ok = embedding_check(Path(args.python), args.embedding_goal_ms)
        return 2 if ok is None else 0 if ok else 1
    try:
        return run_check(args)
    except SetupError as exc:
        print(f"ERROR  {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
