"""YAML configuration to frozen, typed settings; every error names the key path it is about."""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import msgspec
import yaml

from sidecar.errors import ConfigError
from sidecar.paths import default_socket_path

FeatureType = Literal["numeric", "categorical"]
Correction = Literal["bonferroni", "bh", "none"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]*$")
RESERVED_FEATURE_NAMES = frozenset({"", "prediction", "confidence"})
"""Names a feature may not have: a baseline's own columns, and no name at all."""


class SocketSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where and how events arrive."""

    path: str | None = None
    """Unix stream socket; None means `$XDG_RUNTIME_DIR/drift-sidecar/events.sock` or `./`."""
    mode: int | str = 0o660
    """Socket file permissions; owner and group only, so only the pod's containers may write."""
    max_line_bytes: int = 1_048_576
    """Longer lines are skipped to the next newline and counted as `line_too_long`."""
    max_batch_events: int = 10_000
    """A JSON array with more events is rejected whole as `batch_too_large`."""
    max_features_per_event: int = 1_024
    """An event with more features is rejected as `too_many_features`."""
    max_connections: int = 64
    """Further connections are closed at once and counted as `too_many_connections`."""
    queue_max_bytes: int = 64 * 1_048_576
    """Bytes of framed, undecoded lines held between the reader and the processor; past it,
    readers pause (back-pressure reaches the client, which drops on its side)."""
    arrow_enabled: bool = True
    """Accept Arrow IPC streams (columnar frames, `sidecar.frames`) on the socket and on
    `POST /v1/events`. Off, a connection that starts with one is closed at once (the client
    notices and sends JSON instead) and counted as `refused`."""
    max_frame_bytes: int = 64 * 1_048_576
    """Largest Arrow IPC message (one record batch); a larger one closes its connection,
    counted as `too_large` in drift_sidecar_frame_errors_total."""


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The scrape and API endpoint."""

    host: str = "127.0.0.1"
    """Loopback by default: expose to Prometheus deliberately (0.0.0.0 in a pod)."""
    port: int = 9108
    ingest_enabled: bool = True
    """Accept `POST /v1/events`; switch off when only the socket should be trusted."""
    max_body_bytes: int = 8 * 1_048_576
    """Larger `POST /v1/events` bodies get 413 and are counted as `body_too_large`."""
    max_connections: int = 256
    """Open HTTP connections. Past it the oldest is closed (at once when idle, after its
    response when busy) to admit the new one, so idle clients cannot lock out probes and
    scrapes; with twice as many open, all busy, a new one is refused. Well under the usual
    1,024 file descriptors."""
    idle_timeout_s: float = 75.0
    """An HTTP connection with no request for this long is closed (keep-alive timeout); a
    new connection that sends nothing is closed after it too."""
    body_timeout_s: float = 30.0
    """A `POST /v1/events` body not received in full within this long gets 408."""
    max_inflight_body_bytes: int = 32 * 1_048_576
    """Bytes of `POST /v1/events` bodies being received at once, all requests together;
    past it a request gets 503 (and Retry-After) instead of holding more memory."""


class LimitsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Bounds on what events can turn into label values."""

    max_label_bytes: int = 128
    """Longest label value taken from an event, in UTF-8 bytes. A longer model name is
    rejected (`label_too_long`); a longer version, class or category value is counted
    under `__other__`; a longer feature name is never auto-registered (it stays an unknown
    feature). Configured names must fit too. Without it, one 400 KB model name makes every
    scrape hundreds of megabytes."""
    max_stages: int = 16
    """Stage names (`stages` of events) kept per model as `stage` label values when the
    model lists no `stages:`; later names are counted under `__other__`."""


class DriftSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Drift check parameters; `drift:` at the top level, overridable per model."""

    interval_s: float = 30.0
    """Seconds between checks; a check of 100 features over 10k events takes tens of ms."""
    window_size: int = 10_000
    """Events kept per model; 10k detects a 0.1-sigma mean shift with KS."""
    max_age_s: float | None = None
    """Optionally also drop events older than this many seconds."""
    min_samples: int = 500
    """Below this many window events a check reports insufficient data, never noise."""
    psi_bins: int = 10
    """Quantile bins taken from the baseline for PSI and the fleet-wide bin counters."""
    psi_threshold: float = 0.2
    """PSI above this marks a drifted feature's change as large (`detected_by: psi`); PSI is
    an effect size and never alarms on its own (docs/statistics.md)."""
    p_value: float = 0.05
    """Per-check significance shown in `/v1/drift` (`significant`); not the alarm's level."""
    correction: Correction = "bonferroni"
    """How a check's tests share its part of the false-alarm rate: bonferroni | bh | none."""
    false_alarm_rate: float = 0.05
    """The verdicts (`ml_feature_drift_detected`, `ml_prediction_drift_detected`) raise a
    false alarm for a model in at most this share of periods, over every check made."""
    false_alarm_period_s: float = 86_400.0
    """The period `false_alarm_rate` is about: a day by default."""
    max_categories: int = 50
    """Categories kept per categorical feature (most frequent in the baseline); the rest pool
    into `__other__`. Bounds label cardinality of the per-bin counters."""


class DriftOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A model's own `drift:`; unset keys inherit the top-level `drift:`."""

    interval_s: float | None = None
    window_size: int | None = None
    max_age_s: float | None = None
    min_samples: int | None = None
    psi_bins: int | None = None
    psi_threshold: float | None = None
    p_value: float | None = None
    correction: Correction | None = None
    false_alarm_rate: float | None = None
    false_alarm_period_s: float | None = None
    max_categories: int | None = None


class BaselineSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a model's reference data comes from: a parquet file, or the first N live events."""

    path: str | None = None
    capture: int | None = None


class FeatureSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    type: FeatureType = "numeric"
    buckets: list[float] | None = None
    """`ml_feature_value` histogram buckets; default 0, 0.1 .. 1 as the monitoring guide."""


class PredictionSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    type: FeatureType = "numeric"


class EmbeddingSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`models[].embedding`: drift of the events' `embedding` vectors (docs/statistics.md)."""

    dim: int
    """Length of every event's `embedding`; other lengths are rejected (`embedding_dim`)."""
    device: Literal["auto", "numpy", "cpu", "cuda"] = "auto"
    """auto: torch on CUDA when a GPU is visible, torch on the CPU otherwise, numpy without
    torch; cpu and cuda need torch; numpy never uses it."""
    features: int = 1024
    """Random Fourier features D: a check costs O(window * dim * D), the reference D^2."""
    max_device_mb: int = 256
    """Memory one pass may take on the device (a GPU shared with the model server)."""
    bandwidth_rows: int = 1000
    """Reference rows sampled for the median-heuristic bandwidth."""
    seed: int = 0
    """Seeds the random features (and the bandwidth sample): same seed, same test."""


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    version: str = ""
    baseline: BaselineSpec = msgspec.field(default_factory=BaselineSpec)
    features: list[FeatureSpec] = msgspec.field(default_factory=list)
    prediction: PredictionSpec | None = None
    drift: DriftOverride | None = None
    max_classes: int = 50
    """Distinct `predicted_class` label values kept; the rest are counted as `__other__`."""
    embedding: EmbeddingSpec | None = None
    task: Literal["classification", "regression"] | None = None
    """How labels are scored; unset: classes when the prediction is categorical or a string,
    or the event has probabilities; otherwise the error of a number."""
    stages: list[str] | None = None
    """The stage names kept as `stage` label values (others count as `__other__`);
    unset: the first `limits.max_stages` names seen."""


class AutoRegisterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Models not in `models:`; on in the embedded defaults so the daemon works with no file."""

    enabled: bool = False
    max_models: int = 8
    """Hard cap on auto-registered models: label cardinality stays bounded."""
    max_features: int = 64
    """Features taken from a new model's first event; later unknown ones are counted."""
    capture: int = 1_000
    """Live events captured as an auto-registered model's baseline."""


class GpuSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: Literal["auto"] | bool = "auto"
    """auto: use NVML when a driver and GPU are there; true: refuse to start without one."""
    interval_s: float = 5.0
    model_pids: dict[str, list[int]] = msgspec.field(default_factory=dict)
    """Process IDs per model, for NVML's per-process memory (`ml_model_memory_bytes`)."""
    visible_process_model: str | None = None
    """Attribute GPU processes visible in this PID namespace to this model (shared PID
    namespace pods); a model server's own report still wins while fresh."""


class StateSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    snapshot_interval_s: float = 60.0
    """Windows are snapshotted this often and at SIGTERM; a kill -9 loses at most this much."""


class ReloadSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    watch: bool = False
    """Also reload when the config file changes (as SIGHUP does); off, since a half-written
    file would be refused anyway but logs a failure."""
    interval_s: float = 5.0
    """How often the file is looked at when `watch` is on."""


class LabelSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Predictions waiting for their label (docs/metrics.md, "Labels and performance")."""

    enabled: bool = True
    """Keep predictions that carry an `id` until their label joins them."""
    ttl_s: float = 1_209_600.0
    """How long a prediction waits for its label: 14 days, as chargebacks take weeks."""
    max_pending: int = 1_000_000
    """Predictions waiting at most; past it the oldest is dropped (counted). 32 to 45 bytes
    each (sidecar.label_store), so the default bounds the store at about 45 MB."""


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    socket: SocketSettings = msgspec.field(default_factory=SocketSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)
    state_dir: str | None = None
    """Windows and captured baselines survive restarts here; None means `./.state`."""
    drift: DriftSettings = msgspec.field(default_factory=DriftSettings)
    models: list[ModelSpec] = msgspec.field(default_factory=list)
    auto_register: AutoRegisterSettings = msgspec.field(default_factory=AutoRegisterSettings)
    gpu: GpuSettings = msgspec.field(default_factory=GpuSettings)
    state: StateSettings = msgspec.field(default_factory=StateSettings)
    reload: ReloadSettings = msgspec.field(default_factory=ReloadSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    labels: LabelSettings = msgspec.field(default_factory=LabelSettings)
    source: str | None = None
    """The file this was loaded from (set by the loader; not a YAML key users set)."""

    def model(self, name: str) -> ModelSpec | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    def drift_for(self, model: ModelSpec) -> DriftSettings:
        """The model's effective drift settings: its own overrides on top of the defaults."""
        if model.drift is None:
            return self.drift
        changes = {
            f: getattr(model.drift, f)
            for f in model.drift.__struct_fields__
            if getattr(model.drift, f) is not None
        }
        return msgspec.structs.replace(self.drift, **changes)

    @property
    def socket_path(self) -> str:
        if self.socket.path:
            return str(self.resolve(self.socket.path))
        return default_socket_path()

    @property
    def socket_mode(self) -> int:
        mode = self.socket.mode
        return mode if isinstance(mode, int) else int(mode.lower().removeprefix("0o"), 8)

    @property
    def state_path(self) -> Path:
        if self.state_dir:
            base = Path(self.state_dir)
            if self.source and not base.is_absolute():
                return Path(self.source).parent / base
            return base
        return Path.cwd() / ".state"

    def resolve(self, path: str) -> Path:
        """A path from the file, taken relative to the file's folder (as users expect); the
        one rule for every path key (`socket.path`, `state_dir`, `baseline.path`). Without a
        file, relative to the working directory."""
        p = Path(path)
        if self.source and not p.is_absolute():
            return Path(self.source).parent / p
        return p


def embedded_defaults() -> Config:
    """What `drift-sidecar run` uses with no file: capture baselines from live traffic."""
    return Config(auto_register=AutoRegisterSettings(enabled=True))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, check and freeze a YAML file; raise ConfigError listing every bad key path."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror or exc}"], source) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from exc
    return parse_config(raw if raw is not None else {}, source)


