"""`drift-sidecar status`: a running daemon's drift report as text, and one column's bins.

Reads `GET /v1/drift` with the standard library only. The output is plain text (no
colour, ASCII bars), so it reads the same in a terminal, a log or a CI job.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from typing import Any

from sidecar.errors import DaemonUnreachable, SidecarError

BAR_WIDTH = 30
"""Characters of the longest bar in the chart (the largest share of either side)."""
PREDICTION = "prediction"
"""`--feature prediction` shows the predictions' bins (no feature may take the name)."""


class StatusError(SidecarError):
    """The daemon answered, but not with what `status` asked for (no such model or feature)."""


def default_url(host: str, port: int) -> str:
    """The daemon's base URL for a bind address; a wildcard bind is reached on loopback."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def fetch_report(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The `GET /v1/drift` body of the daemon at base URL `url`."""
    if not url.startswith(("http://", "https://")):
        raise StatusError(f"--url {url!r}: expected http://HOST:PORT")
    # a pasted endpoint URL (…/metrics, …/v1/drift) means the daemon it belongs to
    base = url.rstrip("/").removesuffix("/v1/drift").removesuffix("/metrics")
    target = base + "/v1/drift"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as r:  # noqa: S310 - http(s) only
            body = r.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DaemonUnreachable(f"{target} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DaemonUnreachable(
            f"cannot reach the daemon at {url} ({reason}); is `drift-sidecar run` running, "
            "and does --url (or --config) match its http.host and http.port?"
        ) from exc
    try:
        report = json.loads(body)
    except ValueError as exc:
        raise DaemonUnreachable(f"{target} did not answer JSON ({exc})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("models"), dict):
        raise DaemonUnreachable(f"{target} did not answer a drift report (no `models`)")
    return report


# ------------------------------------------------------------------ the table


def _num(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def _verdict(entry: dict[str, Any]) -> str:
    if not entry.get("sufficient"):
        return "insufficient"
    if entry.get("drifted"):
        return "DRIFT (" + ", ".join(entry.get("detected_by") or ["pvalue"]) + ")"
    return "ok"


def _row(name: str, e: dict[str, Any]) -> list[str]:
    numeric = e.get("kind") == "numeric"
    stat = e.get("ks_statistic") if numeric else e.get("chi2_statistic")
    return [
        name,
        str(e.get("kind", "-")),
        str(e.get("samples", "-")),
        _num(e.get("psi"), ".4f"),
        _num(e.get("psi_expected"), ".4f"),
        ("KS " if numeric else "chi2 ") + _num(stat, ".4g"),
        _num(e.get("test_pvalue"), ".3g"),
        _num(e.get("alarm_p_adjusted"), ".3g"),
        _verdict(e),
    ]


_HEADER = [
    "column",
    "kind",
    "n",
    "PSI",
    "PSI no-drift",
    "statistic",
    "p-value",
    "alarm p",
    "verdict",
]


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def render_report(report: dict[str, Any], url: str, now: float | None = None) -> str:
    """Every model: its state, then one row per feature, the predictions and embeddings."""
    now = time.time() if now is None else now
    models: dict[str, Any] = report["models"]
    out = [f"drift-sidecar at {url}: {len(models)} model(s)"]
    for name in sorted(models):
        m = models[name]
        status = m.get("status", "-")
        window = m.get("window_samples", "-")
        if status == "capturing_baseline":
            out += [
                "",
                f"model {name}: capturing its baseline ({m.get('captured')} of "
                f"{m.get('target')} events)",
            ]
            continue
        if status == "pending":
            out += ["", f"model {name}: no drift check yet (window: {window} events)"]
            continue
        ago = now - float(m.get("checked_at", now))
        drifted = m.get("drifted_features") or []
        pred = m.get("prediction") or {}
        emb = m.get("embedding") or {}
        what = [*drifted, *(["prediction"] if pred.get("drifted") else [])]
        what += ["embedding"] if emb.get("drifted") else []
        if what:
            verdict = "DRIFT: " + ", ".join(what)
        elif status == "insufficient_data":
            verdict = f"too few samples ({m.get('samples')} of {m.get('min_samples')} needed)"
        else:
            verdict = "no drift"
        out += ["", f"model {name}: {verdict}   [window {window} events, checked {ago:.0f}s ago]"]
        rows = [_HEADER]
        for fname, f in (m.get("features") or {}).items():
            rows.append(_row(fname, f))
        if pred:
            rows.append(_row(PREDICTION, pred))
        if emb:
            rows.append(
                [
                    "embedding",
                    f"dim {emb.get('dim')}",
                    str(emb.get("samples", "-")),
                    "-",
                    "-",
                    "MMD " + _num(emb.get("statistic"), ".4g"),
                    _num(emb.get("pvalue"), ".3g"),
                    _num(emb.get("alarm_p_adjusted"), ".3g"),
                    _verdict(emb),
                ]
            )
        out += _grid(rows)
    return "\n".join(out)


# ------------------------------------------------------------------ one column's bins


def find_column(
    report: dict[str, Any], feature: str, model: str | None
) -> tuple[str, dict[str, Any]]:
    """The model and the /v1/drift entry of `feature` (or of the predictions)."""
    models: dict[str, Any] = report["models"]
    if model is not None:
        if model not in models:
            known = ", ".join(sorted(models)) or "none"
            raise StatusError(f"no model {model!r} (models: {known})")
        candidates = [model]
    else:
        candidates = sorted(models)

    def entry(m: dict[str, Any]) -> dict[str, Any] | None:
        got = (m.get("features") or {}).get(feature)
        if got is None and feature == PREDICTION:
            got = m.get("prediction")
        return got if isinstance(got, dict) else None

    found = [(name, e) for name in candidates if (e := entry(models[name])) is not None]
    if not found:
        where = f"model {model!r}" if model is not None else "any model"
        raise StatusError(
            f"no feature {feature!r} in {where} with a drift check yet"
            " (the features of a model appear after its first check)"
        )
    if len(found) > 1:
        names = ", ".join(n for n, _ in found)
        raise StatusError(f"feature {feature!r} is in several models ({names}): pass --model")
    return found[0]


def _bar(share: float | None, scale: float) -> str:
    if share is None:
        return ""
    return "#" * round(share / scale * BAR_WIDTH) if scale > 0 else ""


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:5.1f}%"


def _range(b: dict[str, Any]) -> str:
    lo = "-inf" if b.get("lower") is None else format(b["lower"], ".4g")
    hi = "+inf" if b.get("upper") is None else format(b["upper"], ".4g")
    return f"({lo}, {hi}]"


def render_bins(model: str, feature: str, entry: dict[str, Any]) -> str:
    """The column's reference and window shares side by side, one row per bin."""
    bins: list[dict[str, Any]] = entry.get("bins") or []
    head = (
        f"{model} / {feature}: {entry.get('kind')}, {len(bins)} bins; reference "
        f"n={entry.get('reference_samples')}, window n={entry.get('samples')}; "
        f"PSI {_num(entry.get('psi'), '.4f')}; {_verdict(entry)}"
    )
    if not bins:
        return head + "\n  (no bins: the daemon predates them, or the column has no baseline)"
    numeric = "lower" in bins[0]
    labels = [_range(b) if numeric else str(b["bin"]) for b in bins]
    shares = [b.get("reference_share") for b in bins] + [b.get("window_share") for b in bins]
    scale = max((s for s in shares if s is not None), default=0.0)
    moved = [
        abs(b["window_share"] - b["reference_share"]) if b.get("window_share") is not None else 0.0
        for b in bins
    ]
    most = max(range(len(bins)), key=moved.__getitem__) if any(moved) else -1
    lw = max(len("bin"), *(len(x) for x in labels))
    pad = " " * BAR_WIDTH
    out = [head, f"  {'bin':<{lw}}  {'reference':>7} {pad}  {'window':>7} {pad}  change"]
    for i, (b, label) in enumerate(zip(bins, labels, strict=True)):
        ref, win = b.get("reference_share"), b.get("window_share")
        change = "-" if win is None else f"{100 * (win - ref):+.1f} pts"
        mark = "  <- largest change" if i == most else ""
        out.append(
            f"  {label:<{lw}}  {_pct(ref):>7} {_bar(ref, scale):<{BAR_WIDTH}}  "
            f"{_pct(win):>7} {_bar(win, scale):<{BAR_WIDTH}}  {change}{mark}"
        )
    out.append(f"  (bars: share of the column's non-missing values; # = {scale / BAR_WIDTH:.1%})")
    return "\n".join(out)


def status_text(url: str, feature: str | None, model: str | None, timeout: float = 10.0) -> str:
    """What `drift-sidecar status` prints."""
    report = fetch_report(url, timeout)
    if feature is None:
        return render_report(report, url)
    name, entry = find_column(report, feature, model)
    return render_bins(name, feature, entry)
