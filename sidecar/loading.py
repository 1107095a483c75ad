"""Loading a config's baselines: the files it names and those captured in the state folder."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import structlog

from sidecar.baseline import load_baseline
from sidecar.config import Config, ModelSpec
from sidecar.errors import BaselineError
from sidecar.labels_io import baseline_performance
from sidecar.state import StateStore
from sidecar.statefiles import legacy_name, load_captured_baseline
from sidecar.stats.reference import Baseline, CategoricalReference
from sidecar.tracker import embedding_options

log = structlog.get_logger("sidecar.daemon")


def load_baselines(
    config: Config, *, captured: bool = True, keep_captured: bool = False
) -> dict[str, Baseline]:
    """Every file baseline of the config, and (with `captured`) the captured ones already
    in the state folder. A file baseline that fails raises BaselineError; a captured one
    that fails is set aside and captured again (see `captured_baseline`), or with
    `keep_captured` (a reload, which may still be refused) left where it is."""
    out: dict[str, Baseline] = {}
    store = StateStore(config.state_path)
    for spec in config.models:
        if spec.baseline.path is None:
            b = captured_baseline(config, spec, store, keep=keep_captured) if captured else None
            if b is not None:
                out[spec.name] = b
            continue
        path = config.resolve(spec.baseline.path)
        if not path.exists():
            raise BaselineError(f"baseline file {path} for model {spec.name!r} does not exist")
        out[spec.name] = _loader(config, spec, path)(None)
        perf = baseline_performance(path)
        if perf is not None:
            out[spec.name] = dataclasses.replace(out[spec.name], performance=perf)
        if spec.prediction is not None and out[spec.name].prediction is None:
            log.warning(
                "prediction_drift_off",
                model=spec.name,
                baseline=str(path),
                reason="the baseline has no `prediction` column",
            )
    for baseline in out.values():
        warn_overflowed(baseline)
    return out


def warn_overflowed(baseline: Baseline) -> None:
    """Say which categorical columns have more categories than the tests count one by one
    (4 x max_categories): their remaining categories are compared only as a pool chosen by
    the baseline's own counts, which can raise false alarms (docs/statistics.md)."""
    refs = [*baseline.categorical]
    if isinstance(baseline.prediction, CategoricalReference):
        refs.append(baseline.prediction)
    for ref in refs:
        if ref.overflowed:
            log.warning(
                "categorical_reference_overflowed",
                model=baseline.model,
                column=ref.name,
                counted=len(ref.categories) + len(ref.tail),
                pooled_values=ref.residual,
                advice="raise drift.max_categories, or treat the column as high-cardinality",
            )


def captured_baseline(
    config: Config, spec: ModelSpec, store: StateStore, *, keep: bool = False
) -> Baseline | None:
    """The model's captured baseline from the state folder, or None. Never raises: the
    state folder is the sidecar's own, so a file that does not load is set aside (left in
    place with `keep`) and the baseline captured again, instead of keeping the daemon
    from starting."""
    path = store.captured_baseline_path(spec.name)
    legacy = path.with_name(f"{legacy_name(spec.name)}.parquet")
    use_legacy = not os.path.lexists(path) and legacy != path and os.path.lexists(legacy)
    target = legacy if use_legacy else path
    rows = spec.baseline.capture or config.auto_register.capture
    emb_columns = spec.embedding.dim if spec.embedding is not None else 0
    b = load_captured_baseline(
        target,
        spec.name,
        _loader(config, spec, target),
        max_rows=rows,
        columns=len(spec.features) + 1 + emb_columns,
        legacy=use_legacy,
        keep=keep,
    )
    return dataclasses.replace(b, source="capture") if b is not None else None


def _loader(config: Config, spec: ModelSpec, path: Path) -> Callable[[bytes | None], Baseline]:
    """Loads `spec`'s baseline at `path`, from the bytes given or (None) from the file."""
    d = config.drift_for(spec)

    def load(data: bytes | None) -> Baseline:
        return load_baseline(
            path,
            spec.name,
            numeric_names=[f.name for f in spec.features if f.type == "numeric"],
            categorical_names=[f.name for f in spec.features if f.type == "categorical"],
            prediction_kind=spec.prediction.type if spec.prediction else None,
            psi_bins=d.psi_bins,
            max_categories=d.max_categories,
            data=data,
            embedding=embedding_options(spec.embedding) if spec.embedding else None,
        )

    return load
