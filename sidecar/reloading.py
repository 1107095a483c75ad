"""Config reload: which trackers a new config keeps, and what only a restart can change."""

from __future__ import annotations

import os
from collections.abc import Callable

from sidecar.capture import CaptureData
from sidecar.config import Config, DriftSettings, ModelSpec
from sidecar.errors import ConfigError
from sidecar.stats.reference import Baseline
from sidecar.tracker import ModelTracker


def rebuild_trackers(
    old_trackers: dict[str, ModelTracker],
    new: Config,
    baselines: dict[str, Baseline],
    on_capture: Callable[[ModelTracker, CaptureData], None],
) -> tuple[dict[str, ModelTracker], list[str], list[str]]:
    """The trackers for `new`, each kept from `old_trackers` or rebuilt (`Daemon._apply`
    says which); returns them with the models rebuilt and those only retuned."""
    trackers: dict[str, ModelTracker] = {}
    rebuilt: list[str] = []
    retuned: list[str] = []
    for spec in new.models:
        old = old_trackers.get(spec.name)
        drift = new.drift_for(spec)
        baseline = baselines.get(spec.name)
        if (
            old is not None
            and not old.auto_registered
            and same_structure(old, spec, drift)
            and (baseline is None or old.baseline is None or baseline.sha256 == old.baseline.sha256)
        ):
            if old.spec != spec or old.drift != drift:
                old.spec, old.drift = spec, drift
                old.window.max_age_s = drift.max_age_s
                if old.embedding_window is not None:
                    old.embedding_window.max_age_s = drift.max_age_s
                retuned.append(spec.name)
            trackers[spec.name] = old
            continue
        t = ModelTracker(
            spec,
            drift,
            on_capture=on_capture,
            max_label_bytes=new.limits.max_label_bytes,
            max_stages=new.limits.max_stages,
        )
        if baseline is not None:
            t.install_baseline(baseline)
        trackers[spec.name] = t
        rebuilt.append(spec.name)
    for name, t in old_trackers.items():
        if t.auto_registered and name not in trackers and new.auto_register.enabled:
            trackers[name] = t
    return trackers, rebuilt, retuned


def same_structure(t: ModelTracker, spec: ModelSpec, drift: DriftSettings) -> bool:
    """Whether a tracker built for `spec` and `drift` would have the same shape as `t`."""
    old, was = t.spec, t.drift
    return (
        old.features == spec.features
        and old.prediction == spec.prediction
        and old.max_classes == spec.max_classes
        and old.baseline == spec.baseline
        and old.embedding == spec.embedding
        and (was.window_size, was.psi_bins, was.max_categories)
        == (drift.window_size, drift.psi_bins, drift.max_categories)
    )


def file_identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a ConfigMap update swaps the link's target
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def check_immutable(old: Config, new: Config) -> None:
    """Listening addresses cannot change under a running process; say so instead."""
    problems = []
    if old.socket_path != new.socket_path:
        problems.append("socket.path: cannot change on reload; restart the sidecar")
    if (old.http.host, old.http.port) != (new.http.host, new.http.port):
        problems.append("http: host and port cannot change on reload; restart the sidecar")
    if old.state_path != new.state_path:
        problems.append("state_dir: cannot change on reload; restart the sidecar")
    if old.http.idle_timeout_s != new.http.idle_timeout_s:
        problems.append("http.idle_timeout_s: cannot change on reload; restart the sidecar")
    if problems:
        raise ConfigError(problems, new.source or "<config>")
