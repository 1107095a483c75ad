"""Prometheus helpers for the tests: binaries, a throwaway server, and every shipped query.

Used by the rule, dashboard and end-to-end tests. Under CI=true a missing binary fails
the test; elsewhere it skips with the reason, so a laptop without Prometheus can still
run the rest of the suite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import GiveUp, free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIGS = REPO / "configs" / "prometheus"
ALERTS_FILE = PROMETHEUS_CONFIGS / "alerts.yml"
RECORDING_FILE = PROMETHEUS_CONFIGS / "recording.yml"
RULE_FILES: tuple[Path, ...] = (ALERTS_FILE, RECORDING_FILE)
RULE_TESTS_DIR = PROMETHEUS_CONFIGS / "tests"
DASHBOARD_FILE = REPO / "configs" / "grafana" / "drift-sidecar.json"
METRICS_DOC = REPO / "docs" / "metrics.md"

Series = dict[str, Any]
"""One element of a Prometheus API `result`: {"metric": {...}, "value": [ts, "v"]}."""


class PrometheusError(Exception):
    """Prometheus refused a query or could not be started."""


class PrometheusExited(PrometheusError, GiveUp):
    """The server process is gone: waiting for it any longer cannot help."""


def in_ci() -> bool:
    """True when missing tools must fail the run instead of skipping."""
    return os.environ.get("CI", "").lower() == "true"


def find_binary(name: str) -> str:
    """Path of `name` on PATH; fails under CI=true, skips otherwise."""
    path = shutil.which(name)
    if path is None:
        reason = (
            f"{name} not found on PATH: install the Debian package 'prometheus' "
            "(apt-get install -y prometheus)"
        )
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


def promtool() -> str:
    """Path of promtool (see find_binary)."""
    return find_binary("promtool")


def prometheus_binary() -> str:
    """Path of the prometheus server (see find_binary)."""
    return find_binary("prometheus")


def run_promtool(
    *args: str | Path, timeout: float = 60.0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run promtool with `args` (and `stdin`, for check metrics); the caller asserts on
    returncode and output."""
    return subprocess.run(
        [promtool(), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_expressions(exprs: Sequence[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Parse PromQL offline: wrap each expression in a recording rule and run check rules."""
    rules = [{"record": f"query:check:{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}))
    return run_promtool("check", "rules", path)


# --- what the repository ships -------------------------------------------------------


def _rules(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule in configs/prometheus, by alert name."""
    return {r["alert"]: r for path in RULE_FILES for r in _rules(path) if "alert" in r}


def recording_rules() -> dict[str, dict[str, Any]]:
    """Every recording rule in configs/prometheus, by recorded name."""
    return {r["record"]: r for path in RULE_FILES for r in _rules(path) if "record" in r}


def rule_expressions() -> dict[str, str]:
    """Expression of every alert and recording rule, keyed by alert or record name."""
    exprs = {name: str(rule["expr"]).strip() for name, rule in alert_rules().items()}
    exprs.update({name: str(rule["expr"]).strip() for name, rule in recording_rules().items()})
    return exprs


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard, parsed."""
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, rows' nested panels included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


GRAFANA_VARIABLE = re.compile(r"\$\{?[A-Za-z_]")
"""A Grafana variable (`$name`, `${name}`); `$1` is label_replace's regex group, kept."""


def substitute_variables(
    expr: str,
    model_name: str = ".*",
    rate_interval: str = "1m",
    job: str = "drift-sidecar",
    feature_name: str = ".*",
) -> str:
    """Replace Grafana's variables with concrete values so Prometheus can run the query."""
    replacements = {
        "$__rate_interval": rate_interval,
        "${__rate_interval}": rate_interval,
        "$__interval": rate_interval,
        "${__interval}": rate_interval,
        "$__range": "1h",
        "${model_name}": model_name,
        "$model_name": model_name,
        "${feature_name}": feature_name,
        "$feature_name": feature_name,
        "${job}": job,
        "$job": job,
    }
    for variable in sorted(replacements, key=len, reverse=True):
        expr = expr.replace(variable, replacements[variable])
    if GRAFANA_VARIABLE.search(expr):
        raise ValueError(f"unsubstituted Grafana variable in dashboard query: {expr}")
    return expr


def dashboard_raw_queries() -> list[str]:
    """Every target expr of the dashboard as written, Grafana variables included."""
    return [
        str(target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def dashboard_queries(
    model_name: str = ".*", rate_interval: str = "1m", feature_name: str = ".*"
) -> list[str]:
    """Every dashboard query, ready to send to Prometheus (see substitute_variables)."""
    return [
        substitute_variables(
            expr, model_name=model_name, rate_interval=rate_interval, feature_name=feature_name
        )
        for expr in dashboard_raw_queries()
    ]


_TABLE_ROW = re.compile(r"^\|\s*(?P<names>`[^|]+)\|\s*(?P<type>[^|]+)\|")


def documented_metrics() -> dict[str, str]:
    """Metric names from docs/metrics.md mapped to their type (counter, gauge, ...)."""
    metrics: dict[str, str] = {}
    for line in METRICS_DOC.read_text().splitlines():
        match = _TABLE_ROW.match(line)
        if not match:
            continue
        kind = match["type"].strip().split()[0]
        for name in re.findall(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", match["names"]):
            metrics[name] = kind
    return metrics


_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
    }
)
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (a PromQL reader good enough for our queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _LABEL_LISTS.sub("", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def base_metric(name: str, known: dict[str, str]) -> str | None:
    """Documented metric a series name belongs to (histogram/summary suffixes folded)."""
    if name in known:
        return name
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            base = name.removesuffix(suffix)
            if known.get(base) in {"histogram", "summary"}:
                return base
    return None


# --- a throwaway Prometheus ------------------------------------------------------------


@dataclass
class PrometheusHandle:
    """A Prometheus server started by start_prometheus; stop() it (or use `with`)."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    _closed: bool = field(default=False, repr=False)

    def api(self, path: str, params: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
        """GET /api/v1/<path> and return its `data`; raises PrometheusError on an API error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"{self.url}/api/v1/{path}{query}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise PrometheusError(f"{url}: {exc.code} {body.get('error', '')}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """Evaluate an instant query; scalars come back as one series with no labels."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", params)
        if data["resultType"] in {"scalar", "string"}:
            return [{"metric": {}, "value": data["result"]}]
        result: list[Series] = data["result"]
        return result

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[Series]], bool] = bool,
        timeout: float = 30.0,
        poll_s: float = 0.2,
    ) -> list[Series]:
        """Poll `expr` until predicate(result) holds and return that result; the failure
        after `timeout` seconds shows the last result or query error."""

        def answer() -> tuple[list[Series]]:
            self._check_alive()
            result = self.query(expr)
            if not predicate(result):
                raise AssertionError(f"not yet: {result}")
            return (result,)  # truthy even when the awaited result is empty

        found: tuple[list[Series]] = wait_for(answer, timeout, repr(expr), interval=poll_s)
        return found[0]

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (the API's activeTargets)."""
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def wait_for_targets_up(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` targets have been scraped successfully."""
        self.wait_for('up{job="drift-sidecar"} == 1', lambda r: len(r) >= count, timeout=timeout)

    def log(self) -> str:
        """Prometheus's own log so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace")

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise PrometheusExited(
                f"prometheus exited with {self.process.returncode}:\n{self.log()[-4000:]}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server and wait for it to exit."""
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def __enter__(self) -> PrometheusHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(
    path: Path,
    scrape_targets: Iterable[str],
    rule_files: Iterable[Path],
    *,
    scrape_interval: str,
    evaluation_interval: str,
    job_name: str = "drift-sidecar",
) -> Path:
    """Write a prometheus.yml scraping `scrape_targets` ("host:port") as one job."""
    targets = list(scrape_targets)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
        "scrape_configs": [],
    }
    if targets:
        config["scrape_configs"].append(
            {"job_name": job_name, "static_configs": [{"targets": targets}]}
        )
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(
    tmp_path: Path,
    scrape_targets: Sequence[str] = (),
    rule_files: Sequence[Path] = (),
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    job_name: str = "drift-sidecar",
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> PrometheusHandle:
    """Start Prometheus on a free loopback port and return once /-/ready answers.

    Targets are scraped as job `job_name` (the rules and dashboard expect
    "drift-sidecar"). Raises PrometheusError with the server's log if it exits or
    is not ready within `timeout` seconds.
    """
    binary = prometheus_binary()
    workdir = tmp_path / f"prometheus-{time.monotonic_ns()}"
    workdir.mkdir(parents=True)
    config = write_config(
        workdir / "prometheus.yml",
        scrape_targets,
        rule_files,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
        job_name=job_name,
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    handle = PrometheusHandle(
        url=f"http://127.0.0.1:{port}", process=process, workdir=workdir, log_path=log_path
    )

    def ready() -> bool:
        handle._check_alive()
        with urllib.request.urlopen(f"{handle.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_for(ready, timeout, f"prometheus ready on {handle.url}", interval=0.1)
    except AssertionError as exc:
        handle.stop()
        raise PrometheusError(f"{exc}:\n{handle.log()[-4000:]}") from exc
    except BaseException:
        handle.stop()
        raise
    return handle