def parse_config(raw: Any, source: str = "<config>") -> Config:
    if not isinstance(raw, Mapping):
        raise ConfigError([f"$: expected a mapping at the top level, got {_kind(raw)}"], source)
    raw = {k: v for k, v in raw.items() if k != "source"}
    problems = _check(raw, Config, "")
    if not problems:
        try:
            config = msgspec.convert(raw, Config, strict=False)
        except msgspec.ValidationError as exc:  # anything the walk did not foresee
            problems = [str(exc)]
        else:
            problems = _semantic_problems(config)
            if not problems:
                return msgspec.structs.replace(config, source=source)
    raise ConfigError(problems, source)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(value: Any, tp: Any, path: str) -> list[str]:
    """Walk the raw YAML against the settings types and collect every problem, not the first."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if not isinstance(value, Mapping):
            return [f"{path or '$'}: expected a mapping, got {_kind(value)}"]
        hints = get_type_hints(tp)
        fields = {f.name: f for f in msgspec.structs.fields(tp)}
        problems = []
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else str(key)
            if key not in fields:
                problems.append(f"{sub_path}: unknown key")
                continue
            problems.extend(_check(sub, hints[key], sub_path))
        for name, f in fields.items():
            required = f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
            if required and name not in value:
                problems.append(f"{path + '.' if path else ''}{name}: required key is missing")
        return problems
    origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {_kind(value)}"]
        (item_tp,) = get_args(tp)
        out: list[str] = []
        for i, item in enumerate(value):
            out.extend(_check(item, item_tp, f"{path}[{i}]"))
        return out
    args = get_args(tp)
    struct_args = [a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct)]
    if struct_args and isinstance(value, Mapping):
        return _check(value, struct_args[0], path)
    if value is None and type(None) in args:
        return []
    try:
        msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc).split(" - at ")[0]
        return [f"{path}: {msg}" + ("" if repr(value) in msg else f", got {value!r}")]
    return []


def _semantic_problems(cfg: Config) -> list[str]:
    """Checks types cannot express: ranges, uniqueness, and exactly one baseline source."""
    p: list[str] = []
    if not 1 <= cfg.http.port <= 65535:
        p.append(f"http.port: must be 1..65535, got {cfg.http.port}")
    try:
        mode = cfg.socket_mode
        if not 0 <= mode <= 0o777:
            p.append(f"socket.mode: must be a permission mode like 0o660, got {cfg.socket.mode!r}")
    except ValueError:
        p.append(f"socket.mode: not an octal mode, got {cfg.socket.mode!r}")
    for key in (
        "max_line_bytes",
        "max_batch_events",
        "max_features_per_event",
        "max_connections",
        "queue_max_bytes",
        "max_frame_bytes",
    ):
        if getattr(cfg.socket, key) < 1:
            p.append(f"socket.{key}: must be at least 1")
    for key in ("max_body_bytes", "max_connections", "max_inflight_body_bytes"):
        if getattr(cfg.http, key) < 1:
            p.append(f"http.{key}: must be at least 1")
    for key in ("idle_timeout_s", "body_timeout_s"):
        if not getattr(cfg.http, key) > 0:
            p.append(f"http.{key}: must be > 0")
    if cfg.http.max_inflight_body_bytes < cfg.http.max_body_bytes:
        p.append(
            f"http.max_inflight_body_bytes: {cfg.http.max_inflight_body_bytes} is less "
            f"than http.max_body_bytes {cfg.http.max_body_bytes}: a body of the largest "
            "allowed size could never be received"
        )
    label_limit = cfg.limits.max_label_bytes
    if label_limit < len(b"__other__"):
        p.append(f"limits.max_label_bytes: must be at least {len(b'__other__')}")
    if cfg.limits.max_stages < 0:
        p.append("limits.max_stages: must be at least 0")
    if not cfg.models and not cfg.auto_register.enabled:
        p.append(
            "models: no model is configured and auto_register.enabled is false, so "
            "every event would be refused; list a model or turn auto-registration on"
        )
    p.extend(_drift_problems(cfg.drift, "drift"))
    if cfg.gpu.interval_s <= 0:
        p.append("gpu.interval_s: must be > 0")
    names = {m.name for m in cfg.models}
    for model in cfg.gpu.model_pids:
        if model not in names:
            p.append(f"gpu.model_pids.{model}: not a configured model")
    vpm = cfg.gpu.visible_process_model
    if vpm is not None and vpm not in names:
        p.append(f"gpu.visible_process_model: {vpm!r} is not a configured model")
    if cfg.reload.interval_s <= 0:
        p.append("reload.interval_s: must be > 0")
    if not 0 < cfg.labels.ttl_s < math.inf:
        p.append("labels.ttl_s: must be a number of seconds > 0")
    if not 1 <= cfg.labels.max_pending <= 1 << 30:
        p.append("labels.max_pending: must be 1..1073741824")
    if cfg.state.snapshot_interval_s <= 0:
        p.append("state.snapshot_interval_s: must be > 0")
    if cfg.auto_register.max_models < 0 or cfg.auto_register.max_features < 1:
        p.append("auto_register: max_models must be >= 0 and max_features >= 1")
    if cfg.auto_register.capture < 1:
        p.append("auto_register.capture: must be at least 1")
    seen: set[str] = set()
    for i, m in enumerate(cfg.models):
        at = f"models[{i}]"
        if not _NAME_RE.match(m.name):
            p.append(f"{at}.name: {m.name!r} is not a valid model name")
        p.extend(_label_problems(m.name, f"{at}.name", label_limit))
        p.extend(_label_problems(m.version, f"{at}.version", label_limit))
        if m.name in seen:
            p.append(f"{at}.name: duplicate model {m.name!r}")
        seen.add(m.name)
        if (m.baseline.path is None) == (m.baseline.capture is None):
            p.append(f"{at}.baseline: set exactly one of `path` or `capture`")
        if m.baseline.capture is not None and m.baseline.capture < 1:
            p.append(f"{at}.baseline.capture: must be at least 1")
        if m.max_classes < 1:
            p.append(f"{at}.max_classes: must be at least 1")
        seen_features: set[str] = set()
        for j, f in enumerate(m.features):
            if f.name in seen_features:
                p.append(f"{at}.features[{j}].name: duplicate feature {f.name!r}")
            if f.name in RESERVED_FEATURE_NAMES:
                p.append(f"{at}.features[{j}].name: {f.name!r} is reserved")
            p.extend(_label_problems(f.name, f"{at}.features[{j}].name", label_limit))
            seen_features.add(f.name)
            if f.buckets is not None and (
                not f.buckets or any(b >= c for b, c in zip(f.buckets, f.buckets[1:], strict=False))
            ):
                p.append(f"{at}.features[{j}].buckets: must be a non-empty increasing list")
        if m.drift is not None:
            p.extend(_drift_problems(cfg.drift_for(m), f"{at}.drift"))
        if m.embedding is not None:
            p.extend(_embedding_problems(m.embedding, f"{at}.embedding"))
        p.extend(_stage_problems(m.stages, f"{at}.stages", label_limit))
    return p


def _stage_problems(names: list[str] | None, at: str, limit: int) -> list[str]:
    p: list[str] = []
    for j, name in enumerate(names or []):
        if not name or name == "__other__" or name in (names or [])[:j]:
            p.append(f"{at}[{j}]: {name!r} is empty, duplicate or reserved (__other__)")
        p.extend(_label_problems(name, f"{at}[{j}]", limit))
    return p


def _embedding_problems(e: EmbeddingSpec, at: str) -> list[str]:
    p = []
    if not 1 <= e.dim <= 65_536:
        p.append(f"{at}.dim: must be 1..65536, got {e.dim}")
    if not 16 <= e.features <= 16_384:
        p.append(f"{at}.features: must be 16..16384, got {e.features}")
    if e.max_device_mb < 16:
        p.append(f"{at}.max_device_mb: must be at least 16")
    if e.bandwidth_rows < 10:
        p.append(f"{at}.bandwidth_rows: must be at least 10")
    if e.device in ("cpu", "cuda") and importlib.util.find_spec("torch") is None:
        p.append(
            f"{at}.device: {e.device!r} needs torch, which is not installed "
            "(install torch, or use `auto` or `numpy`)"
        )
    return p


def label_fits(value: str, limit: int) -> bool:
    """Whether `value` is valid UTF-8 of at most `limit` bytes (limits.max_label_bytes)."""
    if len(value) * 4 <= limit and value.isascii():
        return True  # the common case, without encoding
    try:
        return len(value.encode()) <= limit
    except UnicodeEncodeError:
        return False


def _label_problems(value: str, at: str, limit: int) -> list[str]:
    """A configured name becomes a label value: valid UTF-8, within limits.max_label_bytes."""
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return [f"{at}: {value[:40]!r} is not valid UTF-8 (a lone surrogate)"]
    if size > limit:
        return [f"{at}: {size} bytes, longer than limits.max_label_bytes ({limit})"]
    return []


def _drift_problems(d: DriftSettings, at: str) -> list[str]:
    p = []
    if d.interval_s <= 0:
        p.append(f"{at}.interval_s: must be > 0")
    if d.window_size < 1:
        p.append(f"{at}.window_size: must be at least 1")
    if d.max_age_s is not None and d.max_age_s <= 0:
        p.append(f"{at}.max_age_s: must be > 0 or null")
    if d.min_samples < 1:
        p.append(f"{at}.min_samples: must be at least 1")
    if d.min_samples > d.window_size:
        p.append(f"{at}.min_samples: {d.min_samples} exceeds window_size {d.window_size}")
    if not 2 <= d.psi_bins <= 100:
        p.append(f"{at}.psi_bins: must be 2..100")
    if d.psi_threshold <= 0:
        p.append(f"{at}.psi_threshold: must be > 0")
    if not 0 < d.p_value < 1:
        p.append(f"{at}.p_value: must be in (0, 1)")
    if not 0 < d.false_alarm_rate < 1:
        p.append(f"{at}.false_alarm_rate: must be in (0, 1), got {d.false_alarm_rate}")
    if not 0 < d.false_alarm_period_s < math.inf:
        p.append(f"{at}.false_alarm_period_s: must be > 0 and finite, got {d.false_alarm_period_s}")
    if d.max_categories < 1:
        p.append(f"{at}.max_categories: must be at least 1")
    return p
